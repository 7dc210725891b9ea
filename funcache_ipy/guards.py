"""Guards: cheap checks that tell whether a fingerprint still holds.

A walk records what its digest depended on: the objects names resolved to (namespace
entries), closure cells, class and module dicts, and the mutable values it hashed. A
``Tracker`` re-checks these on every call and walks again only when one fails, so a
warm call costs a few identity comparisons instead of a walk over every helper.
"""

from __future__ import annotations

import functools
import operator
import sys
import types
from collections.abc import Callable, Mapping
from itertools import repeat
from keyword import iskeyword
from typing import Any

ABSENT = object()  # a name that resolves to nothing; distinct from a global set to None
_CELL_CONTENTS = operator.attrgetter("cell_contents")


_FUNCTION_EDITS = [0]  # bumped by the audit hook below; a list so the hook needs no global
_EDITABLE = frozenset({"__code__", "__defaults__", "__kwdefaults__"})


def _count_function_edits(event: str, args: tuple[Any, ...]) -> None:
    if event == "object.__setattr__" and args[1] in _EDITABLE:
        _FUNCTION_EDITS[0] += 1


@functools.cache
def _watch_function_edits() -> None:
    """Observe in-place edits of any function's code or defaults (PEP 578 audit events).

    NB. ``%autoreload`` swaps ``__code__`` in place, and CPython reports every such
    assignment as an ``object.__setattr__`` audit event. Counting them turns the per-call
    check of every reachable function into one integer comparison. Audit hooks cannot
    be removed, so this one is installed once and does almost nothing.
    """
    sys.addaudithook(_count_function_edits)


class Guards:
    """Cheap checks that tell whether a walk's result still holds.

    Built during a walk, then frozen into C-speed identity checks (generated ``is``
    comparisons, ``map``/``all``); only mutable values are re-hashed on each call.

    Args:
        rehash: digest of a mutable value as the guards should compare it. Passed in by
            ``fingerprint.py``, whose code hasher it uses for code inside values, so this
            module stays below it.
    """

    def __init__(self, rehash: Callable[[object], bytes] | None) -> None:
        _watch_function_edits()
        self.rehash = rehash
        self.function_edits = _FUNCTION_EDITS[0]
        self.reads: dict[int, tuple[Mapping[str, Any], dict[str, object]]] = {}
        self.cells: list[types.CellType] = []
        self.cell_contents: list[object] = []
        self.dicts: list[
            tuple[Callable[[], Mapping[str, Any]], tuple[str, ...], tuple[object, ...]]
        ] = []
        self.values: list[tuple[object, bytes]] = []
        self.namespaces: list[tuple[Callable[[], bool], Mapping[str, Any], tuple[str, ...]]] = []

    def read(self, namespace: Mapping[str, Any], name: str, found: object) -> None:
        self.reads.setdefault(id(namespace), (namespace, {}))[1].setdefault(name, found)

    def names_read(self, namespace: Mapping[str, Any]) -> list[str]:
        """Names looked up in ``namespace`` so far (before :meth:`freeze`)."""
        entry = self.reads.get(id(namespace))
        return [] if entry is None else list(entry[1])

    def cell(self, cell: types.CellType, contents: object) -> None:
        self.cells.append(cell)
        self.cell_contents.append(contents)

    def whole_dict(self, get_dict: Callable[[], Mapping[str, Any]]) -> None:
        current = get_dict()
        self.dicts.append((get_dict, tuple(current), tuple(current.values())))

    def value(self, obj: object) -> None:
        """Re-hash ``obj`` on every check: it may change in place.

        A one-off walk (a cell's inputs, keyed once per run) passes ``rehash=None`` and
        never checks its guards, so it skips this second hash of every mutable value.
        """
        if self.rehash is not None:
            self.values.append((obj, self.rehash(obj)))

    def freeze(self) -> Guards:
        """Turn the recorded reads into one identity check per namespace."""
        for namespace, seen in self.reads.values():
            present = {name: obj for name, obj in seen.items() if obj is not ABSENT}
            absent = tuple(name for name, obj in seen.items() if obj is ABSENT)
            self.namespaces.append((_identity_check(namespace, present), namespace, absent))
        self.reads.clear()
        return self

    def hold(self) -> bool:
        """True while every guarded read would still see what the walk saw."""
        if _FUNCTION_EDITS[0] != self.function_edits:
            return False
        for still_seen, namespace, absent in self.namespaces:
            try:
                if not still_seen():
                    return False
            except NameError:  # a name was deleted
                return False
            if absent and any(map(namespace.__contains__, absent)):
                return False
        try:
            if not all(map(operator.is_, map(_CELL_CONTENTS, self.cells), self.cell_contents)):
                return False
        except ValueError:  # a closure cell was emptied
            return False
        for get_dict, keys, values in self.dicts:
            current = get_dict()
            if tuple(current) != keys or not all(map(operator.is_, current.values(), values)):
                return False
        rehash = self.rehash
        return rehash is not None and all(rehash(obj) == digest for obj, digest in self.values)


def _identity_check(namespace: Mapping[str, Any], seen: dict[str, object]) -> Callable[[], bool]:
    """A function telling whether each name in ``namespace`` is still the object seen.

    For a dict (module or notebook globals) it is generated code whose globals *are* that
    dict and whose free variables are the objects seen, so each check is CPython's
    specialized ``LOAD_GLOBAL``, a ``LOAD_DEREF`` and ``is``: ~140 instructions, a sixth
    fewer than indexing a tuple of the objects, and a third of ``itemgetter`` +
    ``map(is_)``. A hit through 100 helpers needs 100 checks: without a version number
    on dicts (CPython offers watchers to C code only) each name must be looked at.
    Names come from bytecode or ``__dict__`` keys; anything not a plain identifier takes
    the generic path.
    """
    names = list(seen)
    expected = tuple(seen.values())
    if type(namespace) is dict and all(n.isidentifier() and not iskeyword(n) for n in names):
        prefix = "_seen"
        while any(name.startswith(prefix) for name in names):
            prefix += "_"  # NB. a parameter named like a checked global would shadow it
        params = [f"{prefix}{i}" for i in range(len(names))]
        body = " and ".join(f"{n} is {p}" for n, p in zip(names, params, strict=True)) or "True"
        source = (
            f"def bind({', '.join(params)}):\n"
            f"    def check():\n        return {body}\n"
            "    return check\n"
        )
        module = compile(source, "<funcache guard>", "exec")
        code = next(c for c in module.co_consts if isinstance(c, types.CodeType))
        check: Callable[[], bool] = types.FunctionType(code, namespace, "bind")(*expected)
        return check

    def check_generic() -> bool:
        return all(map(operator.is_, map(namespace.get, names, repeat(ABSENT)), expected))

    return check_generic
