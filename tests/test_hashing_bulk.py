"""Bulk hashing of long plain containers keeps the walk's meaning.

``hashing_bulk`` pickles long lists, tuples, dicts and sets of scalars instead of walking
them element by element. A false "equal" would serve another call's result, so random
values (hypothesis) are held to an independent statement of what is equal (``meaning``):
a value rebuilt from fresh objects hashes equal, and any difference -- ``1`` / ``1.0`` /
``True``, ``0.0`` / ``-0.0``, NaN payloads, ``str`` / ``bytes``, order in a sequence or
dict, nesting, list / tuple -- hashes apart. The walk must agree: it is observed on the
same values with one non-scalar element added, which sends them down the walk.
"""

from __future__ import annotations

import copy
import math
import os
import pickle
import struct
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funcache_ipy.hashing import hash_items, hash_value
from funcache_ipy.hashing_bulk import BULK_MIN


def h(value: object) -> str:
    return hash_value(value).hex()


def _float(bits: int) -> float:
    value: float = struct.unpack("<d", struct.pack("<Q", bits))[0]
    return value


QUIET_NAN = _float(0x7FF8000000000000)
OTHER_NAN = _float(0x7FF8000000000001)
NEGATIVE_NAN = _float(0xFFF8000000000000)

# -- the meaning a digest must follow, stated without funcache_ipy


def meaning(value: Any) -> Any:
    """What makes two plain values the same: exact types, float bits, order except in sets."""
    kind = type(value)
    if kind is float:
        return ("float", struct.pack("<d", value))
    if kind in (list, tuple):
        return (kind.__name__, tuple(map(meaning, value)))
    if kind is dict:
        return ("dict", tuple((meaning(k), meaning(v)) for k, v in value.items()))
    if kind in (set, frozenset):
        return (kind.__name__, tuple(sorted(map(repr, map(meaning, value)))))
    return (kind.__name__, value)


def walked(value: Any) -> Any:
    """The same value plus one non-scalar element: never bulk, so hashed by the walk."""
    kind = type(value)
    if kind is list:
        return [*value, []]
    if kind is tuple:
        return (*value, [])
    if kind is dict:
        return {**value, (): []}
    return kind((*value, ()))  # a set or frozenset


# -- random values: long and short containers of scalars, and rows of them

INTS = st.integers(-(2**70), 2**70) | st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63), 2**63])
FLOATS = st.floats() | st.sampled_from([0.0, -0.0, 1.0, math.inf, QUIET_NAN, OTHER_NAN])
TEXT = st.text(max_size=6)
BINARY = st.binary(max_size=6)
# Values one confusion away from another are drawn often (hypothesis rarely makes them).
EDGES = st.sampled_from([0, 1, 0.0, -0.0, 1.0, True, False, None, QUIET_NAN, OTHER_NAN, "", b""])
SCALARS = EDGES | st.none() | st.booleans() | INTS | FLOATS | TEXT | BINARY
KEYS = st.none() | st.booleans() | INTS | TEXT | BINARY  # NB. float keys: 0.0 == -0.0
ELEMENTS = st.sampled_from([EDGES | INTS, EDGES | FLOATS, TEXT, BINARY, SCALARS]).flatmap(
    lambda kind: st.lists(kind, min_size=BULK_MIN - 2, max_size=3 * BULK_MIN)
)
ROWS = st.lists(
    st.lists(SCALARS, min_size=1, max_size=4).map(tuple), min_size=BULK_MIN - 2, max_size=40
)
VALUES = st.one_of(
    ELEMENTS,
    ELEMENTS.map(tuple),
    ELEMENTS.map(set),
    ELEMENTS.map(frozenset),
    st.dictionaries(KEYS, SCALARS, min_size=BULK_MIN - 2, max_size=40),
    ROWS,
    ROWS.map(tuple),
)


