"""hash_value: equal content hashes equal, anything observably different hashes apart.

A false "equal" serves another call's result (the worst bug a cache can have); a false
"different" only costs a recomputation. So most tests are pairs that must differ, plus
rebuilt-from-scratch values that must not, plus digests pinned across processes.
"""

from __future__ import annotations

import array
import collections
import copy
import dataclasses
import datetime
import decimal
import enum
import fractions
import functools
import json
import math
import os
import pathlib
import re
import socket
import subprocess
import sys
import textwrap
import threading
import types
import uuid
from typing import Any

import numpy as np
import pandas as pd
import pytest

from funcache_ipy.hashing import UnhashableError, hash_value, is_immutable

# -- helpers and sample types (module level, so they have stable qualnames)


class IntSub(int):
    pass


class StrSub(str):
    pass


class Color(enum.Enum):
    RED = 1
    GREEN = 2


class Perm(enum.Flag):
    R = 4
    W = 2


Pair = collections.namedtuple("Pair", "x y")
OtherPair = collections.namedtuple("OtherPair", "x y")


@dataclasses.dataclass
class Point:
    x: int
    y: list[int]


@dataclasses.dataclass
class OtherPoint:
    x: int
    y: list[int]


@dataclasses.dataclass
class Config:
    lr: float

    def __post_init__(self) -> None:
        self.schedule = [self.lr] * 3


@dataclasses.dataclass
class Lazy:
    x: int
    total: int = dataclasses.field(init=False)


class SlotBase:
    __slots__ = ("__mode",)


@dataclasses.dataclass(slots=True)
class SlottedPoint(SlotBase):
    x: int


class PairWithNote(Pair):
    """A namedtuple subclass: it has a __dict__, so it can carry attributes."""


class Plain:
    def __init__(self, **attrs: Any) -> None:
        self.__dict__.update(attrs)


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self, a: Any, b: Any) -> None:
        self.a, self.b = a, b


class NoPickle(Plain):
    """Refuses pickling, as some classes do; still has plain content."""

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("no pickling")

    def __deepcopy__(self, memo: dict[int, Any]) -> NoPickle:
        return NoPickle(**copy.deepcopy(self.__dict__, memo))


def double(x: int) -> int:
    return 2 * x


def triple(x: int) -> int:
    return 3 * x


def self_list() -> list[Any]:
    cycle: list[Any] = [1, "a"]
    cycle.append(cycle)
    return cycle


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {"n": [1, 2, 3], "f": [0.5, 1.5, 2.5], "s": ["a", "b", "c"]},
        index=pd.Index([10, 20, 30], name="id"),
    )


def h(value: Any) -> str:
    return hash_value(value).hex()


# -- type tags: every pair differs


