"""``@cache``: durable memoization keyed on a call's inputs *and* its implementation.

The wrapper does as little as it can per call: re-check the fingerprint's guards (a few
identity comparisons), hash the arguments, look the key up. Everything that can be
decided once — signature layout, ignored parameters, sync or async — is decided at
decoration time.

User code always runs outside any ``try`` that handles storage: a user's exception
propagates untouched and is never cached, and a storage fault never loses a result
(the store warns and the computed value is returned).
"""

from __future__ import annotations

import functools
import inspect
import time
import warnings
import weakref
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, TypeVar, overload

from funcache_ipy.fingerprint import Tracker, hash_content
from funcache_ipy.hashing import UnhashableError
from funcache_ipy.keys import Explanation, call_key, explain_manifests
from funcache_ipy.store import MISSING, EntryMeta, FuncacheWarning, Store, open_store

F = TypeVar("F", bound=Callable[..., Any])

_enabled = True
_decorated: weakref.WeakSet[Callable[..., Any]] = weakref.WeakSet()


def set_enabled(flag: bool) -> None:
    """Switch caching on or off for this process (``%funcache off`` / ``on``).

    Off means every cached function just runs: nothing is read or written.
    """
    global _enabled
    _enabled = flag


def is_enabled() -> bool:
    """Whether caching is on for this process."""
    return _enabled


def decorated_functions() -> list[Callable[..., Any]]:
    """Live ``@cache`` wrappers, for ``%funcache info`` / ``clear`` / ``explain``."""
    return list(_decorated)


class CacheInfo(NamedTuple):
    """Hits and misses of this process; entries and bytes currently on disk."""

    hits: int
    misses: int
    entries: int
    bytes: int


@overload
def cache(func: F, /) -> F: ...
@overload
def cache(
    *, ignore: Iterable[str] = (), directory: str | None = None, version: str | None = None
) -> Callable[[F], F]: ...


def cache(
    func: Callable[..., Any] | None = None,
    /,
    *,
    ignore: Iterable[str] = (),
    directory: str | None = None,
    version: str | None = None,
) -> Any:
    """Cache a function's results on disk, keyed on its arguments and its code.

    The key covers the arguments (by content) and everything the function's code can
    reach: helpers it calls or references, globals it reads, closures, defaults, user
    classes and local modules. Edit any of them and the next call recomputes.

    Args:
        func: the function (when used as ``@cache`` without parentheses).
        ignore: parameter names left out of the key (e.g. ``verbose``, a logger).
        directory: cache directory; default ``FUNCACHE_IPY_DIR`` or ``./.funcache``,
            read on the first call.
        version: a salt for dependencies funcache_ipy cannot see (data read from a
            file or URL, ``eval``); change it to force recomputation.

    Returns:
        A wrapper with the same name, docstring and signature, plus ``cache_info()``,
        ``cache_clear()``, ``uncached(...)``, ``refresh(...)``, ``explain(...)`` and
        ``explain_last()``.

    Raises:
        TypeError: for generator functions (their results are lazy; return a list) or
            when ``ignore`` names a parameter the function does not have.
    """
    if func is None:
        return functools.partial(cache, ignore=ignore, directory=directory, version=version)
    return _CachedFunction(func, frozenset(ignore), directory, version).wrapper


