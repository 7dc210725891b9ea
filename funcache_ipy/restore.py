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

The other way round, a value the cell binds may refer to one of its inputs
(``b = {"x": a}``, ``pipe = make_pipeline(scaler)``, ``it = iter(rows)``): after a run
it holds the live object, so a later ``a.append(3)`` shows through ``b``. A hit must
give the same, not a copy. :func:`pickle_values` therefore pickles the inputs the run
left as they were *by name* (:func:`input_references`), and :func:`unpickle_values`
resolves those names in the live namespace, whose content the key guarantees equal.
"""

from __future__ import annotations

import collections
import copyreg
import gc
import importlib
import io
import pickle
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from funcache_ipy.envelope import Discard, _Pickler, out_of_band
from funcache_ipy.missing import MISSING
from funcache_ipy.state import generator_function

__all__ = [
    "ArrayView",
    "Kept",
    "Pickled",
    "References",
    "Shapes",
    "UnresolvedInput",
    "find_kept",
    "find_views",
    "input_references",
    "kept_references",
    "pickle_values",
    "pickles",
    "rebuild_views",
    "record_shapes",
    "restore_in_place",
    "shared_by_others",
    "unpickle_values",
    "views_fit",
]

_SHAPE_SLOTS = 100_000  # container slots recorded before a run, over all mutable inputs
_SHAPE_DEPTH = 64  # nesting levels recorded (deeper objects are restored as copies)

_Shape: TypeAlias = "dict[Any, tuple[object, _Shape]]"
"""An object's restorable children before a run: slot -> (the child, its own shape)."""

Shapes: TypeAlias = "dict[str, tuple[object, _Shape]]"
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
    memo: dict[int, _Shape] = {}
    shapes = {}
    for name in names:
        value = namespace[name]
        if _kind(value) is not None:
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
        if _kind(value) is not None:  # restored into the live object: every name sees it
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
    return {id(getattr(obj, name)) for name in _part_names(obj)}


def _part_names(obj: object) -> tuple[str, ...]:
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


def _kind(value: object) -> _Kind | None:
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


def _child(value: Any, kind: _Kind | None, slot: Any) -> object:
    """The child in ``slot``, or ``MISSING``."""
    if kind == "list":
        return value[slot] if slot < len(value) else MISSING
    if kind == "dict":
        return dict.get(value, slot, MISSING)  # NB. not value[slot]: a defaultdict adds it
    if kind == "object":
        return vars(value).get(slot, MISSING)
    return MISSING


def _shape(value: object, memo: dict[int, _Shape], budget: list[int], depth: int) -> _Shape:
    shape = memo.get(id(value))
    if shape is not None:
        return shape
    shape = memo[id(value)] = {}
    for slot, child in _slots(value, _kind(value) if depth else None):
        if budget[0] <= 0:
            break
        budget[0] -= 1
        if _kind(child) is not None:
            shape[slot] = (child, _shape(child, memo, budget, depth - 1))
    return shape


def _kept(value: object, shape: _Shape, memo: dict[int, Kept]) -> Kept:
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
    for slot, child in _slots(value, _kind(value)):
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
    if not _takes(live, stored):
        return stored
    if id(live) in merged:
        return live if merged[id(live)][1] is stored else stored
    kind = _kind(live)
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


def _takes(live: Any, stored: Any) -> bool:
    """Whether ``live`` can be given ``stored``'s content in place."""
    kind = _kind(live)
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
        current = MISSING if before is MISSING else _child(live, kind, before)
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