MUST_DIFFER: dict[str, tuple[Any, Any]] = {
    "int vs float": (1, 1.0),
    "regex pattern": (re.compile("a+"), re.compile("a*")),
    "regex flags": (re.compile("a"), re.compile("a", re.I)),
    "mappingproxy vs dict": (types.MappingProxyType({"a": 1}), {"a": 1}),
    "int vs bool": (1, True),
    "0 vs False": (0, False),
    "int vs str": (1, "1"),
    "str vs bytes": ("1", b"1"),
    "bytes vs bytearray": (b"1", bytearray(b"1")),
    "empty str vs bytes": ("", b""),
    "None vs 0": (None, 0),
    "0.0 vs -0.0": (0.0, -0.0),
    "float vs complex": (1.0, 1 + 0j),
    "big ints": (2**64, 2**64 + 1),
    "big vs small int": (-(2**63), -(2**63) - 1),
    "int subclass": (IntSub(1), 1),
    "str subclass": (StrSub("a"), "a"),
    "tuple vs list": ((1, 2), [1, 2]),
    "empty tuple vs list": ((), []),
    "set vs frozenset": ({1}, frozenset({1})),
    "string split": (("ab", "c"), ("a", "bc")),
    "nesting": ([[1], 2], [[1, 2]]),
    "dict vs pairs": ({"a": 1}, [("a", 1)]),
    "dict order": ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
    "range vs tuple": (range(3), (0, 1, 2)),
    "slice vs tuple": (slice(1, 2), (1, 2, None)),
    "Decimal exponent": (decimal.Decimal("1.0"), decimal.Decimal("1")),
    "Fraction vs float": (fractions.Fraction(1, 2), 0.5),
    "Path vs str": (pathlib.Path("a"), "a"),
    "pure vs concrete path": (pathlib.PurePosixPath("a"), pathlib.PosixPath("a")),
    "date vs datetime": (datetime.date(2020, 1, 1), datetime.datetime(2020, 1, 1)),
    "naive vs aware": (
        datetime.datetime(2020, 1, 1),
        datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
    ),
    "fold": (datetime.datetime(2020, 1, 1, fold=0), datetime.datetime(2020, 1, 1, fold=1)),
    "uuid": (uuid.UUID(int=1), uuid.UUID(int=2)),
    "enum vs value": (Color.RED, 1),
    "enum members": (Color.RED, Color.GREEN),
    "flags": (Perm.R | Perm.W, Perm.R),
    "namedtuple vs tuple": (Pair(1, 2), (1, 2)),
    "namedtuple types": (Pair(1, 2), OtherPair(1, 2)),
    "dataclass types": (Point(1, [2]), OtherPoint(1, [2])),
    "dataclass field": (Point(1, [2]), Point(1, [3])),
    "object attribute": (Plain(a=1), Plain(a=2)),
    "slots": (Slotted(1, 2), Slotted(1, 3)),
    "partial args": (functools.partial(double, 1), functools.partial(double, 2)),
    "partial func": (functools.partial(double, 1), functools.partial(triple, 1)),
    "functions": (double, triple),
    "classes": (Point, OtherPoint),
    "bound builtins": ([1].append, [2].append),
    "OrderedDict vs dict": (collections.OrderedDict(a=1), {"a": 1}),
    "defaultdict factory": (
        collections.defaultdict(list, a=[1]),
        collections.defaultdict(set, a=[1]),
    ),
    "deque maxlen": (collections.deque([1], maxlen=2), collections.deque([1], maxlen=3)),
    "deque content": (collections.deque([1, 2]), collections.deque([1, 3])),
    "deque vs list": (collections.deque([1, 2]), [1, 2]),
    "OrderedDict order": (collections.OrderedDict(a=1, b=2), collections.OrderedDict(b=2, a=1)),
    "defaultdict content": (
        collections.defaultdict(list, a=[1]),
        collections.defaultdict(list, a=[2]),
    ),
    "defaultdict vs dict": (collections.defaultdict(list, a=[1]), {"a": [1]}),
    "ChainMap content": (
        collections.ChainMap({"a": 1}, {"b": 2}),
        collections.ChainMap({"a": 1}, {"b": 3}),
    ),
    "ChainMap split": (
        collections.ChainMap({"a": 1}, {"b": 2}),
        collections.ChainMap({"a": 1, "b": 2}),
    ),
    "array content": (array.array("d", [1.0, 2.0]), array.array("d", [1.0, 3.0])),
    "array typecode": (array.array("d", [1.0, 2.0]), array.array("f", [1.0, 2.0])),
    "array vs list": (array.array("q", [1, 2]), [1, 2]),
    "namespace content": (types.SimpleNamespace(a=1, b=[2]), types.SimpleNamespace(a=1, b=[3])),
    "namespace vs object": (types.SimpleNamespace(x=1), Plain(x=1)),
    "dict keys vs list": ({"a": 1, "b": 2}.keys(), ["a", "b"]),
    "dict keys order": ({"a": 1, "b": 2}.keys(), {"b": 2, "a": 1}.keys()),
    "dict keys vs values": ({"a": "a"}.keys(), {"a": "a"}.values()),
    "dict values": ({"a": 1}.values(), {"a": 2}.values()),
    "dict values vs list": ({"a": 1}.values(), [1]),
    "dict items": ({"a": 1}.items(), {"a": 2}.items()),
    "dict items vs list": ({"a": 1}.items(), [("a", 1)]),
    "dict items vs dict": ({"a": 1}.items(), {"a": 1}),
    "odict vs dict keys": (collections.OrderedDict(a=1).keys(), {"a": 1}.keys()),
    "numpy scalar vs float": (np.float64(1.0), 1.0),
    "numpy scalar dtypes": (np.int64(1), np.int32(1)),
    "0-d array vs scalar": (np.array(1.0), np.float64(1.0)),
    "cycle vs flat": (self_list(), [1, "a", [1, "a"]]),
}


@pytest.mark.parametrize(("a", "b"), MUST_DIFFER.values(), ids=MUST_DIFFER.keys())
def test_observably_different_values_differ(a: Any, b: Any) -> None:
    assert h(a) != h(b)


def test_all_sample_digests_distinct() -> None:
    values = [v for pair in MUST_DIFFER.values() for v in pair]
    digests = {}
    for value in values:
        digests.setdefault(h(value), []).append(value)
    # Some pairs share a member (e.g. 1); only truly equal values may share a digest.
    clashes = [vs for vs in digests.values() if len({repr(v) for v in vs}) > 1]
    assert not clashes


def test_digest_is_16_bytes() -> None:
    assert len(hash_value("x")) == 16
    assert len(hash_value([{"x": np.arange(3)}])) == 16


# -- same content, different identity: equal


