"""Digests of big plain containers of scalars, serialized in one C pass by pickle.

Why: the walk in ``hashing`` spends about half a microsecond per element in Python, 25
times what ``pickle.dumps`` takes for the same list, and cell inputs and mutable globals
are re-hashed on every run, hits included. A list, tuple, dict or set holding only
*exact* ``None``, ``bool``, ``int``, ``float``, ``str`` and ``bytes`` is therefore
pickled (protocol 5) and the pickle hashed; anything else is walked as before.

The pickle of such a value means what the walk means, by construction:

- It is a complete, type-tagged serialization: distinct values give distinct streams
  (``1``, ``1.0``, ``True`` and ``"1"`` differ), floats go by their exact bits (``0.0``
  and ``-0.0`` differ, every NaN is stable), ``str`` as UTF-8 with ``surrogatepass``,
  dicts in insertion order. It never uses ``hash()``, and it is the same in every
  process of one Python version (keys carry the Python version).
- Only exact scalar types get in: pickle handles those natively and calls
  ``reducer_override`` for everything else (``IntEnum``, float subclasses, ``complex``),
  which refuses, so those are walked.
- Identity does not get in: ``fast`` mode pickles without a memo, so whether two equal
  strings are one object does not show. Containers are the exception, and each path
  below says how it keeps them out or accounts for them.
- Sets, whose iteration order follows ``PYTHONHASHSEED``, are pickled as a sorted list.

numpy is only used if already imported (to sort ints), and never changes a digest.

Which path a value takes depends only on the value (its types, length and aliasing), so
equal values always get equal digests; the caller tags a bulk digest apart from a walk.
"""

from __future__ import annotations

import io
import math
import operator
import pickle
import struct
import sys
from collections.abc import Callable, Collection
from itertools import chain, filterfalse, islice
from typing import Any

from funcache_ipy.hashing_stream import hash_bytes

__all__ = ["BULK_MIN", "dict_digest", "sequence_digest", "set_digest"]

# Below this many elements a walk is as fast as building a pickler; shorter containers
# are always walked (a rule on the value's length, so equal values still agree).
BULK_MIN = 16

_NUMBERS = frozenset({type(None), bool, int, float})
_TEXT = frozenset({str, bytes})
_SCALARS = _NUMBERS | _TEXT
_SAMPLE = 16  # elements looked at to pick the faster of two ways to the same result
# Sets are pickled as one list, grouped by type in this order and sorted within a type.
_SET_ORDER = (type(None), bool, int, float, str, bytes)
_float_bits = struct.Struct("<d").pack


class _Refused(Exception):
    """A value pickle would reduce rather than write natively: not for the bulk path."""


class _ScalarPickler(pickle.Pickler):
    """A pickler that writes only what pickle handles natively and refuses the rest.

    NB. pickle never calls ``reducer_override`` for exact None, bool, int, float, str,
    bytes, bytearray, list, tuple, dict, set and frozenset; the callers rule out the
    containers among those.
    """

    def reducer_override(self, obj: Any) -> Any:
        raise _Refused


def _pickled_digest(value: object) -> bytes | None:
    """Digest of the memo-less pickle of ``value``, or None if some object was refused."""
    stream = io.BytesIO()
    pickler = _ScalarPickler(stream, protocol=5)
    pickler.fast = True  # no memo: equal strings pickle alike whether shared or not
    try:
        pickler.dump(value)
    except _Refused:
        return None
    return hash_bytes(stream.getbuffer())


def _numbers_digest(values: list[Any] | tuple[Any, ...]) -> bytes | None:
    """Digest of a sequence of exact None/bool/int/float, checked by the pickling itself.

    Pickled *with* a memo, which then holds every str, bytes and non-empty container met:
    the sequence alone means numbers only, without a separate pass over the elements'
    types. What else can pass is harmless: ``()`` (never the user's aliasing) and the
    sequence itself (a cycle, which the pickle encodes as a reference to it).
    """
    stream = io.BytesIO()
    pickler = _ScalarPickler(stream, protocol=5)
    try:
        pickler.dump(values)
    except (_Refused, RecursionError):  # deep nesting is the walk's to report
        return None
    if len(pickler.memo.copy()) != 1:
        return None
    return hash_bytes(stream.getbuffer())


def _only_scalars(values: Any) -> bool:
    """Whether every element of ``values`` is of an exact scalar type (one C-speed pass)."""
    return set(map(type, values)) <= _SCALARS