def confusable(x: Any) -> Any:
    """A scalar easily mistaken for ``x``: equal under ``==``, same text, next bits."""
    kind = type(x)
    if kind is bool:
        return int(x)
    if kind is int:
        if x in (0, 1):
            return bool(x)
        return float(x) if abs(x) < 2**53 else x + 1
    if kind is float:
        if math.isnan(x):
            return OTHER_NAN if struct.pack("<d", x) != struct.pack("<d", OTHER_NAN) else QUIET_NAN
        return -x if x == 0 else (int(x) if x.is_integer() else math.nextafter(x, math.inf))
    if kind is str:
        return x.encode("utf-8", "surrogatepass")
    if kind is bytes:
        return x.decode("latin-1")
    return 0  # None


def fresh(x: Any) -> Any:
    """An equal object that is not ``x`` (as far as CPython lets a str or int be new)."""
    return pickle.loads(pickle.dumps(x))


def variant(value: Any, data: st.DataObject) -> Any:
    """Either ``value`` rebuilt from fresh objects, or a small change to it."""
    kind = type(value)
    items = list(value.items()) if kind is dict else list(value)
    change = data.draw(
        st.sampled_from(["rebuild", "confuse", "swap", "drop", "nest", "kind"]), label="change"
    )
    if change == "rebuild":
        if kind in (set, frozenset):  # any insertion order
            items = data.draw(st.permutations(items), label="order")
        items = [fresh(item) for item in items]
    elif items:
        i = data.draw(st.integers(0, len(items) - 1), label="at")
        j = data.draw(st.integers(0, len(items) - 1), label="with")
        item = items[i]
        if change == "confuse":
            if kind is dict:
                items[i] = (item[0], confusable(item[1]))
            elif type(item) is tuple:  # a row: change one of its scalars
                at = data.draw(st.integers(0, len(item) - 1), label="in row")
                items[i] = (*item[:at], confusable(item[at]), *item[at + 1 :])
            else:
                items[i] = confusable(item)
        elif change == "swap":
            items[i], items[j] = items[j], items[i]
        elif change == "drop":
            del items[i]
        elif change == "nest" and kind is not dict:
            items[i] = (item,)
    if change == "kind":
        other = {list: tuple, tuple: list, set: frozenset, frozenset: set, dict: dict}[kind]
        return other(items)
    return dict(items) if kind is dict else kind(items)