BUILDERS: dict[str, Any] = {
    "nested containers": lambda: [1, [2.5, None], {"a": (4, b"5")}, {"s", "t"}],
    "set of strings": lambda: {f"item{i}" for i in range(50)},
    "frozenset nest": lambda: frozenset({frozenset({"a", "b"}), frozenset({"c"})}),
    "dict with sets": lambda: {"k": {1, 2, 3}, "j": frozenset("xyz")},
    "stdlib values": lambda: (
        decimal.Decimal("3.14"),
        fractions.Fraction(2, 3),
        datetime.datetime(2021, 5, 6, 7, 8, tzinfo=datetime.timezone.utc),
        datetime.timedelta(days=2),
        uuid.UUID(int=7),
        pathlib.Path("/tmp/x"),
        3 + 4j,
        range(2, 9, 3),
        slice(None, 5),
    ),
    "dataclass": lambda: Point(1, [2, 3]),
    "plain object": lambda: Plain(a=[1], b={"c": 2}),
    "slotted object": lambda: Slotted("a", (1, 2)),
    "refuses pickling": lambda: NoPickle(a=1),
    "partial": lambda: functools.partial(double, 1, key="v"),
    "cycle": self_list,
    "numpy": lambda: np.arange(12.0).reshape(3, 4),
    "numpy object": lambda: np.array([1, "1", None], dtype=object),
    "frame": frame,
    "counter": lambda: collections.Counter("hello"),
    "OrderedDict": lambda: collections.OrderedDict(z=[1], a={"b": 2}),
    "defaultdict": lambda: collections.defaultdict(list, a=[1, 2], b=[]),
    "ChainMap": lambda: collections.ChainMap({"a": [1]}, {"b": 2}),
    "deque": lambda: collections.deque([1, [2], "x"], maxlen=5),
    "array": lambda: array.array("d", [1.5, -0.0, math.nan]),
    "SimpleNamespace": lambda: types.SimpleNamespace(a=[1], b={"c": 2}),
    "dataclass with post-init state": lambda: Config(0.5),
    "slotted dataclass": lambda: SlottedPoint(1),
    "regex": lambda: re.compile(r"\d+", re.I),
}


@pytest.mark.parametrize("build", BUILDERS.values(), ids=BUILDERS.keys())
def test_equal_content_hashes_equal(build: Any) -> None:
    first, second = build(), build()
    assert h(first) == h(second)
    assert h(first) == h(copy.deepcopy(first))


def test_memoryview_hashes_content() -> None:
    data = bytearray(b"abcdef")
    assert h(memoryview(data)[::2]) == h(memoryview(b"ace"))
    assert h(memoryview(data)) != h(memoryview(data).cast("H"))
    assert h(memoryview(data)) != h(bytes(data))


def test_shared_reference_differs_from_copies() -> None:
    # Aliasing is observable (part.append(3) shows through both slots), so it is content.
    part = [1, 2]
    assert h([part, part]) != h([part, list(part)])
    assert h([part, part]) == h([[1, 2]] * 2)
    assert h([part, part]) == h(copy.deepcopy([part, part]))  # deepcopy keeps aliasing


def test_sharing_by_interning_is_not_aliasing() -> None:
    # Instances share their class, OrderedDicts their empty reduce args, enum members and
    # () are singletons: none of it is the user's aliasing, so the digest predates the memo.
    value = [Plain(a=1), Plain(a=2), collections.OrderedDict(a=1), collections.OrderedDict(b=2)]
    value += [Color.RED, Color.RED, (), ()]
    assert h(value) == "60e2c81b0e57667cc6df9b022a87423d"


class Node:
    def __init__(self, a: Any, b: Any) -> None:
        self.a, self.b = a, b


def _shared_chain(depth: int, leaf: Any = None) -> Node:
    node = Node(leaf, None)
    for _ in range(depth):
        node = Node(node, node)
    return node


def test_shared_references_are_hashed_once() -> None:
    # Re-walking each shared node took 2**depth steps (seconds at depth 18).
    assert h(_shared_chain(18)) == h(_shared_chain(18))
    assert h(_shared_chain(18)) != h(_shared_chain(18, leaf=1))
    assert h(_shared_chain(18)) != h(_shared_chain(17))


class Ranked(Plain):
    """Hashes (as a set member) by ``rank``, which is not part of its state."""

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "rank"}

    def __hash__(self) -> int:
        return int(self.rank)


def test_set_members_sharing_a_value_hash_in_any_order() -> None:
    # Set iteration order follows hash(); member digests must not depend on it.
    def build(first_rank: int, second_rank: int) -> tuple[Any, ...]:
        shared = [1]
        members = {Ranked(v=shared, n=1, rank=first_rank), Ranked(v=shared, n=2, rank=second_rank)}
        return (members, shared)

    assert h(build(1, 2)) == h(build(2, 1))


def test_attribute_assignment_order_is_ignored() -> None:
    # Instance __dict__ order is an accident of __init__, unlike a dict the user builds.
    assert h(Plain(a=1, b=2)) == h(Plain(b=2, a=1))


def test_partial_keyword_order_is_ignored() -> None:
    assert h(functools.partial(double, a=1, b=2)) == h(functools.partial(double, b=2, a=1))


def test_refusing_pickling_still_hashes_state() -> None:
    assert h(NoPickle(a=1)) != h(NoPickle(a=2))


