"""The one line that says why a ``%%funcache`` cell is not cached, naming the culprit.

A cell runs uncached when an input cannot be hashed, and is not stored when a value it
binds cannot be pickled. The errors behind both speak of internals; the user needs the
variable, its kind in their own words, and what to do instead: these messages say that.
"""

from __future__ import annotations

import io
import re
import types
from collections.abc import Mapping
from typing import Any

from funcache_ipy.hashing import UnhashableError
from funcache_ipy.live_references import References, pickles

__all__ = ["unhashable", "unpicklable"]

_CULPRIT = re.compile(r"cannot fingerprint \w+ `([^`]+)`")  # the input an UnhashableError names


def unhashable(exc: UnhashableError, namespace: Mapping[str, Any]) -> str:
    """One line on an input that cannot be hashed: which, of what type, what to do.

    The error itself spells out the path to the culprit, which for a matplotlib
    ``Axes`` runs to hundreds of characters (``%funcache explain`` still shows it).
    """
    match = _CULPRIT.match(str(exc))
    if match is None or match.group(1) not in namespace:
        return f"an input cannot be hashed ({str(exc).partition(': ')[0]})"
    name = match.group(1)
    kind = type(namespace[name])
    package = kind.__module__.partition(".")[0]
    described = kind.__qualname__ if package == "builtins" else f"{package} {kind.__qualname__}"
    return (
        f"input `{name}` ({described}) cannot be hashed; to cache this cell, create "
        f"`{name}` in it, or compute what it needs from `{name}` in an earlier cell"
    )


def unpicklable(values: Mapping[str, object], result: object, references: References) -> str:
    """Why the values or the result cannot be pickled, naming every culprit and the fix:
    ``log (file) and rows (generator) cannot be pickled; ...``."""
    culprits = [
        f"`{name}` ({_kind(value)})"
        for name, value in values.items()
        if not pickles(value, references)
    ]
    if not culprits:
        return f"the cell's value ({_kind(result)}) cannot be pickled"
    listed = ", ".join(culprits[:-1]) + (" and " if len(culprits) > 1 else "") + culprits[-1]
    return (
        f"{listed} cannot be pickled; close, consume or `del` them in the cell, "
        "or create them in another cell"
    )


def _kind(value: object) -> str:
    """What a culprit is, in a user's words: ``file``, ``generator``, else its type."""
    if isinstance(value, io.IOBase):
        return "file"
    if isinstance(value, types.GeneratorType):
        return "generator"
    return f"type {type(value).__name__}"
