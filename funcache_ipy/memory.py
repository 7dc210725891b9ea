"""``Memory``: the one owner of the cache's settings, and what a script needs to use them.

joblib's split: a ``Memory(directory, size_limit, ...)`` holds where entries go and how
much may stay, hands out ``.cache`` (functions decorated by it read its settings at each
call, so changing ``mem.directory`` later applies), and lists, clears and prunes its
directory without IPython. ``funcache_ipy.cache`` is :data:`default_memory`'s ``.cache``,
and the magics' ``%config FuncacheMagics`` options configure that instance.

NB. One store (and so one size limit) per directory in a process: two ``Memory`` objects
sharing a directory should share their limits too, or the last one used sets them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ParamSpec, TypeVar, overload

from funcache_ipy import decorator, housekeeping
from funcache_ipy.decorator import CachedFunction
from funcache_ipy.housekeeping import CacheReport, HousekeepingError, Pruned
from funcache_ipy.remote import REMOTE_ENV, RemoteSpec
from funcache_ipy.store import DEFAULT_OUTPUT_LIMIT, DEFAULT_SIZE_LIMIT, Store, open_store

__all__ = ["Memory", "default_memory"]

_LIMITS = frozenset({"size_limit", "output_limit"})

P = ParamSpec("P")
R = TypeVar("R")


class Memory:
    """Cache settings and the ``@cache`` decorator that uses them.

    Example (a script; no IPython needed)::

        memory = Memory("/scratch/cache", size_limit=2**30)

        @memory.cache
        def load(path): ...

        print(memory.info())
        memory.prune(older="30d")

    Args:
        directory: cache directory; None means ``$FUNCACHE_IPY_DIR`` if set, else
            ``./.funcache``, resolved at each use (so ``%cd`` or ``%env`` apply).
        size_limit: bytes the directory may hold before the oldest entries are evicted.
        output_limit: bytes up to which a file a cached run writes is stored with its
            entry, so that a hit puts it back.
        remote: fsspec URL of a shared tier behind the local directory; None means
            ``$FUNCACHE_IPY_REMOTE``, read at each use.
        enabled: False makes decorated functions just run: nothing read or written.
    """

    def __init__(
        self,
        directory: str | None = None,
        *,
        size_limit: int = DEFAULT_SIZE_LIMIT,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        remote: str | None = None,
        enabled: bool = True,
    ) -> None:
        self._limited: Store | None = None  # the store last given this memory's limits
        self.directory = directory
        self.size_limit = size_limit
        self.output_limit = output_limit
        self.remote = remote
        self.enabled = enabled

    def __setattr__(self, name: str, value: object) -> None:
        # NB. Plain attributes, read at every call (a property would cost each hit a call);
        # a new limit is given to the store at its next use.
        if name in _LIMITS:
            self.__dict__["_limited"] = None
        super().__setattr__(name, value)

    def __repr__(self) -> str:
        return (
            f"Memory(directory={self.directory!r}, size_limit={self.size_limit}, "
            f"output_limit={self.output_limit}, remote={self.remote!r}, enabled={self.enabled})"
        )

    def store(self, directory: str | None = None, remote: str | RemoteSpec | None = None) -> Store:
        """The store of this memory's directory (or ``directory``), with its limits.

        Called on every cached call: the common case is a dictionary lookup and an
        identity check (the limits are given to a store when it or they change).

        Args:
            directory, remote: a decorated function's own ``directory=``/``remote=``,
                which take precedence over this memory's.

        Raises:
            OSError: the directory or the secret key cannot be created; the message says how.
        """
        store = open_store(
            directory if directory is not None else self.directory, remote or self.remote
        )
        if store is not self._limited:
            store.size_limit = self.size_limit
            store.output_limit = self.output_limit
            self.__dict__["_limited"] = store
        return store

    @overload
    def cache(self, func: Callable[P, R], /) -> CachedFunction[P, R]: ...
    @overload
    def cache(
        self,
        /,
        *,
        ignore: Iterable[str] = (),
        directory: str | None = None,
        version: str | None = None,
        files: Iterable[str] = (),
        remote: str | None = None,
    ) -> Callable[[Callable[P, R]], CachedFunction[P, R]]: ...

    def cache(
        self,
        func: Callable[..., Any] | None = None,
        /,
        *,
        ignore: Iterable[str] = (),
        directory: str | None = None,
        version: str | None = None,
        files: Iterable[str] = (),
        remote: str | None = None,
    ) -> Any:
        """Cache a function's results on disk, keyed on its arguments and its code.

        The key covers the arguments (by content) and everything the function's code can
        reach: helpers it calls or references, globals it reads, closures, defaults, user
        classes and local modules. Edit any of them and the next call recomputes. Files the
        function opens while it runs, and files named by ``pathlib.Path`` arguments, count
        by their content. The function uses this memory's settings as they are at each
        call.

        Args:
            func: the function (when used as ``@cache`` without parentheses).
            ignore: parameter names left out of the key (e.g. ``verbose``, a logger).
            directory: a cache directory of this function's own, instead of the memory's.
            version: a salt for dependencies funcache_ipy cannot see (data from a URL,
                ``eval``); change it to force recomputation.
            files: glob patterns (relative to the cwd at call time; a directory counts by
                all its files) of files read by code Python's ``open`` does not see
                (pyarrow, h5py, C extensions), hashed into the key before each run.
            remote: a shared tier of this function's own (fsspec URL: ``s3://bucket/prefix``,
                ``file:///mnt/x``), instead of the memory's. Entries are signed; see the
                README's "Share a cache with your team".

        Returns:
            A wrapper with the same name, docstring and signature, plus ``cache_info()``,
            ``cache_clear()``, ``uncached(...)``, ``refresh(...)``, ``explain(...)`` and
            ``explain_last()``. It pickles as "this function with these options", so worker
            processes (multiprocessing, joblib, Dask) rebuild it and share its entries.

        Raises:
            TypeError: for generator functions (their results are lazy; return a list) or
                when ``ignore`` names a parameter the function does not have.
        """
        if isinstance(files, str):
            files = [files]  # one pattern, not its characters
        options = (frozenset(ignore), directory, version, tuple(files), remote)
        if func is None:
            return lambda f: decorator.wrapper_kind(f)(self, f, *options)
        return decorator.wrapper_kind(func)(self, func, *options)

    def functions(self) -> dict[str, CachedFunction[Any, Any]]:
        """This memory's live decorated functions, by name (``module.qualname``)."""
        return {fn.cache_name: fn for fn in decorator.decorated_functions() if fn.memory is self}

    def info(self, *, remote: bool = False) -> CacheReport:
        """What is stored: directory, size, and per function its entries, age, hits and misses.

        Prints as ``%funcache info`` does (an HTML table in Jupyter).

        Args:
            remote: also list the shared tier, as ``%funcache info --remote`` does: per
                function or cell and signer, its entries, size and the newest one's age,
                read from the small metadata objects beside the values. An unreachable
                tier warns once and is shown as not listed.

        Raises:
            HousekeepingError: ``remote`` without a shared tier configured.
        """
        store = self.store()
        if remote and store.remote is None:
            raise HousekeepingError(
                f"info(remote=True): no shared cache is configured (set ${REMOTE_ENV} or "
                "Memory(remote=...))"
            )
        shared = store.remote if remote else None
        return housekeeping.report(store, self.functions(), {}, self.enabled, shared)

    def clear(self, name: str | None = None) -> int:
        """Delete every entry of the directory, or those of one function or cell.

        Returns:
            How many entries were removed.

        Raises:
            HousekeepingError: no stored function or cell is called ``name`` (the message
                lists the known names); ``load`` is enough for a unique ``module.load``.
        """
        store = self.store()
        functions = self.functions()
        if name is None:
            return store.clear() + sum(fn.cache_clear() for fn in functions.values())
        known = {meta.name for _, meta in store.entries()} | set(functions)
        name = housekeeping.resolve(name, known, "is cached")
        removed = store.clear(name)
        if name in functions:
            removed += functions[name].cache_clear()
        return removed

    def prune(
        self,
        name: str | None = None,
        *,
        keep: int | None = None,
        older: float | str | None = None,
    ) -> Pruned:
        """Remove older versions of functions and cells; the newest version of each stays.

        A version is one state of the code and the globals it reads. With neither option,
        only the newest version of each name is kept.

        Args:
            name: only this function's or cell's entries.
            keep: keep the newest ``keep`` versions of each (1 or more).
            older: also remove entries stored more than this long ago: seconds, or a
                text like ``"30d"``, ``"12h"``, ``"90m"``.

        Returns:
            What was removed (prints as "removed 3 entries (1.2 MiB)").

        Raises:
            HousekeepingError: ``keep`` below 1, an unreadable ``older``, an unknown ``name``.
        """
        if keep is not None and keep < 1:
            raise HousekeepingError(f"keep takes 1 or more (the newest version stays), not {keep}")
        age = housekeeping.parse_age(older) if isinstance(older, str) else older
        if keep is None and age is None:
            keep = 1
        store = self.store()
        if name is not None:
            name = housekeeping.resolve(
                name, {meta.name for _, meta in store.entries()}, "is cached"
            )
        return housekeeping.prune(store, keep, age, name)


class _DefaultMemory(Memory):
    """The instance behind ``funcache_ipy.cache``, ``%%funcache`` cells and the magics.

    It pickles by name, so a worker uses its own default rather than a copy.
    """

    def __reduce__(self) -> str:
        return "default_memory"


default_memory: Memory = _DefaultMemory()
"""The memory of ``funcache_ipy.cache``, ``%%funcache`` cells and ``%funcache``."""