def test_set_order_independent() -> None:
    forward = set()
    for i in range(200):
        forward.add(f"s{i}")
    backward = {f"s{i}" for i in reversed(range(300))} - {f"s{i}" for i in range(200, 300)}
    assert h(forward) == h(backward)
    assert h({1, "a", (2, 3)}) == h({(2, 3), "a", 1})


# -- records: declared fields plus any other state


def test_dataclass_state_set_after_init_is_hashed() -> None:
    # A cached sum(cfg.schedule) served 3.0 after cfg.schedule[0] = 10.0 (stale) when
    # only the declared fields were hashed.
    cfg = Config(1.0)
    before = h(cfg)
    cfg.schedule[0] = 10.0
    assert h(cfg) != before, "schedule edit not seen: a cached sum would stay 3.0 (stale)"
    assert h(cfg) == h(copy.deepcopy(cfg))
    edited = h(cfg)
    cfg.later = "set after construction"
    assert h(cfg) != edited


def test_record_extra_attributes_sorted_and_distinct_from_fields() -> None:
    first, second = Config(1.0), Config(1.0)
    first.a, first.b = 1, 2
    second.b, second.a = 2, 1
    assert h(first) == h(second), "attribute assignment order is noise"
    bare = Point(1, [2])
    moved = Point(1, [2])
    moved.z = 3
    assert h(bare) != h(moved)


def test_unset_init_false_field_hashes() -> None:
    lazy = Lazy(1)
    before = h(lazy)
    lazy.total = 5
    assert h(lazy) != before
    assert h(Lazy(1)) == before


def test_slots_beyond_fields_are_hashed() -> None:
    point = SlottedPoint(1)
    assert h(point) == h(SlottedPoint(1))
    before = h(point)
    point._SlotBase__mode = "fast"  # type: ignore[attr-defined]
    assert h(point) != before
    assert h(point) == h(copy.copy(point))


def test_namedtuple_subclass_attributes_are_hashed() -> None:
    pair = PairWithNote(1, 2)
    before = h(pair)
    assert before != h(Pair(1, 2))
    pair.note = [1]
    assert h(pair) != before
    after = h(pair)
    pair.note[0] = 2
    assert h(pair) != after


def test_record_extra_attribute_failure_is_located() -> None:
    cfg = Config(1.0)
    cfg.guard = threading.Lock()
    with pytest.raises(UnhashableError, match=r"value\.guard of type lock"):
        hash_value(cfg)


# -- dict views and other stdlib containers


@pytest.mark.parametrize("mapping", [dict, collections.OrderedDict])
def test_dict_views_hash_by_content(mapping: Any) -> None:
    def views() -> list[Any]:
        data = mapping([("a", [1]), (2, "b")])
        return [data.keys(), data.values(), data.items()]

    assert [h(v) for v in views()] == [h(v) for v in views()]
    assert len({h(v) for v in views()}) == 3


def test_dict_views_follow_their_dict() -> None:
    data = {"a": [1], "b": 2}
    keys, values, items = data.keys(), data.values(), data.items()
    before = [h(keys), h(values), h(items)]
    data["a"][0] = 5
    assert h(keys) == before[0]
    assert h(values) != before[1]
    assert h(items) != before[2]
    data["c"] = 3
    assert h(keys) != before[0]


def test_dict_view_holding_itself_terminates() -> None:
    data: dict[str, Any] = {"a": 1}
    data["self"] = data.values()
    assert h(data) == h(data)
    assert h(data["self"]) != h(data)


def test_defaultdict_factory_goes_through_code_hasher() -> None:
    def factory() -> int:
        return 0

    hasher = RecordingHasher()
    hash_value(collections.defaultdict(factory, a=1), code_hasher=hasher)
    assert hasher.seen == [collections.defaultdict, factory]
    hasher = RecordingHasher()
    hash_value(collections.defaultdict(list, a=[1]), code_hasher=hasher)
    assert hasher.seen == [collections.defaultdict, list]


# -- floats


def test_nan_is_stable_and_signed_zero_differs() -> None:
    assert h(float("nan")) == h(math.nan) == h(np.nan)
    assert h([math.nan]) == h([float("nan")])
    assert h(0.0) != h(-0.0)
    assert h(math.inf) != h(-math.inf)
    assert h(np.array([np.nan, 1.0])) == h(np.array([np.nan, 1.0]))


# -- cycles


def test_cycles_terminate_and_are_deterministic() -> None:
    assert h(self_list()) == h(self_list())
    d: dict[str, Any] = {"x": 1}
    d["me"] = d
    assert h(d) == h(copy.deepcopy(d))
    a: list[Any] = [1]
    b: list[Any] = [a]
    a.append(b)
    assert h(a) != h(b)  # same cycle, different entry point
    obj = Plain(x=1)
    obj.me = obj
    assert h(obj) == h(copy.deepcopy(obj))
    s: set[Any] = set()
    holder = Plain(s=s)
    s.add(holder)
    assert len(hash_value(s)) == 16