def find_views(
    stored: Mapping[str, object], live: Mapping[str, object]
) -> tuple[dict[str, ArrayView], str | None]:
    """Which stored arrays are views of other named arrays, and how to rebuild them.

    Args:
        stored: what the entry will store, by name (exact numpy arrays are looked at).
        live: the cell's inputs as they were before the run, which a hit finds live.

    Returns:
        The views by name, anchors before the views built on them; or, if a stored
        array shares memory in a way a hit cannot rebuild, a one-line reason naming it.
        A view no other name can reach (``np.arange(12).reshape(3, 4)``) or that cannot
        be written through (pandas' ``.values``) is stored as a copy.
    """
    numpy = sys.modules.get("numpy")
    if numpy is None:
        return {}, None
    members = [(name, value, True) for name, value in live.items() if type(value) is numpy.ndarray]
    members += [(n, v, False) for n, v in stored.items() if type(v) is numpy.ndarray]
    groups: dict[int, list[tuple[str, Any, bool]]] = {}
    for member in members:
        groups.setdefault(id(_memory_root(member[1])), []).append(member)
    views: dict[str, ArrayView] = {}
    for group in groups.values():
        if not any(not is_live and array.base is not None for _, array, is_live in group):
            continue  # only owners and inputs: nothing to rebuild
        # NB. Largest first, inputs and owners before views: each view's anchor is an
        # earlier member, so a hit rebuilds anchors first and never goes round in a cycle.
        order = sorted(
            range(len(group)),
            key=lambda i: (-_extent(group[i][1]), not group[i][2], group[i][1].base is not None, i),
        )
        placed: list[tuple[str, Any, bool]] = []
        for name, array, is_live in (group[i] for i in order):
            if is_live or array.base is None or array.size == 0:
                placed.append((name, array, is_live))
                continue
            anchor = next(
                (m for m in placed if _within(array, m[1]) and _keeps_layout(m, views)), None
            )
            if anchor is not None:
                views[name] = _view_record(array, anchor)
                continue
            # NB. References to the memory's owner, counted against a fresh local: each
            # array of the group whose ``base`` it is holds one; any more is something
            # else (an object's attribute, a frame's block) that a copy would cut off.
            root, probe = _memory_root(array), object()
            holders = sum(1 for _, member, _ in group if member.base is root)
            held_elsewhere = sys.getrefcount(root) - sys.getrefcount(probe) > holders
            if any(_overlaps(array, m[1]) for m in placed) or (
                array.flags.writeable and held_elsewhere
            ):
                return {}, (
                    f"`{name}` is a view of an array that none of the cell's names holds, "
                    "and a copy would not write through to it; bind that array to a name "
                    "in the cell, or take a .copy()"
                )
            placed.append((name, array, is_live))
    return views, None


def rebuild_views(
    views: Mapping[str, ArrayView], values: dict[str, object], namespace: Mapping[str, Any]
) -> dict[int, Any]:
    """Make the stored copies in ``values`` views of their anchors again, in place.

    Call :func:`views_fit` first, and this after :func:`restore_in_place` (whose live
    objects anchor views of the inputs) but before the namespace is updated (inputs the
    cell rebinds are still there as the cell found them).

    Returns:
        id(stored copy) -> the view that replaced it.
    """
    replaced: dict[int, Any] = {}
    for name, view in views.items():
        anchor = namespace.get(view.anchor) if view.live else values.get(view.anchor)
        if _layout(anchor) == view.anchor_layout:  # NB. else kept as the stored copy
            replaced[id(values[name])] = values[name] = _view_on(anchor, view)
    return replaced


def views_fit(
    views: Mapping[str, ArrayView], values: Mapping[str, object], namespace: Mapping[str, Any]
) -> bool:
    """Whether every view's anchor is there with the layout the view was recorded on.

    An input keyed by content can still be laid out differently (a strided view then,
    a contiguous copy now): the offsets would point elsewhere, so the cell must run.
    """
    for view in views.values():
        anchor = namespace.get(view.anchor) if view.live else values.get(view.anchor)
        if view.live and _layout(anchor) != view.anchor_layout:
            return False
        if not view.live and view.anchor not in values:
            return False
    return True


def _memory_root(array: Any) -> object:
    """The object that owns an array's memory: its last ``base``."""
    while array.base is not None and type(array.base) is type(array):
        array = array.base
    return array if array.base is None else array.base


def _bounds(array: Any) -> tuple[int, int]:
    """The byte addresses ``[low, high)`` an array's elements span."""
    low = high = array.__array_interface__["data"][0]
    if array.size == 0:
        return low, high
    for length, stride in zip(array.shape, array.strides, strict=True):
        if stride < 0:
            low += stride * (length - 1)
        else:
            high += stride * (length - 1)
    return low, high + array.itemsize


def _extent(array: Any) -> int:
    low, high = _bounds(array)
    return high - low


