"""Which inputs a ``%%funcache`` cell may change in place, digested to see whether it did.

A cell can change a value without rebinding it: ``data.append(4)``, or a function it
calls appending to a global ``LOG``. The code does not say which calls change what, so
the content of every such mutable value is digested before the run and after it: one
whose digest changed is an output of the cell. The same digests tell which inputs a hit
will find exactly as the run left them.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from typing import Any

from funcache_ipy.analysis import CellAnalysis
from funcache_ipy.fingerprint import hash_content
from funcache_ipy.hashing import UnhashableError, is_immutable
from funcache_ipy.missing import MISSING

__all__ = ["content_digest", "mutable_inputs", "unchanged_inputs"]


def mutable_inputs(
    namespace: Mapping[str, Any], analysis: CellAnalysis, reached: frozenset[str]
) -> dict[str, bytes]:
    """Content digests of what the cell might change in place: its inputs
    (``data.append(4)``) and the globals its functions read (``log(x)`` appending to
    ``LOG``)."""
    digests = {}
    bound = set(analysis.bound)
    for name in dict.fromkeys([*analysis.inputs, *sorted(reached)]):
        value = namespace.get(name, MISSING)
        if value is MISSING or name in bound or _is_code(value) or is_immutable(value):
            continue
        digests[name] = content_digest(value)
    return digests


def content_digest(value: object) -> bytes:
    """``value``'s content digest; ``b""`` for a value that cannot be hashed."""
    try:
        return hash_content(value)
    except UnhashableError:
        return b""  # NB. unequal to any real digest: counted as changed, so stored


def _is_code(value: object) -> bool:
    return isinstance(value, types.FunctionType | types.ModuleType | type)


def unchanged_inputs(
    analysis: CellAnalysis,
    namespace: Mapping[str, Any],
    before: Mapping[str, int],
    watched: Mapping[str, bytes],
    mutated: Sequence[str],
) -> list[str]:
    """Inputs a hit finds live as the run left them: still bound to the object they named
    before the run, and either mutable with the content they had (their key's content),
    or functions, classes and modules (keyed by code; pickled by name anyway).

    Immutable values are left out: their identity tells nothing, and two names for one
    small int would have to name one object again on a hit.
    """
    names = []
    skip = {*analysis.bound, *mutated}
    for name in dict.fromkeys([*analysis.inputs, *watched]):
        value = namespace.get(name, MISSING)
        if value is MISSING or name in skip or before.get(name) != id(value):
            continue
        if watched.get(name, b"") != b"" or (name not in watched and _is_code(value)):
            names.append(name)
    return names
