"""Put a cell's in-place changes back into the live objects on a hit.

An input the cell changed in place without rebinding it (``data.append(3)``,
``cfg.params.append(2)``, ``view[0] = 7.0``) is restored *into the live object*, so
other names for it (``holder["d"]``, ``params``, the array a view belongs to) see the
change too. That works for lists, dicts (``OrderedDict``, ``defaultdict``, ``Counter``),
sets, bytearrays, numpy arrays of the same shape and dtype, and instances of plain
Python classes (state in ``__dict__``, no pickling hooks); the objects inside them are
restored the same way where the run left them in place (matched by identity before
and after the run, not by position), and as copies where it put new ones or where
the record stopped (``_SHAPE_SLOTS``, ``_SHAPE_DEPTH``). Anything else (a pandas
object, an instance with ``__slots__``) is rebound to the stored copy, which breaks
its aliases. State the cell changes inside classes or modules, or through objects it
never names (``Registry.items.append(...)``, ``random.seed()``), is not restored: a
hit leaves it as it was.

One step per phase of a cell run: :func:`record_shapes` before a miss runs notes which
container holds which object, :func:`find_kept` after it says which of those the run
left in place (the form stored with the entry), and :func:`restore_in_place` on a hit
gives the live objects the stored content. Identity only means something within one
run, which is why the record is taken live and stored as slots, never as ids.

Two neighbours finish a hit: :mod:`funcache_ipy.array_views` makes stored arrays views
of their anchors again, and :mod:`funcache_ipy.live_references` lets stored values refer
to the live inputs, through this module's record of which object holds which
(:func:`in_place_kind`, :func:`child_at`).

NB. Entries pickle :class:`ArrayView` and :class:`Pickled` by their import path, which is
part of the on-disk format: they stay here, beside the other records of a cell's run.
"""

from __future__ import annotations

import collections
import copyreg
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from funcache_ipy.missing import MISSING

__all__ = [
    "ArrayView",
    "Kept",
    "Pickled",
    "Shape",
    "Shapes",
    "child_at",
    "find_kept",
    "in_place_kind",
    "part_names",
    "record_shapes",
    "restore_in_place",
    "shared_by_others",
    "takes",
]

_SHAPE_SLOTS = 100_000  # container slots recorded before a run, over all mutable inputs
_SHAPE_DEPTH = 64  # nesting levels recorded (deeper objects are restored as copies)

Shape: TypeAlias = "dict[Any, tuple[object, Shape]]"
"""An object's restorable children before a run: slot -> (the child, its own shape)."""

Shapes: TypeAlias = "dict[str, tuple[object, Shape]]"
"""What some names held before a run: name -> (the object, its shape)."""

Kept: TypeAlias = "dict[Any, tuple[Any, Kept]]"
"""Slots of an object holding, after the run, a child it held before: slot -> (the
slot it was in, what that child kept)."""

_Kind = Literal["list", "dict", "set", "bytearray", "array", "object"]
_DICTS = (dict, collections.OrderedDict, collections.defaultdict, collections.Counter)
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class statement made this class
_OWN_STATE = (
    *("__slots__", "__getstate__", "__setstate__", "__reduce__", "__reduce_ex__"),
    *("__getnewargs__", "__getnewargs_ex__"),
)


def record_shapes(namespace: Mapping[str, Any], names: Iterable[str]) -> Shapes:
    """What some names hold before a run, and which container holds which object, so
    that :func:`find_kept` can tell what the run left in place.

    NB. The shapes hold references: an id is only an identity while its object lives.

    Args:
        namespace: the namespace the cell is about to run in.
        names: names in ``namespace`` the run may change in place.

    Returns:
        The names whose objects can be restored in place, with their shapes.
    """
    budget = [_SHAPE_SLOTS]
    memo: dict[int, Shape] = {}
    shapes = {}
    for name in names:
        value = namespace[name]
        if in_place_kind(value) is not None:
            shapes[name] = (value, _shape(value, memo, budget, _SHAPE_DEPTH))
    return shapes


def find_kept(values: Mapping[str, object], shapes: Shapes) -> dict[str, Kept]:
    """Which names the run left bound to the object they named before it, and which
    children each of those objects kept; what the entry stores to restore in place.

    Args:
        values: what the run bound or changed, by name, as it will be stored.
        shapes: :func:`record_shapes` from before the run.

    Returns:
        name -> the slots to restore into the live children on a hit.
    """
    memo: dict[int, Kept] = {}
    return {
        name: _kept(values[name], shapes[name][1], memo)
        for name in values
        if name in shapes and values[name] is shapes[name][0]  # the object it named before
    }


