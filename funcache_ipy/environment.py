"""Environment variables read on every cached call, cheaply.

The cache directory and the remote tier may be set with ``%env`` between calls, so they
are read at each call rather than once; this module makes that read cost next to nothing.
"""

from __future__ import annotations

import functools
import os

__all__ = ["environ"]


def environ(name: str) -> str | None:
    """``os.environ.get(name)``, read on every cached call, in ~0.1 µs rather than ~1 µs.

    NB. ``os.environ.get`` raises and catches a ``KeyError`` for an unset name; the
    mapping's own dict (``_data``, there since Python 3.2) answers without one. Any
    other mapping falls back to ``get``.
    """
    data = getattr(os.environ, "_data", None)
    if not isinstance(data, dict):
        return os.environ.get(name)
    raw = data.get(_environ_key(name))
    return None if raw is None else str(os.environ.decodevalue(raw))


@functools.cache
def _environ_key(name: str) -> object:
    return os.environ.encodekey(name)