@settings(
    max_examples=300,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(value=VALUES, data=st.data())
def test_bulk_digests_are_equal_exactly_when_values_mean_the_same(
    value: Any, data: st.DataObject
) -> None:
    other = variant(value, data)
    same = meaning(value) == meaning(other)
    verdict = "equal" if same else "different"
    assert (h(value) == h(other)) == same, f"{verdict} values: {value!r} / {other!r}"
    assert (h(walked(value)) == h(walked(other))) == same, "the walk disagrees"
    assert h(value) == h(fresh(value)), "a rebuilt value hashed differently"


# -- edges picked by hand: each pair must hash apart, as it does when walked

LONG = BULK_MIN + 4
APART = {
    "int vs float": (list(range(LONG)), [*range(LONG - 1), float(LONG - 1)]),
    "1 vs True": ([1] * LONG, [1] * (LONG - 1) + [True]),
    "0 vs False": ([0] * LONG, [False] * LONG),
    "0.0 vs -0.0": ([0.0] * LONG, [0.0] * (LONG - 1) + [-0.0]),
    "NaN payloads": ([QUIET_NAN] * LONG, [QUIET_NAN] * (LONG - 1) + [OTHER_NAN]),
    "NaN sign": ([QUIET_NAN] * LONG, [NEGATIVE_NAN] * LONG),
    "str vs bytes": (["a"] * LONG, ["a"] * (LONG - 1) + [b"a"]),
    "str boundaries": (["ab", "c"] * LONG, ["a", "bc"] * LONG),
    "order": (list(range(LONG)), [*range(1, LONG), 0]),
    "list vs tuple": (list(range(LONG)), tuple(range(LONG))),
    "nesting": ([(1, 2)] * LONG, [(1, (2,))] * LONG),
    "big int": ([2**63] * LONG, [2**63 - 1] * LONG),
    "None vs 0": ([None] * LONG, [0] * LONG),
    "dict order": (
        {f"k{i}": i for i in range(LONG)},
        {f"k{i}": i for i in reversed(range(LONG))},
    ),
    "dict int vs float": (dict.fromkeys(range(LONG), 1), dict.fromkeys(range(LONG), 1.0)),
    "set vs frozenset": (set(range(LONG)), frozenset(range(LONG))),
    "set int vs float": (set(range(LONG)), {*range(LONG - 1), float(LONG - 1)}),
    "set True vs 1": ({True, *range(2, LONG)}, {1, *range(2, LONG)}),
    "set NaN payloads": (
        {QUIET_NAN, *map(float, range(LONG))},
        {OTHER_NAN, *map(float, range(LONG))},
    ),
    "set str vs bytes": (
        {f"s{i}" for i in range(LONG)},
        {*(f"s{i}" for i in range(1, LONG)), b"s0"},
    ),
    "rows vs flat": ([(i,) for i in range(LONG)], list(range(LONG))),
}


def _among(head: Any, value: Any) -> Any:
    """``value`` led by ``head``: a list or tuple with other element types (another path)."""
    if type(value) in (list, tuple):
        return type(value)((head, *value))
    return {head: head, **value} if type(value) is dict else type(value)((head, *value))


@pytest.mark.parametrize("head", [None, "s", 7, (7,)], ids=["alone", "str", "int", "row"])
@pytest.mark.parametrize(("a", "b"), APART.values(), ids=APART.keys())
def test_bulk_keeps_distinctions(a: Any, b: Any, head: Any) -> None:
    if head is not None:
        a, b = _among(head, a), _among(head, b)
    assert h(walked(a)) != h(walked(b)), "the walk itself conflates them"
    assert h(a) != h(b), "bulk hashing conflates them (stale cache)"


@pytest.mark.parametrize("head", [[], ["s"], [7], [7.5], [None]], ids=repr)
def test_equal_strings_hash_alike_shared_or_not(head: list[Any]) -> None:
    text = "xy" * 5
    shared = [*head, *range(LONG), text, text, b"b" * 5, b"b" * 5]
    apart = [*head, *range(LONG), text, "".join(["xy"] * 5), b"b" * 5, bytes(bytearray(b"b" * 5))]
    assert shared[-3] is not apart[-3] and shared[-1] is shared[-2]
    assert h(shared) == h(apart), "string identity changed the digest (needless recompute)"
    assert h([text] * LONG) == h(["".join(["xy"] * 5) for _ in range(LONG)])


def test_sets_hash_alike_whatever_their_history() -> None:
    # Same members, different insertion and deletion histories: different table layouts.
    members = [*range(0, 8 * LONG, 8), 0.5, QUIET_NAN, "a", b"a", None, True]
    built = set(members)
    grown = set(reversed(members)) | set(range(1000))
    grown -= set(range(1000)) - set(members)
    assert list(built) != list(grown), "the test needs two iteration orders"
    assert h(built) == h(grown)
    assert h(frozenset(built)) == h(frozenset(grown))


# -- aliasing and cycles: bulk digests keep the walk's rules


def test_inner_list_twice_differs_from_a_copy() -> None:
    inner = list(range(LONG))
    shared, copied = [0] * LONG + [inner, inner], [0] * LONG + [inner, list(inner)]
    assert h(shared) != h(copied), "aliasing lost"
    assert h(shared) == h(copy.deepcopy(shared))
    assert h([inner, inner]) != h([inner, list(inner)])


def test_list_holding_itself_terminates_and_is_stable() -> None:
    def selfish() -> list[Any]:
        value: list[Any] = list(range(LONG))
        value.append(value)
        return value

    value = selfish()
    unrolled = [*range(LONG), [*range(LONG), value]]
    assert h(value) == h(selfish())
    assert h(value) != h(unrolled), "a cycle hashed like its unrolling"
    assert h((value, value)) == h((selfish(),) * 2) != h((selfish(), selfish()))


def test_rows_keep_aliasing() -> None:
    row = (1, "a", 2.5)
    shared = [row] * LONG
    distinct = [tuple(list(row)) for _ in range(LONG)]
    assert h(shared) != h(distinct), "one row held many times hashed like copies"
    assert h(shared) == h(copy.deepcopy(shared))
    # A row met again later, or met before the rows, is a reference into them.
    assert h((distinct, distinct[3])) != h((distinct, tuple(list(row))))
    assert h((distinct, distinct[3])) == h(copy.deepcopy((distinct, distinct[3])))
    assert h((distinct[3], distinct)) != h((tuple(list(row)), distinct))


def test_hash_items_parts_and_aliasing_between_arguments() -> None:
    rows = [(i, f"s{i}") for i in range(LONG)]
    numbers = list(range(LONG))
    whole, parts = hash_items((rows, numbers, 3))
    assert parts[0] == b"#" + hash_value(rows) and parts[1] == b"#" + hash_value(numbers)
    assert whole == hash_items((copy.deepcopy(rows), list(numbers), 3))[0]
    assert hash_items((rows, rows[2]))[0] != hash_items((rows, (2, "s2")))[0]
    assert hash_items((numbers, numbers))[0] != hash_items((numbers, list(numbers)))[0]


def test_subclasses_and_other_scalars_are_walked() -> None:
    class Number(int):
        pass

    plain = list(range(LONG))
    assert h(plain) != h([*plain[:-1], Number(LONG - 1)])
    assert h([1j] * LONG) != h([complex(1, 1e-300)] * LONG)
    assert h([...] * LONG) == h([...] * LONG)


# -- stable across processes and hash seeds, and pinned

SAMPLE_CODE = textwrap.dedent(
    """
    import struct
    NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000001))[0]
    SAMPLES = [
        list(range(-50, 50)), [i / 7 for i in range(100)] + [NAN, -0.0],
        [f"s{i}\\u00e9" for i in range(100)], [b"x" * i for i in range(40)],
        [(i, f"s{i}", None, True) for i in range(50)],
        [(i, "s", 2.5, b"b", None, False, 2**70)[i % 7] for i in range(100)],
        {f"k{i}": i / 3 for i in range(100)},
        {f"s{i}" for i in range(300)}, frozenset(f"s{i}" for i in range(300)),
        {*range(0, 3000, 7), 0.5, NAN, float("nan"), "a", "b", b"a", None, True},
        [*range(20), {f"s{i}" for i in range(50)}], [*range(20), {"k": 1, "s": {"a", "b", "c"}}],
        set(range(100)), {(i * 7919) % 10007 - 5000 for i in range(3000)}, {2**63, *range(50)},
    ]
    """
)
PRINT_DIGESTS = SAMPLE_CODE + textwrap.dedent(
    """
    import sys
    if sys.argv[1:] == ["numpy"]:
        import numpy  # sorts ints in sets; must not change a digest
    from funcache_ipy.hashing import hash_value
    assert ("numpy" in sys.modules) == (sys.argv[1:] == ["numpy"])
    print(" ".join(hash_value(v).hex() for v in SAMPLES))
    """
)


def test_bulk_digests_identical_across_processes_and_hash_seeds() -> None:
    namespace: dict[str, Any] = {}
    exec(SAMPLE_CODE, namespace)
    here = [h(v) for v in namespace["SAMPLES"]]
    for seed, numpy in (("0", "numpy"), ("4242", "")):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", PRINT_DIGESTS, numpy],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert done.stdout.split() == here, f"digests differ with PYTHONHASHSEED={seed} {numpy}"


GOLDEN: dict[str, tuple[Any, str]] = {
    "ints": (list(range(100)), "82145324085a6e03b27f443bf6ec6551"),
    "strs": (tuple(f"s{i}" for i in range(100)), "3d282e99ad94fe50a0858b2f69cc9611"),
    "dict": ({f"k{i}": i / 3 for i in range(100)}, "9c5cf9c802016262cdd0a1c448a607f7"),
    "rows": ([(i, "a", None) for i in range(100)], "d60bad6a7c20ef6f86d5bd34625324a7"),
    "set": ({*range(100), "a", 0.5}, "a9c2d7e9b2148e4f25a02d5f5132116c"),
}


@pytest.mark.parametrize(("value", "digest"), GOLDEN.values(), ids=GOLDEN.keys())
def test_golden_bulk_digests(value: Any, digest: str) -> None:
    # A change here changes every cache key: bump keys.SCHEMA_VERSION with it.
    assert h(value) == digest