def test_shared_cycles_terminate() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    value = [loop, loop, (loop,), Plain(x=loop)]
    assert h(value) == h(copy.deepcopy(value))
    assert h(value) != h([loop, copy.deepcopy(loop), (loop,), Plain(x=loop)])


def test_too_deep_nesting_raises_unhashable() -> None:
    deep: list[Any] = []
    for _ in range(sys.getrecursionlimit() * 2):
        deep = [deep]
    with pytest.raises(UnhashableError, match="recursion limit"):
        hash_value(deep)


# -- numpy


ARRAY = np.arange(24.0).reshape(4, 6)

ARRAY_CHANGES: dict[str, Any] = {
    "dtype": ARRAY.astype(np.float32),
    "int dtype": ARRAY.astype(np.int64),
    "shape": ARRAY.reshape(6, 4),
    "flattened": ARRAY.reshape(-1),
    "one element": np.where(np.arange(24).reshape(4, 6) == 17, -1.0, ARRAY),
    "byte order": ARRAY.astype(">f8"),
    "slice": ARRAY[:, ::2],
}


@pytest.mark.parametrize("changed", ARRAY_CHANGES.values(), ids=ARRAY_CHANGES.keys())
def test_array_changes_detected(changed: Any) -> None:
    assert h(ARRAY) != h(changed)


def test_array_in_place_edit_detected() -> None:
    arr = np.zeros(1000)
    before = h(arr)
    arr[500] = 1e-300
    assert h(arr) != before


VIEWS: dict[str, Any] = {
    "strided": np.arange(100.0)[::3],
    "2-d strided": np.arange(600.0).reshape(20, 30)[::2, 1::3],
    "transposed": np.arange(600).reshape(20, 30).T,
    "fortran": np.asfortranarray(np.arange(600.0).reshape(20, 30)),
    "reversed": np.arange(50)[::-1],
    "datetime": np.arange(10).astype("M8[s]")[::2],
    "0-d": np.array(3.5),
    "empty": np.zeros((0, 3)),
    "structured": np.zeros(4, dtype=[("a", "i4"), ("b", "f8")])[::2],
}


@pytest.mark.parametrize("view", VIEWS.values(), ids=VIEWS.keys())
def test_views_hash_by_content(view: Any) -> None:
    assert h(view) == h(view.copy()) == h(np.array(view, order="C"))


def test_large_non_contiguous_array_matches_copy() -> None:
    # Bigger than the copy block, so the blockwise path is exercised.
    big = np.arange(3_000_000, dtype=np.float64).reshape(1000, 3000)[:, ::2]
    assert h(big) == h(big.copy())


def test_structured_field_names_matter() -> None:
    a = np.zeros(3, dtype=[("a", "i4"), ("b", "f8")])
    b = np.zeros(3, dtype=[("c", "i4"), ("b", "f8")])
    assert h(a) != h(b)


def test_object_arrays_hash_elements_not_pointers() -> None:
    assert h(np.array([1, "1"], dtype=object)) != h(np.array(["1", "1"], dtype=object))
    assert h(np.array([1, 2], dtype=object)) != h(np.array([1.0, 2], dtype=object))
    assert h(np.array([[1], [2]], dtype=object)) == h(np.array([[1], [2]], dtype=object))
    strings = np.array(["a", "bb"], dtype=np.dtypes.StringDType())
    assert h(strings) == h(strings.copy()) != h(np.array(["a", "b"], dtype=np.dtypes.StringDType()))


def test_masked_and_memmap_arrays(tmp_path: pathlib.Path) -> None:
    data = [1.0, 2.0, 3.0]
    masked = np.ma.masked_array(data, mask=[0, 1, 0])
    assert h(masked) != h(np.ma.masked_array(data, mask=[0, 0, 1]))
    assert h(masked) != h(np.array(data))
    mapped = np.memmap(tmp_path / "m.dat", dtype="f8", mode="w+", shape=(3,))
    mapped[:] = data
    assert h(mapped) == h(np.array(data))
    del mapped


# -- pandas

FRAME_CHANGES: dict[str, Any] = {
    "index value": lambda df: df.set_axis(pd.Index([10, 20, 31], name="id")),
    "index name": lambda df: df.rename_axis("key"),
    "column rename": lambda df: df.rename(columns={"n": "m"}),
    "column order": lambda df: df[["f", "n", "s"]],
    "dtype": lambda df: df.astype({"n": "float64"}),
    "nullable dtype": lambda df: df.astype({"n": "Int64"}),
    "value": lambda df: df.assign(f=[0.5, 1.5, 2.6]),
    "string value": lambda df: df.assign(s=["a", "b", "d"]),
    # pandas 3 infers a str dtype, pandas 2 object: change to whichever it is not
    "object dtype": lambda df: df.astype({"s": "string" if df.s.dtype == object else object}),
    "row order": lambda df: df.iloc[::-1],
}