class _CachedFunction:
    """State and behaviour behind one wrapper; the wrapper itself is a plain function."""

    def __init__(
        self,
        func: Callable[..., Any],
        ignore: frozenset[str],
        directory: str | None,
        version: str | None,
    ) -> None:
        if not callable(func):
            raise TypeError(f"cache() expects a function, got {type(func).__name__}")
        qualname = getattr(func, "__qualname__", repr(func))
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise TypeError(
                f"cannot cache generator function {qualname}(): its values are produced "
                "lazily; return a list (or other container) instead"
            )
        self.func = func
        self.name = f"{getattr(func, '__module__', None) or '?'}.{qualname}"
        self.signature = inspect.signature(func)
        unknown = ignore - set(self.signature.parameters)
        if unknown:
            raise TypeError(
                f"ignore= names {sorted(unknown)} that {qualname}() does not have; "
                f"its parameters are {list(self.signature.parameters)}"
            )
        self.ignore = ignore
        self.directory = directory
        self.version = version
        self.tracker = Tracker(func)
        self.hits = 0
        self.misses = 0
        # (key, manifest) of the latest call; manifest None when it hit
        self.last: tuple[str, dict[str, list[str]] | None] | None = None
        kinds = {p.kind for p in self.signature.parameters.values()}
        simple = kinds <= {
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        }
        # Calls passing every parameter positionally skip signature binding.
        self.fast_arity = len(self.signature.parameters) if simple and not ignore else -1
        self.wrapper = self._make_wrapper()

    # -- the wrapper

    def _make_wrapper(self) -> Callable[..., Any]:
        func = self.func
        lookup = self.lookup
        wrapper: Callable[..., Any]

        if inspect.iscoroutinefunction(func):

            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                if not _enabled:
                    return await func(*args, **kwargs)
                key, value, store = lookup(args, kwargs)
                if value is not MISSING:
                    return value
                started = time.perf_counter()
                value = await func(*args, **kwargs)
                return self.remember(store, key, value, started, args, kwargs)

        else:

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                if not _enabled:
                    return func(*args, **kwargs)
                key, value, store = lookup(args, kwargs)
                if value is not MISSING:
                    return value
                started = time.perf_counter()
                value = func(*args, **kwargs)
                return self.remember(store, key, value, started, args, kwargs)

        functools.update_wrapper(wrapper, func)
        helpers = {
            "cache_info": self.cache_info,
            "cache_clear": self.cache_clear,
            "uncached": func,
            "refresh": self.refresh,
            "explain": self.explain,
            "explain_last": self.explain_last,
            "cache_name": self.name,
        }
        wrapper.__dict__.update(helpers)
        _decorated.add(wrapper)
        return wrapper

    def lookup(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[str, Any, Store | None]:
        """Key of this call and the stored value (or MISSING); counts the hit or miss."""
        key = self.key(args, kwargs)
        try:
            store: Store | None = open_store(self.directory)
        except OSError as exc:  # an unusable cache directory must not stop the computation
            warnings.warn(f"{exc}; running {self.name} uncached", FuncacheWarning, stacklevel=3)
            store = None
        value = MISSING if store is None else store.get(key)
        if value is MISSING:
            self.misses += 1
        else:
            self.hits += 1
            self.last = (key, None)
        return key, value, store

    def remember(
        self,
        store: Store | None,
        key: str,
        value: Any,
        started: float,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Store a freshly computed value; always hand it back, even if storing fails."""
        seconds = time.perf_counter() - started
        manifest = self.manifest(args, kwargs)
        self.last = (key, manifest)
        if store is not None:
            store.set(key, value, EntryMeta(self.name, time.time(), seconds, 0, manifest))
        return value

    # -- keys

    def key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        try:
            code = self.tracker.current().digest
        except UnhashableError as exc:
            raise UnhashableError(
                f"{exc} (reached from {self.func.__qualname__}()); pass it as an argument "
                "listed in ignore=, or give its class a __getstate__"
            ) from None
        return call_key(code, self.hash_arguments(args, kwargs), self.version)

    def bound_values(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Arguments by parameter name, defaults applied, ignored ones left out.

        ``f(1, 2)``, ``f(1, b=2)`` and ``f(1)`` with default ``b=2`` give the same values.
        """
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = {}
        for name, value in bound.arguments.items():
            if name in self.ignore:
                continue
            kind = self.signature.parameters[name].kind
            values[name] = (
                dict(sorted(value.items())) if kind is inspect.Parameter.VAR_KEYWORD else value
            )
        return values

    def hash_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        if not kwargs and len(args) == self.fast_arity:
            values: tuple[Any, ...] = args
        else:
            values = tuple(self.bound_values(args, kwargs).values())
        try:
            return hash_content(values)
        except UnhashableError:
            self.raise_unhashable_argument(args, kwargs)
            raise

    def raise_unhashable_argument(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Re-raise with the culprit parameter named (slow path, only on failure)."""
        for name, value in self.bound_values(args, kwargs).items():
            try:
                hash_content(value)
            except UnhashableError as exc:
                raise UnhashableError(
                    f"cannot hash argument {name!r} of {self.func.__qualname__}() "
                    f"(type {type(value).__name__}): {exc}; pass ignore=[{name!r}] to leave "
                    "it out of the key, or give its class a __getstate__"
                ) from None

    def manifest(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, list[str]]:
        """Dependencies and arguments by label, so a later miss can be explained."""
        manifest = {label: list(entry) for label, entry in self.tracker.current().manifest.items()}
        for name, value in self.bound_values(args, kwargs).items():
            shown = repr(value) if isinstance(value, int | float | str | bool | None) else ""
            digest = hash_content(value).hex()
            manifest[f"argument `{name}`"] = [digest, shown if len(shown) <= 60 else ""]
        if self.version is not None:
            manifest["version="] = [self.version, self.version]
        return manifest

    # -- helpers exposed on the wrapper

    def cache_info(self) -> CacheInfo:
        """Hits and misses in this process, entries and bytes stored for this function."""
        entries = open_store(self.directory).entries(self.name)
        return CacheInfo(self.hits, self.misses, len(entries), sum(m.size for _, m in entries))

    def cache_clear(self) -> int:
        """Delete this function's stored entries (all code versions); returns how many."""
        return open_store(self.directory).clear(self.name)

    def refresh(self, *args: Any, **kwargs: Any) -> Any:
        """Recompute this call and overwrite its entry (for ``async`` functions: await it)."""
        key = self.key(args, kwargs)
        store = open_store(self.directory)
        started = time.perf_counter()
        value = self.func(*args, **kwargs)
        if inspect.isawaitable(value):
            return self._refresh_async(store, key, value, started, args, kwargs)
        return self.remember(store, key, value, started, args, kwargs)

    async def _refresh_async(self, store: Store, key: str, awaitable: Any, *rest: Any) -> Any:
        return self.remember(store, key, await awaitable, *rest)

    def explain(self, *args: Any, **kwargs: Any) -> Explanation:
        """Would this call hit? If not, which dependency or argument differs, and how."""
        key = self.key(args, kwargs)
        store = open_store(self.directory)
        if store.meta(key) is not None:
            return Explanation(self.name, hit=True)
        return self._explain_miss(store, key, self.manifest(args, kwargs))

    def explain_last(self) -> Explanation | None:
        """Why the most recent call in this process missed (None before any call)."""
        if self.last is None:
            return None
        key, manifest = self.last
        if manifest is None:
            return Explanation(self.name, hit=True)
        return self._explain_miss(open_store(self.directory), key, manifest)

    def _explain_miss(self, store: Store, key: str, manifest: dict[str, list[str]]) -> Explanation:
        others = [meta.manifest for other, meta in store.entries(self.name) if other != key]
        return Explanation(self.name, hit=False, reasons=tuple(explain_manifests(manifest, others)))