def _within(inner: Any, outer: Any) -> bool:
    low, high = _bounds(inner)
    outer_low, outer_high = _bounds(outer)
    return outer_low <= low and high <= outer_high


def _overlaps(one: Any, other: Any) -> bool:
    low, high = _bounds(one)
    other_low, other_high = _bounds(other)
    return low < other_high and other_low < high


def _keeps_layout(member: tuple[str, Any, bool], views: Mapping[str, ArrayView]) -> bool:
    """Whether a hit finds ``member`` laid out as now: live, rebuilt as a view, or a
    contiguous copy (pickling a strided array makes it contiguous)."""
    name, array, is_live = member
    return is_live or name in views or array.flags.c_contiguous or array.flags.f_contiguous


def _layout(array: Any) -> tuple[tuple[int, ...], tuple[int, ...], str] | None:
    """Shape, strides and dtype of an exact numpy array; ``None`` for anything else."""
    numpy = sys.modules.get("numpy")
    if numpy is None or type(array) is not numpy.ndarray:
        return None
    return (tuple(array.shape), tuple(array.strides), array.dtype.str)


def _view_record(array: Any, anchor: tuple[str, Any, bool]) -> ArrayView:
    name, base, is_live = anchor
    layout = (tuple(base.shape), tuple(base.strides), base.dtype.str)
    offset = array.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    return ArrayView(
        name,
        is_live,
        layout,
        offset,
        tuple(array.shape),
        tuple(array.strides),
        array.dtype,
        bool(array.flags.writeable),
    )


class _Window:
    """An anchor's memory seen through the array interface (what ``as_strided`` does);
    the array built on it keeps the anchor alive through ``base``."""

    def __init__(self, anchor: Any, interface: dict[str, Any]) -> None:
        self.__array_interface__ = interface
        self.base = anchor


def _view_on(anchor: Any, view: ArrayView) -> Any:
    numpy = sys.modules["numpy"]
    start = anchor.__array_interface__["data"][0] + view.offset
    interface = {
        "version": 3,
        "shape": view.shape,
        "strides": view.strides,
        "typestr": view.dtype.str,
        "descr": view.dtype.descr,
        "data": (start, not (view.writeable and anchor.flags.writeable)),
    }
    array = numpy.asarray(_Window(anchor, interface))
    return array if array.dtype == view.dtype else array.view(view.dtype)


# -- inputs by reference

References: TypeAlias = "dict[int, tuple[Any, ...]]"
"""id(an object a stored value refers to) -> where a hit finds it (a persistent id).

``("input", path, ...)``: an input the run left unchanged, at each path (a name, then
steps into it: ``("part", attribute)``, a frame's index, or ``("slot", slot)``, see
:func:`_slots`). ``("kept", before, after)``: an object a hit restores in place, found
live at its path ``before`` the run, its stored content at ``after`` in the kept values.
"""

# A dict view's type -> the method that makes it from its dict
_DICT_VIEWS: dict[type, Callable[[dict[Any, Any]], object]] = {
    type({}.keys()): dict.keys,
    type({}.values()): dict.values,
    type({}.items()): dict.items,
}


# Built-in iterators that drop their sequence once exhausted, made over an empty one
_EMPTY_ITERATORS: tuple[Callable[[], Iterator[Any]], ...] = (
    lambda: iter([]),
    lambda: iter(()),
    lambda: reversed([]),
    lambda: reversed(()),
    lambda: iter(""),
    lambda: iter("\u00e9"),  # NB. a str iterator other than the ASCII one (exhausted anyway)
    lambda: iter(b""),
    lambda: iter(bytearray()),
    lambda: iter({}),
    lambda: iter({}.values()),
    lambda: iter({}.items()),
    lambda: iter(set()),
)
_EXHAUSTIBLE = {type(make()).__name__: make for make in _EMPTY_ITERATORS}


class UnresolvedInput(LookupError):
    """A stored value refers to an input that the namespace no longer holds as it did."""


@dataclass(frozen=True)
class Pickled:
    """Values pickled with some inputs by name; :func:`unpickle_values` revives them.

    The buffers stay ``PickleBuffer``\\ s (views of the arrays): the store pickles them
    out of band again, so a large array is neither copied nor hashed into the stream.
    """

    stream: bytes
    buffers: tuple[Any, ...]  # pickle.PickleBuffer, or memoryview once unpickled