def test_index_freq_and_dtype_metadata_count() -> None:
    days = pd.Series([1, 2], index=pd.date_range("2020", periods=2, freq="D"))
    no_freq = days.copy()
    no_freq.index = pd.DatetimeIndex(list(days.index))
    assert h(days) != h(no_freq)
    hours = pd.timedelta_range("1h", periods=2, freq="h")
    assert h(hours) != h(pd.TimedeltaIndex(list(hours)))
    metres = np.zeros(1, np.dtype("f8", metadata={"unit": "m"}))
    km = np.zeros(1, np.dtype("f8", metadata={"unit": "km"}))
    assert h(metres) != h(km) != h(np.zeros(1))


def test_structured_dtype_with_out_of_order_fields_hashes() -> None:
    layout = {"names": ["a", "b"], "formats": ["i4", "f8"], "offsets": [8, 0], "itemsize": 16}
    swapped = {**layout, "offsets": [0, 8]}
    x = np.zeros(2, dtype=layout)
    assert h(x) == h(np.zeros(2, dtype=layout))
    assert h(x) != h(np.zeros(2, dtype=swapped))


@pytest.mark.parametrize("change", FRAME_CHANGES.values(), ids=FRAME_CHANGES.keys())
def test_frame_changes_detected(change: Any) -> None:
    assert h(frame()) != h(change(frame()))


def test_frame_attrs_detected() -> None:
    df = frame()
    before = h(df)
    df.attrs["unit"] = "m"
    assert h(df) != before


def test_frame_equal_rebuilt_and_copied() -> None:
    assert h(frame()) == h(frame().copy(deep=True))
    assert h(frame()) == h(pd.DataFrame(frame().to_dict()).rename_axis("id"))


OBJECT_COLUMNS: dict[str, tuple[list[Any], list[Any]]] = {
    "1 vs '1'": ([1, 2], ["1", 2]),
    "1 vs 1.0": ([1, 2], [1.0, 2]),
    "True vs 1": ([True, 2], [1, 2]),
    "None vs nan": ([None, 2], [math.nan, 2]),
    "str split": (["ab", "c"], ["a", "bc"]),
    "all str vs mixed": (["1", "2"], ["1", 2]),
}


@pytest.mark.parametrize(("a", "b"), OBJECT_COLUMNS.values(), ids=OBJECT_COLUMNS.keys())
def test_object_columns_never_conflate(a: list[Any], b: list[Any]) -> None:
    left = pd.DataFrame({"c": pd.Series(a, dtype=object)})
    right = pd.DataFrame({"c": pd.Series(b, dtype=object)})
    assert h(left) != h(right)
    assert h(pd.Index(a, dtype=object)) != h(pd.Index(b, dtype=object))


def test_pandas_extension_dtypes() -> None:
    cat = pd.Series(pd.Categorical(["a", "b", "a"]))
    assert h(cat) == h(cat.copy())
    assert h(cat) != h(pd.Series(pd.Categorical(["a", "b", "a"], categories=["b", "a"])))
    assert h(cat) != h(pd.Series(pd.Categorical(["a", "b", "a"], ordered=True)))
    assert h(cat) != h(cat.astype(object))
    times = pd.Series(pd.date_range("2020", periods=3, tz="UTC"))
    assert h(times) == h(times.copy())
    assert h(times) != h(times.dt.tz_convert("Europe/Paris"))  # same instants, other zone
    assert h(times) != h(times.dt.tz_localize(None))
    nullable = pd.Series([1, None, 3], dtype="Int64")
    assert h(nullable) != h(pd.Series([1, 0, 3], dtype="Int64"))
    assert h(nullable) != h(pd.Series([1, None, 3], dtype="Float64"))
    strings = pd.Series(["a", None], dtype="string")
    assert h(strings) != h(pd.Series(["a", ""], dtype="string"))
    assert h(pd.Series([pd.Period("2020-01", "M")] * 2)) != h(
        pd.Series([pd.Period("2020-01", "D")] * 2)
    )
    assert h(pd.array([1, 2], dtype="Int64")) != h(pd.array([1, 3], dtype="Int64"))


def test_multiindex_and_series() -> None:
    index = pd.MultiIndex.from_product([[1, 2], ["a", "b"]], names=["n", "s"])
    series = pd.Series(range(4), index=index, name="v")
    assert h(series) == h(series.copy())
    assert h(series) != h(series.rename("w"))
    other = pd.MultiIndex.from_product([[1, 2], ["a", "c"]], names=["n", "s"])
    assert h(series) != h(series.set_axis(other))
    # Unused levels are not content: compare by level values, not codes.
    assert h(index[:2]) == h(index[:2].remove_unused_levels())
    assert h(pd.RangeIndex(3)) != h(pd.Index([0, 1, 2]))


# -- errors


def test_unhashable_names_type_and_path() -> None:
    with socket.socket() as conn, pytest.raises(UnhashableError) as info:
        hash_value([0, 1, {"conn": conn}])
    assert str(info.value) == "cannot hash value[2]['conn'] of type socket"
    assert info.value.path == "[2]['conn']"
    assert info.value.type_name == "socket"
    assert isinstance(info.value, TypeError)