def shared_by_others(
    namespace: Mapping[str, Any], changed: Iterable[str]
) -> tuple[str, str] | None:
    """A name the run changed in place that a hit can only replace by a copy, and another
    name for it, for one of its parts (``index`` is ``pop.index``) or for an object it is
    a part of; or None.

    A hit rebinds the first name to the stored copy; the other would keep the object as
    it was before the run, so such a cell must run instead. Two frames merely sharing an
    index (``data`` built from ``area``) do not count: neither name is that index.
    """
    for name in changed:
        value = namespace[name]
        if in_place_kind(value) is not None:  # restored into the live object: every name sees it
            continue
        mine = {id(value), *_parts(value)}
        for other, obj in namespace.items():
            if other == name or other.startswith("_"):
                continue
            if id(obj) in mine or id(value) in _parts(obj):
                return name, other
    return None


def _parts(obj: object) -> set[int]:
    """Parts of ``obj`` that other names commonly hold on their own (a frame's index)."""
    return {id(getattr(obj, name)) for name in part_names(obj)}


def part_names(obj: object) -> tuple[str, ...]:
    """The attributes holding :func:`_parts`."""
    pandas = sys.modules.get("pandas")
    if pandas is None or not isinstance(obj, pandas.Series | pandas.DataFrame):
        return ()
    return ("index", "columns") if isinstance(obj, pandas.DataFrame) else ("index",)


def restore_in_place(
    namespace: Mapping[str, Any], values: dict[str, object], kept: Mapping[str, Kept]
) -> dict[int, Any]:
    """Give the live objects of the ``kept`` names the stored content in ``values``.

    ``values`` is updated to what the namespace should now bind: for a kept name the
    live object (or the stored copy, where the live one cannot take it).

    Args:
        namespace: the live namespace, not yet updated.
        values: the stored values by name (unpickled: new objects); updated.
        kept: :func:`find_kept` from the stored run.

    Returns:
        id(stored object) -> the live object now holding its content, for other
        references to stored objects (the cell's last value).
    """
    merged: dict[int, tuple[Any, Any]] = {}  # id(live) -> (live, stored) restored into it
    for var, var_kept in kept.items():
        live = namespace.get(var, MISSING)
        if live is not MISSING:
            values[var] = _restore_object(live, values[var], var_kept, merged)
    # NB. Other names (``same = data``) and the last value may be the very objects
    # restored in place: they get the live object, so aliases stay aliases.
    live_of = {id(stored): live for live, stored in merged.values()}
    for var, value in values.items():
        if var not in kept:
            values[var] = live_of.get(id(value), value)
    return live_of


def in_place_kind(value: object) -> _Kind | None:
    """How ``value`` can take another object's content in place, if it can."""
    cls = type(value)
    if cls is list:
        return "list"
    if cls in _DICTS:
        return "dict"
    if cls is set:
        return "set"
    if cls is bytearray:
        return "bytearray"
    numpy = sys.modules.get("numpy")
    if numpy is not None and cls is numpy.ndarray:
        return "array"
    if cls.__flags__ & _HEAPTYPE and _is_plain_class(cls):
        return "object"
    return None


def _is_plain_class(cls: type) -> bool:
    """Whether an instance's whole state is its ``__dict__``, pickled as such: Python
    classes over ``object`` without slots or pickling hooks (pandas objects have them)."""
    return cls not in copyreg.dispatch_table and all(
        base is object
        or (base.__flags__ & _HEAPTYPE and not any(map(vars(base).__contains__, _OWN_STATE)))
        for base in cls.__mro__
    )


def _slots(value: Any, kind: _Kind | None) -> Iterable[tuple[Any, Any]]:
    """An object's children, by slot: list index, dict key or attribute name."""
    if kind == "list":
        return enumerate(value)
    if kind == "dict":
        return dict.items(value)  # NB. order does not matter here
    if kind == "object":
        state: dict[str, Any] = vars(value)
        return state.items()
    return ()


def child_at(value: Any, kind: _Kind | None, slot: Any) -> object:
    """The child in ``slot``, or ``MISSING``."""
    if kind == "list":
        return value[slot] if slot < len(value) else MISSING
    if kind == "dict":
        return dict.get(value, slot, MISSING)  # NB. not value[slot]: a defaultdict adds it
    if kind == "object":
        return vars(value).get(slot, MISSING)
    return MISSING


