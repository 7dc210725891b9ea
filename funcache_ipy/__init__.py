"""funcache_ipy: code-aware, durable memoization for notebooks and scripts.

``@funcache_ipy.cache`` keys a call on its arguments *and* on the implementation it
can reach (helpers, globals, closures, defaults, local modules), so an edit anywhere
recomputes and nothing stale is ever served. ``%load_ext funcache_ipy`` adds the
``%%funcache`` cell magic and the ``%funcache`` line magic. Its settings have one owner,
``funcache_ipy.default_memory`` (a :class:`Memory`; make others for other directories).

NB. Importing this package must not import IPython: the magics are loaded lazily
from ``load_ipython_extension``, so plain scripts stay light.
"""

from __future__ import annotations

from typing import Any

from funcache_ipy.decorator import CachedFunction, CacheInfo
from funcache_ipy.hashing import UnhashableError
from funcache_ipy.keys import Explanation
from funcache_ipy.memory import Memory, default_memory
from funcache_ipy.notices import in_ipython, show_plainly
from funcache_ipy.warning import FuncacheWarning

__all__ = [
    "CacheInfo",
    "CachedFunction",
    "Explanation",
    "FuncacheWarning",
    "Memory",
    "UnhashableError",
    "cache",
    "default_memory",
    "load_ipython_extension",
    "unload_ipython_extension",
]
__version__ = "0.1.0"

cache = default_memory.cache
"""``@funcache_ipy.cache``: the default memory's decorator (see :meth:`Memory.cache`)."""

if in_ipython():  # imported in a notebook: its messages read as notices, not errors
    show_plainly()


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics; called by ``%load_ext funcache_ipy``."""
    from funcache_ipy import magics

    show_plainly()

    magics.load_ipython_extension(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Unregister the magics; called by ``%unload_ext funcache_ipy``."""
    from funcache_ipy import magics

    magics.unload_ipython_extension(ipython)