def test_long_error_paths_are_clipped() -> None:
    value: Any = threading.Lock()
    for i in range(100):
        value = {f"key{i}": value}
    with pytest.raises(UnhashableError) as info:
        hash_value(value)
    assert len(info.value.path) <= 200
    assert info.value.path.startswith("['key99']['key98']")
    assert info.value.path.endswith("['key1']['key0']")
    assert len(str(info.value)) < 300


def _generator() -> Any:
    yield 1


UNHASHABLE: dict[str, tuple[Any, str]] = {
    "lock": (lambda: Plain(guard=threading.Lock()), r"value\.guard of type lock"),
    "generator": (lambda: (1, _generator()), r"value\[1\] of type generator"),
    "set member": (lambda: {"k": frozenset({_generator()})}, r"value\['k'\]\{…\}"),
    "object column": (
        lambda: pd.DataFrame({"c": pd.Series([1, threading.Lock()], dtype=object)}),
        r"value\['c'\]\[1\] of type lock",
    ),
    "dict key": (lambda: {"a": 1, 2: [threading.Lock()]}, r"value\[2\]\[0\] of type lock"),
    "dict view": (lambda: {"a": 1, "b": threading.Lock()}.values(), r"value\[1\] of type lock"),
}


@pytest.mark.parametrize(("build", "message"), UNHASHABLE.values(), ids=UNHASHABLE.keys())
def test_unhashable_values_raise_with_location(build: Any, message: str) -> None:
    with pytest.raises(UnhashableError, match=message):
        hash_value(build())


def test_open_file_is_unhashable() -> None:
    expected = r"value\.y\[0\] of type TextIOWrapper"
    with open(os.devnull) as stream, pytest.raises(UnhashableError, match=expected):
        hash_value(Point(1, [stream]))


# -- code objects go through code_hasher