def _shape(value: object, memo: dict[int, Shape], budget: list[int], depth: int) -> Shape:
    shape = memo.get(id(value))
    if shape is not None:
        return shape
    shape = memo[id(value)] = {}
    for slot, child in _slots(value, in_place_kind(value) if depth else None):
        if budget[0] <= 0:
            break
        budget[0] -= 1
        if in_place_kind(child) is not None:
            shape[slot] = (child, _shape(child, memo, budget, depth - 1))
    return shape


def _kept(value: object, shape: Shape, memo: dict[int, Kept]) -> Kept:
    """Which children of ``value`` it already held before the run, and where.

    Only those are restored into the live children on a hit (found where they were
    before: the live namespace has the content the run started from); any other slot
    gets the stored copy. So after ``rows.insert(0, r)`` each old row is updated in its
    new place, while ``cfg.params = [9]`` leaves the old list (maybe named elsewhere)
    alone.
    """
    kept = memo.get(id(value))
    if kept is not None:
        return kept
    kept = memo[id(value)] = {}
    if not shape:
        return kept
    slot_before = {id(child): slot for slot, (child, _) in shape.items()}
    for slot, child in _slots(value, in_place_kind(value)):
        before = slot_before.get(id(child))
        if before is not None and shape[before][0] is child:
            kept[slot] = (before, _kept(child, shape[before][1], memo))
    return kept


def _restore_object(live: Any, stored: Any, kept: Kept, merged: dict[int, tuple[Any, Any]]) -> Any:
    """Give ``live`` the content of ``stored`` and return it; or return ``stored`` if
    ``live`` cannot take it (another type, an array of another shape, a read-only one).

    Children in the ``kept`` slots are restored into the live children, recursively.
    ``merged`` records what went where: a live object reached twice takes one content.
    """
    if not takes(live, stored):
        return stored
    if id(live) in merged:
        return live if merged[id(live)][1] is stored else stored
    kind = in_place_kind(live)
    merged[id(live)] = (live, stored)
    if kind == "list":
        live[:] = [v for _, v in _restored_children(live, kind, enumerate(stored), kept, merged)]
    elif kind == "dict":
        content = dict(_restored_children(live, kind, stored.items(), kept, merged))
        live.clear()
        live.update(content)  # NB. the type's own methods: an OrderedDict keeps its order
        if isinstance(live, collections.defaultdict):
            live.default_factory = stored.default_factory
    elif kind == "object":
        content = dict(_restored_children(live, kind, vars(stored).items(), kept, merged))
        vars(live).clear()
        vars(live).update(content)
    elif kind == "set":
        live.clear()
        live.update(stored)
    elif kind == "bytearray":
        live[:] = stored
    else:
        live[...] = stored
    return live


def takes(live: Any, stored: Any) -> bool:
    """Whether ``live`` can be given ``stored``'s content in place."""
    kind = in_place_kind(live)
    if kind is None or type(stored) is not type(live):
        return False
    return kind != "array" or (
        live.shape == stored.shape and live.dtype == stored.dtype and live.flags.writeable
    )


def _restored_children(
    live: object,
    kind: _Kind,
    stored: Iterable[tuple[Any, Any]],
    kept: Kept,
    merged: dict[int, tuple[Any, Any]],
) -> Iterator[tuple[Any, Any]]:
    """``stored``'s children, with those of the ``kept`` slots restored into ``live``'s."""
    for slot, value in stored:
        before, child_kept = kept.get(slot, (MISSING, {}))
        current = MISSING if before is MISSING else child_at(live, kind, before)
        if current is MISSING:
            yield slot, value
        else:
            yield slot, _restore_object(current, value, child_kept, merged)


@dataclass(frozen=True)
class ArrayView:
    """Where an array the cell binds lies in the memory of another named array.

    Pickling a view stores a copy, so after a hit ``sub = grid[:2]`` would no longer
    write through to ``grid``. The entry keeps, beside that copy, where the view was:
    ``offset`` bytes from the first element of ``anchor`` (a name the entry restores,
    or an input, found live), and its own layout; a hit rebuilds it on the anchor.
    """

    anchor: str
    live: bool  # the anchor is an input, found in the namespace (else a stored value)
    anchor_layout: tuple[tuple[int, ...], tuple[int, ...], str]  # shape, strides, dtype
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    dtype: Any  # numpy.dtype
    writeable: bool


@dataclass(frozen=True)
class Pickled:
    """Values pickled with some inputs by name; :mod:`funcache_ipy.live_references` revives them.

    The buffers stay ``PickleBuffer``\\ s (views of the arrays): the store pickles them
    out of band again, so a large array is neither copied nor hashed into the stream.
    """

    stream: bytes
    buffers: tuple[Any, ...]  # pickle.PickleBuffer, or memoryview once unpickled