def sequence_digest(
    values: list[Any] | tuple[Any, ...], memo: dict[int, int], kept: list[object]
) -> bytes | None:
    """Digest of a list or tuple of scalars, or of non-empty tuples of scalars, else None.

    ``memo`` and ``kept`` are the walk's record of the objects it met (``hashing.Walker``).
    Rows (``list(zip(a, b))``, records) must not hide aliasing: each tuple must be a
    distinct object the walk has not met, and once digested they are recorded there, in
    the order the walk would have.
    """
    first = type(values[0])
    if first in _NUMBERS:
        # NB. A sample showing a str or bytes only skips an attempt bound to fail (they
        # are memoized) and to cost a pickling with a memo; the result is the same.
        sample = chain(values[:_SAMPLE], values[:: max(1, len(values) // _SAMPLE)])
        if _TEXT.isdisjoint(map(type, sample)):
            digest = _numbers_digest(values)
            if digest is not None:
                return digest
    elif first is str:
        try:
            "".join(values)  # a C-speed check that all are str (subclasses are refused)
        except TypeError:
            pass
        else:
            return _pickled_digest(values)
    elif first is tuple:
        return _rows_digest(values, memo, kept)
    return _pickled_digest(values) if _only_scalars(values) else None


def _rows_digest(
    rows: list[Any] | tuple[Any, ...], memo: dict[int, int], kept: list[object]
) -> bytes | None:
    """Digest of a sequence of distinct, non-empty tuples of scalars, else None."""
    if operator.countOf(map(type, rows), tuple) != len(rows) or not all(rows):
        return None  # NB. all(): () is one shared object, never the user's aliasing
    if not _only_scalars(chain.from_iterable(rows)):
        return None
    start = len(kept)
    indices = dict(zip(map(id, rows), range(start, start + len(rows)), strict=True))
    if len(indices) != len(rows) or not memo.keys().isdisjoint(indices):
        return None
    digest = _pickled_digest(rows)
    if digest is not None:
        memo.update(indices)
        kept.extend(rows)
    return digest


def dict_digest(mapping: dict[Any, Any]) -> bytes | None:
    """Digest of a dict whose keys and values are all scalars, else None."""
    if not _only_scalars(mapping) or not _only_scalars(mapping.values()):
        return None
    return _pickled_digest(mapping)


def set_digest(members: set[Any] | frozenset[Any]) -> bytes | None:
    """Digest of a set of scalars, as the pickle of its members in a canonical order."""
    first = type(next(iter(members)))
    if first in _SCALARS and operator.countOf(map(type, members), first) == len(members):
        kinds = {first}  # the usual case, found by a cheaper pass
    else:
        kinds = set(map(type, members))
        if not kinds <= _SCALARS:
            return None
    if len(kinds) == 1:
        return _pickled_digest(_SORTED.get(first, sorted)(members))
    ordered: list[Any] = []
    for kind in _SET_ORDER:
        if kind in kinds:
            ordered += _SORTED.get(kind, sorted)([x for x in members if type(x) is kind])
    return _pickled_digest(ordered)


def _sorted_ints(group: Collection[int]) -> list[int]:
    """Ints in ascending order, sorted by numpy if it is loaded and they look out of order.

    NB. Either way gives the same list, so which one runs cannot change a digest: only
    the speed. A set of small ints often iterates in order, which ``sorted`` only checks;
    others sort about 5x faster in numpy (int64 only). The first elements decide.
    """
    numpy = sys.modules.get("numpy")
    head = list(islice(group, _SAMPLE))
    if numpy is not None and head != sorted(head):
        try:
            array = numpy.fromiter(group, dtype=numpy.int64, count=len(group))
        except OverflowError:
            pass
        else:
            array.sort()
            ints: list[int] = array.tolist()
            return ints
    return sorted(group)


def _sorted_floats(group: Collection[Any]) -> list[float]:
    """Floats in a canonical order: by value, then NaNs by their bits.

    NB. NaN compares false with everything, so a sort would leave NaNs where the set's
    iteration order put them; they go last instead, ordered by their bit patterns.
    (``0.0`` and ``-0.0`` are equal, so a set never holds both.)
    """
    nans = list(filter(math.isnan, group))
    if not nans:
        return sorted(group)
    numbers = sorted(filterfalse(math.isnan, group))
    return numbers + sorted(nans, key=_float_bits)


_SORTED: dict[type, Callable[[Collection[Any]], list[Any]]] = {
    int: _sorted_ints,
    float: _sorted_floats,
}