def input_references(
    namespace: Mapping[str, Any], names: Iterable[str], shapes: Shapes
) -> References:
    """Which objects a stored value may refer to by name, and where a hit finds them.

    Args:
        namespace: the namespace after the run.
        names: inputs the run left bound to the same object, unchanged in content: the
            key holds their content, and with it where their parts are, so a hit finds
            them equal in the live namespace.
        shapes: :func:`record_shapes` from before the run: the objects inside them.

    Returns:
        id(object) -> its paths: every name bound to it, else the first path into an
        input that reaches it (a frame's index, an item of a list). Several names for
        one object must still name one object on a hit: the cell may have used either.
    """
    references: References = {}
    names = list(names)
    for name in names:
        value = namespace[name]
        references[id(value)] = (*references.get(id(value), ("input",)), (name,))
    for name in names:
        value = namespace[name]
        for part in _part_names(value):
            references.setdefault(id(getattr(value, part)), ("input", (name, ("part", part))))
        if name in shapes and shapes[name][0] is value:
            _reference_slots(shapes[name][1], (name,), references)
    return references


def _reference_slots(shape: _Shape, path: tuple[Any, ...], references: References) -> None:
    for slot, (child, child_shape) in shape.items():
        if id(child) not in references:  # NB. also ends cycles: the path is recorded first
            references[id(child)] = ("input", (*path, ("slot", slot)))
            _reference_slots(child_shape, (*path, ("slot", slot)), references)


def kept_references(
    values: Mapping[str, object], kept: Mapping[str, Kept], references: References
) -> References:
    """The objects a hit restores in place (:func:`find_kept`), for other values to
    refer to the live objects rather than to copies (``b = {"x": data}`` after
    ``data.append(3)``).

    Args:
        values: what the run bound or changed, by name.
        kept: :func:`find_kept` of them.
        references: :func:`input_references` (an object there stays an input).
    """
    found: References = {}
    for name, name_kept in kept.items():
        _reference_kept(values[name], name_kept, (name,), (name,), references, found)
    return found


def _reference_kept(
    obj: Any,
    kept: Kept,
    before: tuple[Any, ...],
    after: tuple[Any, ...],
    references: References,
    found: References,
) -> None:
    if id(obj) in references or id(obj) in found:
        return
    found[id(obj)] = ("kept", before, after)
    kind = _kind(obj)
    for slot, (slot_before, child_kept) in kept.items():
        child = _child(obj, kind, slot)
        step_before, step_after = ("slot", slot_before), ("slot", slot)
        _reference_kept(
            child, child_kept, (*before, step_before), (*after, step_after), references, found
        )


class _ValuesPickler(_Pickler):
    """The store's pickler, with a few objects pickled as what they are to a hit.

    Dict views (``d.keys()``) pickle as the view of their dict, so a view of an input
    stays a view of the live dict.
    """

    def __init__(self, file: Any, **options: Any) -> None:
        super().__init__(file, protocol=5, **options)

    def reducer_override(self, obj: Any) -> Any:
        method = _DICT_VIEWS.get(type(obj))
        if method is not None:
            return method, (gc.get_referents(obj)[0],)  # NB. a dict view refers to its dict only
        if type(obj).__name__ in _EXHAUSTIBLE and _exhausted(obj):
            return _exhausted_iterator, (type(obj).__name__,)
        named = generator_function(obj)
        if named is not None:
            return _module_attribute, named
        return super().reducer_override(obj)


class _ReferencingPickler(_ValuesPickler):
    """:class:`_ValuesPickler` with the ``references`` pickled by where a hit finds them.

    NB. ``persistent_id`` is a Python call for every object pickled, several times the
    cost of pickling a float: used only when there is something to refer to.
    """

    def __init__(self, file: Any, references: References, **options: Any) -> None:
        super().__init__(file, **options)
        self.references = references

    def persistent_id(self, obj: Any) -> tuple[Any, ...] | None:
        return self.references.get(id(obj))


