"""Stored values that refer to a cell's live inputs: pickled by name, resolved on a hit.

A value the cell binds may refer to one of its inputs
(``b = {"x": a}``, ``pipe = make_pipeline(scaler)``, ``it = iter(rows)``): after a run
it holds the live object, so a later ``a.append(3)`` shows through ``b``. A hit must
give the same, not a copy. :func:`pickle_values` therefore pickles the inputs the run
left as they were *by name* (:func:`input_references`), and :func:`unpickle_values`
resolves those names in the live namespace, whose content the key guarantees equal.

Which objects may be named, and where a hit finds them, comes from
:mod:`funcache_ipy.restore`'s record of the run.
"""

from __future__ import annotations

import gc
import importlib
import io
import pickle
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeAlias

from funcache_ipy.envelope import Discard, _Pickler, out_of_band
from funcache_ipy.missing import MISSING
from funcache_ipy.restore import (
    Kept,
    Pickled,
    Shape,
    Shapes,
    child_at,
    in_place_kind,
    part_names,
    takes,
)
from funcache_ipy.state import generator_function

__all__ = [
    "References",
    "UnresolvedInput",
    "input_references",
    "kept_references",
    "pickle_values",
    "pickles",
    "unpickle_values",
]

References: TypeAlias = "dict[int, tuple[Any, ...]]"
"""id(an object a stored value refers to) -> where a hit finds it (a persistent id).

``("input", path, ...)``: an input the run left unchanged, at each path (a name, then
steps into it: ``("part", attribute)``, a frame's index, or ``("slot", slot)``, see
:func:`~funcache_ipy.restore.child_at`). ``("kept", before, after)``: an object a hit
restores in place, found live at its path ``before`` the run, its stored content at
``after`` in the kept values.
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
        for part in part_names(value):
            references.setdefault(id(getattr(value, part)), ("input", (name, ("part", part))))
        if name in shapes and shapes[name][0] is value:
            _reference_slots(shapes[name][1], (name,), references)
    return references


def _reference_slots(shape: Shape, path: tuple[Any, ...], references: References) -> None:
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
    kind = in_place_kind(obj)
    for slot, (slot_before, child_kept) in kept.items():
        child = child_at(obj, kind, slot)
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
            obj = getattr(obj, step) if step in part_names(obj) else MISSING
        else:
            obj = child_at(obj, in_place_kind(obj), step)
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
        if stored is MISSING or not takes(live, stored):
            raise UnresolvedInput(f"{path} cannot be restored in place")
    return kept_values, value
