"""What a hit restores keys exactly as what the run produced.

A hit hands back an unpickled copy of the run's value. Every key computed from that
copy later (the next cell reading it, another cached function taking it) must equal the
key the run's own value got, or each *Restart & Run All* recomputes everything
downstream of the first hit. And never by making different values collide: a value
changed after it was stored keys as itself again.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import enum
import fractions
import functools
import pathlib
import pickle
import re
import uuid
import zoneinfo
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell

from funcache_ipy.fingerprint import hash_content
from funcache_ipy.memory import default_memory
from tests.conftest import run_cell


def copy_of(value: object) -> Any:
    return pickle.loads(pickle.dumps(value, 5))


# ------------------------------------------------------------------ values


@dataclasses.dataclass
class Record:
    a: int
    b: list[int]


@dataclasses.dataclass(frozen=True, slots=True)
class FrozenSlotted:
    a: int
    b: tuple[int, ...]


Point = collections.namedtuple("Point", "x y")


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self) -> None:
        self.a = 1
        self.b = [2]


class SlottedWithDict:
    __slots__ = ("__dict__", "a")

    def __init__(self) -> None:
        self.a = 1
        self.z = 3


class Plain:
    def __init__(self) -> None:
        self.b = 2
        self.a = [1]


class KeepsCache:
    """``__getstate__`` leaves a cache out; ``__setstate__`` starts an empty one."""

    def __init__(self) -> None:
        self.a = 1
        self._cache: dict[str, int] = {"warm": 1}

    def __getstate__(self) -> dict[str, int]:
        return {"a": self.a}

    def __setstate__(self, state: dict[str, int]) -> None:
        self.__dict__.update(state)
        self._cache = {}


class BunchLike(dict):  # type: ignore[type-arg]
    """Like scikit-learn's ``Bunch``: ``__init__`` sets an attribute, ``__setstate__``
    ignores the state, so a pickled copy lacks that attribute."""

    def __init__(self, **items: object) -> None:
        super().__init__(items)
        self.__dict__["_warnings"] = {}

    def __setstate__(self, state: object) -> None:
        pass


class Color(enum.Enum):
    RED = 1


def with_attrs(frame: pd.DataFrame) -> pd.DataFrame:
    frame.attrs["source"] = "test"
    return frame


VALUES: dict[str, Callable[[], object]] = {
    "dict order": lambda: {"b": 1, "a": 2},
    "set": lambda: {"x", "y", 1, 2.5, ("t", 1)},
    "frozenset": lambda: frozenset({"a", "b"}),
    "nested containers": lambda: {"k": [1, (2, {3, 4}), {"z": None}], "b": b"x"},
    "OrderedDict": lambda: collections.OrderedDict(b=1, a=2),
    "defaultdict": lambda: collections.defaultdict(list, a=[1]),
    "Counter": lambda: collections.Counter("hello"),
    "deque": lambda: collections.deque([1, 2, 3], maxlen=5),
    "datetime utc": lambda: datetime.datetime(2024, 1, 2, 3, 4, tzinfo=datetime.UTC),
    "datetime zoneinfo": lambda: datetime.datetime(
        2024, 1, 2, 3, 4, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")
    ),
    "date": lambda: datetime.date(2024, 1, 2),
    "Decimal": lambda: decimal.Decimal("1.10"),
    "Fraction": lambda: fractions.Fraction(1, 3),
    "UUID": lambda: uuid.UUID(int=5),
    "Path": lambda: pathlib.Path("/a/b"),
    "enum": lambda: Color.RED,
    "partial": lambda: functools.partial(int, base=2),
    "regex": lambda: re.compile("a+", re.IGNORECASE),
    "dataclass": lambda: Record(1, [2]),
    "frozen slotted dataclass": lambda: FrozenSlotted(1, (2,)),
    "namedtuple": lambda: Point(1, [2]),
    "slots": Slotted,
    "slots and __dict__": SlottedWithDict,
    "plain instance": Plain,
    "__getstate__ leaving a cache out": KeepsCache,
    "Bunch-like": lambda: BunchLike(a=1, data=np.arange(3)),
    "Bunch-like inside a list": lambda: [BunchLike(inner=BunchLike(a=1)), 2],
    "array": lambda: np.arange(12.0).reshape(3, 4),
    "Fortran-order array": lambda: np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    "strided view": lambda: np.arange(20)[::2],
    "transposed array": lambda: np.arange(12).reshape(3, 4).T,
    "read-only array": lambda: np.frombuffer(b"abcdefgh", dtype=np.uint8),
    "object array": lambda: np.array([1, "a", None], dtype=object),
    "structured array": lambda: np.zeros(3, dtype=[("a", "i4"), ("b", "f8")]),
    "datetime64 array": lambda: np.array(["2024-01-01"], dtype="datetime64[ns]"),
    "masked array": lambda: np.ma.masked_array([1, 2, 3], mask=[0, 1, 0]),
    "numpy scalar": lambda: np.float32(1.5),
    "numpy Generator": lambda: np.random.default_rng(1),
    "frame": lambda: pd.DataFrame({"a": [1, 2], "b": ["x", "y"], "c": [1.5, None]}),
    "frame categorical": lambda: pd.DataFrame({"c": pd.Categorical(["a", "b", "a"])}),
    "frame datetime tz": lambda: pd.DataFrame(
        {"t": pd.date_range("2024", periods=3, tz="Europe/Paris")}
    ),
    "frame MultiIndex": lambda: pd.DataFrame(
        {"v": [1, 2, 3]},
        index=pd.MultiIndex.from_tuples([("a", 1), ("a", 2), ("b", 1)], names=["k", "n"]),
    ),
    "frame MultiIndex columns": lambda: pd.DataFrame(
        [[1, 2]], columns=pd.MultiIndex.from_tuples([("a", "x"), ("a", "y")])
    ),
    "frame nullable": lambda: pd.DataFrame(
        {
            "i": pd.array([1, None], dtype="Int64"),
            "s": pd.array(["a", None], dtype="string"),
            "b": pd.array([True, None], dtype="boolean"),
        }
    ),
    "frame period": lambda: pd.DataFrame({"p": pd.period_range("2024-01", periods=2, freq="M")}),
    "frame interval": lambda: pd.DataFrame({"i": pd.interval_range(0, 2)}),
    "frame attrs": lambda: with_attrs(pd.DataFrame({"a": [1]})),
    "frame slice": lambda: pd.DataFrame({"a": range(10), "b": range(10)}).iloc[::2],
    "frame DatetimeIndex freq": lambda: pd.DataFrame(
        {"a": [1, 2, 3]}, index=pd.date_range("2024", periods=3, freq="D")
    ),
    "series": lambda: pd.Series([1, 2], index=["a", "b"], name="s"),
    "series ordered categorical": lambda: pd.Series(pd.Categorical(["a", "b"], ordered=True)),
    "RangeIndex": lambda: pd.RangeIndex(0, 10, 2),
    "Timestamp tz": lambda: pd.Timestamp("2024-01-01", tz="UTC"),
    "Period": lambda: pd.Period("2024-01", freq="M"),
}
# Their classes restore state their own way, and the copy genuinely lacks some of it.
LOSSY_COPIES = {"Bunch-like", "Bunch-like inside a list"}


@pytest.mark.parametrize(
    "name", [n for n in VALUES if n not in LOSSY_COPIES], ids=lambda n: n.replace(" ", "-")
)
def test_pickled_copy_hashes_like_the_value(name: str) -> None:
    value = VALUES[name]()
    digest = hash_content(value)
    copied = hash_content(copy_of(value))
    assert copied == digest, f"{name}: a pickled copy hashes differently (needless miss)"


# ------------------------------------------------------------------ class fingerprints


@pytest.fixture
def ip(shell: InteractiveShell) -> Iterator[InteractiveShell]:
    shell.extension_manager.load_extension("funcache_ipy")
    yield shell
    shell.extension_manager.unload_extension("funcache_ipy")
    default_memory.enabled = True


@pytest.mark.parametrize(
    "definition",
    [
        "class Box:\n    __slots__ = ('size',)\n    def __init__(self, size):\n"
        "        self.size = size\n",
        "class Box:\n    def __init__(self, size):\n        self.size = size\n",
    ],
    ids=["slots", "plain"],
)
def test_pickling_an_instance_does_not_change_its_class_key(
    ip: InteractiveShell, definition: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run_cell(ip, "%config FuncacheMagics.quiet = True")  # only the body prints
    run_cell(ip, "import funcache_ipy, pickle\n" + definition)
    run_cell(
        ip,
        "@funcache_ipy.cache\ndef area(n):\n    print('ran')\n    return Box(n).size ** 2\n",
    )
    run_cell(ip, "first = area(3)")
    run_cell(ip, "pickle.dumps(Box(1), 5);")  # copyreg caches __slotnames__ on the class
    run_cell(ip, "second = area(3)")
    assert ip.user_ns["first"] == ip.user_ns["second"] == 9
    assert capsys.readouterr().out.split() == ["ran"], "pickling an instance changed the key"