def _exhausted(iterator: Any) -> bool:
    """Whether a built-in iterator has dropped its sequence: ``(iter, (empty,))``.

    NB. Pickled as it says, it would come back as an iterator over an empty sequence
    *at position 0*, which hashes otherwise: the cells reading it would miss once.
    """
    reduced = iterator.__reduce__()
    return len(reduced) == 2 and len(reduced[1]) == 1 and len(reduced[1][0]) == 0


def _exhausted_iterator(kind: str) -> Iterator[Any]:
    """An exhausted iterator of type ``kind``, as a run leaves ``print(*zip(a, b))``'s."""
    iterator = _EXHAUSTIBLE[kind]()
    for _ in iterator:
        pass
    return iterator


def _module_attribute(module: str, name: str) -> object:
    """``module.name``, imported: how a stored ``random.seed`` comes back."""
    return getattr(importlib.import_module(module), name)


def pickle_values(
    kept_values: Mapping[str, object],
    value: object,
    references: References,
    kept: References,
) -> Pickled:
    """Pickle the content of the objects a hit restores in place, then ``value`` with
    ``references`` and those objects (``kept``) by where a hit finds them live.

    One pickler, so an object in both (``x`` after ``data.append(x)``) stays one object.

    Raises:
        Exception: whatever pickling raises (unpicklable objects).
    """
    buffers: list[pickle.PickleBuffer] = []
    sink = io.BytesIO()
    if not references and not kept:
        pickler = _ValuesPickler(sink, buffer_callback=buffers.append)
        pickler.dump(dict(kept_values))
    else:
        referencing = _ReferencingPickler(sink, references, buffer_callback=buffers.append)
        referencing.dump(dict(kept_values))
        referencing.references = {**kept, **references}
        pickler = referencing
    pickler.dump(value)
    return Pickled(sink.getvalue(), tuple(buffers))


def pickles(value: object, references: References) -> bool:
    """Whether ``value`` can be pickled (a dry run: buffers cost nothing)."""
    try:
        _ReferencingPickler(Discard(), references, buffer_callback=out_of_band).dump(value)
    except Exception:  # NB. pickling runs arbitrary __reduce__ code
        return False
    return True


class _ResolvingUnpickler(pickle.Unpickler):
    def __init__(self, pickled: Pickled, namespace: Mapping[str, Any]) -> None:
        super().__init__(io.BytesIO(pickled.stream), buffers=pickled.buffers)
        self._namespace = namespace
        self.kept: list[tuple[Any, tuple[Any, ...]]] = []  # (live object, path in the content)

    def persistent_load(self, pid: Any) -> Any:
        if pid[0] == "kept":
            live = _follow(self._namespace, pid[1])
            self.kept.append((live, pid[2]))
            objects = [live]
        else:
            objects = [_follow(self._namespace, path) for path in pid[1:]]
        if objects[0] is MISSING or any(obj is not objects[0] for obj in objects):
            raise UnresolvedInput(" or ".join(map(str, pid[1:])))
        return objects[0]


def _follow(namespace: Mapping[str, Any], path: tuple[Any, ...]) -> Any:
    """The object at ``path`` (a name, then steps into it), or ``MISSING``."""
    obj = namespace.get(path[0], MISSING)
    for how, step in path[1:]:
        if obj is MISSING:
            break
        if how == "part":
            obj = getattr(obj, step) if step in _part_names(obj) else MISSING
        else:
            obj = _child(obj, _kind(obj), step)
    return obj


def unpickle_values(pickled: Pickled, namespace: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
    """Unpickle what :func:`pickle_values` stored, its inputs the live ones in ``namespace``.

    Call before changing anything: the objects the value refers to in place are the live
    ones, which :func:`restore_in_place` must then give the first part's content.

    Returns:
        The content to restore in place, by name; the value.

    Raises:
        UnresolvedInput: an input it refers to is missing, its names now bind different
            objects, or a live object to restore in place cannot take its content.
        Exception: whatever unpickling raises.
    """
    unpickler = _ResolvingUnpickler(pickled, namespace)
    kept_values, value = unpickler.load(), unpickler.load()
    for live, path in unpickler.kept:
        stored = _follow(kept_values, path)
        if stored is MISSING or not _takes(live, stored):
            raise UnresolvedInput(f"{path} cannot be restored in place")
    return kept_values, value
