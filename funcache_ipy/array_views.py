"""Arrays a cell binds as views of other named arrays, rebuilt as views on a hit.

Pickling a view stores a copy, so after a hit ``sub = grid[:2]`` would no longer write
through to ``grid``. :func:`find_views` records, when an entry is stored, where each such
view lies in its anchor's memory (an :class:`~funcache_ipy.restore.ArrayView`);
:func:`views_fit` and :func:`rebuild_views` check and rebuild them on a hit. A view that
cannot be rebuilt safely makes the cell run instead.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from funcache_ipy.restore import ArrayView

__all__ = ["find_views", "rebuild_views", "views_fit"]


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