class RecordingHasher:
    """A stand-in for fingerprint.code_hasher that records what it was asked about."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def __call__(self, obj: Any) -> bytes:
        self.seen.append(obj)
        return getattr(obj, "__name__", type(obj).__name__).encode()


def test_code_hasher_used_inside_containers() -> None:
    hasher = RecordingHasher()
    value = {"f": [double, functools.partial(triple, 2)], "cls": Point, "mod": json, "l": len}
    hash_value(value, code_hasher=hasher)
    assert hasher.seen == [double, triple, Point, json, len]


def test_code_hasher_used_for_class_of_objects() -> None:
    hasher = RecordingHasher()
    hash_value([Plain(a=1), Point(1, [2]), Color.RED, Pair(1, 2)], code_hasher=hasher)
    assert hasher.seen == [Plain, Point, Color, Pair]


def test_code_hasher_digest_is_mixed_in() -> None:
    def version(tag: bytes) -> Any:
        return lambda obj: tag

    one = hash_value([double], code_hasher=version(b"v1"))
    assert one == hash_value([double], code_hasher=version(b"v1"))
    assert one != hash_value([double], code_hasher=version(b"v2"))
    assert hash_value(Plain(a=1), code_hasher=version(b"v1")) != hash_value(
        Plain(a=1), code_hasher=version(b"v2")
    )


def test_code_hasher_failure_is_located() -> None:
    def refuse(obj: Any) -> bytes:
        raise UnhashableError("cannot hash value of type lock")

    with pytest.raises(UnhashableError, match=r"value\[0\]\['f'\] of type function: cannot"):
        hash_value([{"f": double}], code_hasher=refuse)


# -- attrs


def test_attrs_classes_by_fields() -> None:
    attrs = pytest.importorskip("attrs")

    @attrs.define
    class Box:
        a: int
        b: list[int]

    assert h(Box(1, [2])) == h(Box(1, [2]))
    assert h(Box(1, [2])) != h(Box(1, [3]))


def test_attrs_state_set_after_init_is_hashed() -> None:
    attrs = pytest.importorskip("attrs")

    @attrs.define(slots=False)
    class Schedule:
        lr: float

        def __attrs_post_init__(self) -> None:
            self.steps = [self.lr] * 3

    schedule = Schedule(1.0)
    before = h(schedule)
    assert before == h(Schedule(1.0))
    schedule.steps[0] = 10.0
    assert h(schedule) != before, "steps edit not seen (stale cache)"


# -- is_immutable

IMMUTABLE: dict[str, tuple[Any, bool]] = {
    "None": (None, True),
    "int": (3, True),
    "bool": (True, True),
    "float": (1.5, True),
    "complex": (1j, True),
    "str": ("s", True),
    "bytes": (b"s", True),
    "Ellipsis": (..., True),
    "range": (range(3), True),
    "tuple of atoms": ((1, ("a", None)), True),
    "frozenset of atoms": (frozenset({1, "a"}), True),
    "tuple with list": ((1, []), False),
    "frozenset with object": (frozenset({Pair(1, 2)}), False),
    "list": ([], False),
    "bytearray": (bytearray(), False),
    "int subclass": (IntSub(1), False),
    "numpy array": (np.zeros(2), False),
    "numpy scalar": (np.float64(1), False),
    "instance": (Plain(), False),
    "function": (double, False),
}


@pytest.mark.parametrize(("value", "expected"), IMMUTABLE.values(), ids=IMMUTABLE.keys())
def test_is_immutable(value: Any, expected: bool) -> None:
    assert is_immutable(value) is expected


# -- stability across processes and versions

SAMPLE_CODE = textwrap.dedent(
    """
    import collections, dataclasses, datetime, decimal, fractions, pathlib, uuid
    import numpy as np, pandas as pd

    @dataclasses.dataclass
    class Rec:
        name: str
        tags: set

    class Thing:
        def __init__(self):
            self.b = {"y", "x", "z"}
            self.a = frozenset({"p", "q"})

    SAMPLES = [
        1, -(2**70), 2.5, float("nan"), -0.0, "héllo\\ud800", b"\\x00\\xff", None, True, 3 + 4j,
        (1, "a", None), [1, [2, [3]]],
        {"b": 1, "a": {"c", "d", "e"}},
        {f"s{i}" for i in range(100)},
        frozenset({"alpha", "beta", frozenset({"gamma", "delta"})}),
        {("k", 1): {"v", "w"}, "n": frozenset(range(30))},
        decimal.Decimal("-1.50"), fractions.Fraction(22, 7), uuid.UUID(int=12345),
        datetime.datetime(2024, 2, 29, 12, 30, tzinfo=datetime.timezone.utc),
        pathlib.PurePosixPath("/data/x.csv"), range(1, 10, 2), slice(None, 3),
        collections.OrderedDict(z=1, a=2), Rec("r", {"t1", "t2", "t3"}), Thing(),
        np.arange(12.0).reshape(3, 4), np.array(["a", "bc"]), np.int16(-3),
        np.arange(6).astype("M8[D]"), np.array([1, "x", {"k"}], dtype=object),
        pd.DataFrame({"i": [1, 2], "s": ["x", "y"], "o": pd.Series([1, "1"], dtype=object),
                      "c": pd.Categorical(["u", "v"]),
                      "t": pd.date_range("2021", periods=2, tz="UTC")}),
        pd.Series({"a": 1.5, "b": 2.5}, name="ser"),
    ]
    """
)

PRINT_DIGESTS = SAMPLE_CODE + textwrap.dedent(
    """
    from funcache_ipy.hashing import hash_value
    print(" ".join(hash_value(v).hex() for v in SAMPLES))
    """
)


def _digests_in_subprocess(seed: str) -> list[str]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    done = subprocess.run(
        [sys.executable, "-c", PRINT_DIGESTS], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.split()


def test_digests_identical_across_processes_and_hash_seeds() -> None:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(SAMPLE_CODE, namespace)
    here = [h(v) for v in namespace["SAMPLES"]]
    assert len(set(here)) == len(here)
    assert _digests_in_subprocess("0") == here
    assert _digests_in_subprocess("4242") == here


GOLDEN: dict[str, tuple[Any, str]] = {
    "int": (1, "5c0fabed007821c11267cbb5dcaed171"),
    "str": ("héllo", "471d2b85742b9643143cd27e33b1eefd"),
    "tuple": ((1, 2.5, None, True), "49669ae01d6455b4119677403a5029e0"),
    "nested": ({"a": [1, b"x"], "b": {3, 4}}, "dfe95e1912df23ad6cf2347ae44f4cb3"),
    "frozenset": (frozenset({"x", "y"}), "eaa3cc185fc5a8a690e49cb6ed292963"),
    "array": (np.arange(4.0).reshape(2, 2), "1a6938dc833cd42ba8f516c99cc80957"),
    "dataclass": (Point(1, [2]), "b08f121b6ce01efb266ef35c9bdef59a"),
    "object": (Plain(a=1.5, b="x"), "32385cab4ffacf8c3d5e75c960ec883b"),
    "cycle": (self_list(), "1bca2f9a94eff42d0ed2e5c755604918"),
    "datetime": (datetime.datetime(2020, 1, 2, 3, 4, 5), "c31d1f7f41dd60ac2f7b5f3ccfba9590"),
}


@pytest.mark.parametrize(("value", "digest"), GOLDEN.values(), ids=GOLDEN.keys())
def test_golden_digests(value: Any, digest: str) -> None:
    # A change here changes every cache key: bump keys.SCHEMA_VERSION with it.
    assert h(value) == digest


def test_hashing_does_not_import_numpy_or_pandas() -> None:
    code = (
        "import sys; from funcache_ipy.hashing import hash_value; "
        "hash_value([1, {'a': (2.5, 'x')}, {3}]); "
        "print('numpy' in sys.modules, 'pandas' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
