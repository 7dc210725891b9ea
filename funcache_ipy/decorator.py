"""``@cache``: durable memoization keyed on a call's inputs *and* its implementation.

The wrapper does as little as it can per call: re-check the fingerprint's guards (a few
identity comparisons), hash the arguments, look the key up. Everything that can be
decided once — signature layout, ignored parameters, sync or async — is decided at
decoration time. Settings (directory, limits, remote, on/off) are not kept here: each
wrapper reads them from its :class:`~funcache_ipy.memory.Memory` at each call.

User code always runs outside any ``try`` that handles storage: a user's exception
propagates untouched and is never cached, and a storage fault never loses a result
(the store warns and the computed value is returned).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import pathlib
import sys
import time
import types
import warnings
import weakref
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, ParamSpec, TypeVar, cast

from funcache_ipy import file_sets, files
from funcache_ipy.entry_meta import EntryMeta
from funcache_ipy.file_sets import FileSetIndex
from funcache_ipy.files import FileReads, FileState, file_label
from funcache_ipy.fingerprint import Fingerprint, Tracker, code_hasher, remember_stored
from funcache_ipy.hashing import UnhashableError, hash_items, hash_value
from funcache_ipy.hashing_stream import hash_bytes
from funcache_ipy.keys import NOTHING_STORED, Explanation, NextRun, call_key, explain_manifests
from funcache_ipy.lease import announce_wait, lease
from funcache_ipy.missing import MISSING
from funcache_ipy.remote import RemoteSpec
from funcache_ipy.stand_ins import stand_in
from funcache_ipy.store import Store
from funcache_ipy.walk import shown_value
from funcache_ipy.warning import FuncacheWarning

if TYPE_CHECKING:
    from funcache_ipy.memory import Memory

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_decorated: weakref.WeakSet[CachedFunction[Any, Any]] = weakref.WeakSet()


def decorated_functions() -> list[CachedFunction[Any, Any]]:
    """Live ``@cache`` wrappers, for ``%funcache info`` / ``clear`` / ``explain``."""
    return list(_decorated)


class Tally:
    """One function's calls since they were last taken: the keys it hit, its misses."""

    __slots__ = ("hits", "misses")

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.misses = 0


# None: nobody reports calls (a script), so a call does not count them.
_tallies: dict[CachedFunction[Any, Any], Tally] | None = None


def tally_calls(flag: bool) -> None:
    """Start (or stop) counting calls per function, for a report after each cell."""
    global _tallies
    _tallies = {} if flag else None


def take_tallies() -> dict[CachedFunction[Any, Any], Tally]:
    """The calls counted since the last time, and a fresh count."""
    global _tallies
    taken = _tallies or {}
    if _tallies is not None:
        _tallies = {}
    return taken


class CacheInfo(NamedTuple):
    """Hits and misses of this process; entries and bytes currently on disk."""

    hits: int
    misses: int
    entries: int
    bytes: int


def wrapper_kind(func: Callable[..., Any]) -> type[CachedFunction[Any, Any]]:
    """The wrapper class for ``func``: awaiting for ``async def``, plain otherwise."""
    return AsyncCachedFunction if inspect.iscoroutinefunction(func) else CachedFunction


# The modules a script's functions live in: ``__mp_main__`` is the script re-imported by a
# multiprocessing "spawn" worker. Both name the same functions.
_MAIN_MODULES = frozenset({"__main__", "__mp_main__"})
# The attribute through which the standard pickler finds a wrapped function by name.
_PICKLED_FUNCTION = "__funcache_function__"
_ARGUMENT = "argument"  # manifest labels of arguments start so: argument `x`


class _Call:
    """What one lookup learned: the key, the stored value or MISSING, and the inputs."""

    __slots__ = (
        "arg_paths",
        "arguments",
        "digest",
        "fingerprint",
        "key",
        "key_files",
        "names",
        "parts",
        "store",
        "value",
    )

    def __init__(
        self,
        key: str,
        fingerprint: Fingerprint,
        names: tuple[str, ...],
        arguments: tuple[Any, ...],
        parts: list[bytes],
        key_files: list[FileState],
        digest: bytes,
        arg_paths: list[str],
    ) -> None:
        self.key = key
        self.fingerprint = fingerprint
        self.names = names
        self.arguments = arguments
        self.parts = parts  # each argument's part of the key (see hashing.hash_items)
        self.key_files = key_files  # files= matches and Path arguments, hashed into key
        self.digest = digest  # of the arguments
        self.arg_paths = arg_paths  # files the Path arguments name
        self.store: Store | None = None
        self.value: Any = MISSING


class CachedFunction(Generic[P, R]):
    """What ``@cache`` returns: the function, cached, with its helpers.

    Generic in the function's parameters and return type, as typeshed types
    ``functools.lru_cache``: a type checker sees calls with the function's own signature
    and the helpers below.

    A class rather than a closure so that it pickles as "this function with these
    options" (``__reduce__``): a worker process rebuilds it, computes the same key, hits
    what the parent stored and stores what the parent will hit. A pickled closure would
    carry a copy of this module's globals (a second ``MISSING``) and the guards' snapshot
    of the whole notebook namespace.
    """

    __name__: str
    __qualname__: str
    __doc__: str | None
    __wrapped__: Callable[P, R]

    def __init__(
        self,
        memory: Memory,
        func: Callable[P, R],
        ignore: frozenset[str],
        directory: str | None,
        version: str | None,
        files: tuple[str, ...] = (),
        remote: str | RemoteSpec | None = None,
    ) -> None:
        if not callable(func):
            raise TypeError(f"cache() expects a function, got {type(func).__name__}")
        qualname = getattr(func, "__qualname__", repr(func))
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise TypeError(
                f"cannot cache generator function {qualname}(): its values are produced "
                "lazily; return a list (or other container) instead"
            )
        functools.update_wrapper(self, func)
        self._func = func
        self.memory = memory  # whose settings it uses, read at each call
        module = getattr(func, "__module__", None) or "?"
        self.cache_name = f"{'__main__' if module in _MAIN_MODULES else module}.{qualname}"
        self._signature = inspect.signature(func)
        unknown = ignore - set(self._signature.parameters)
        if unknown:
            raise TypeError(
                f"ignore= names {sorted(unknown)} that {qualname}() does not have; "
                f"its parameters are {list(self._signature.parameters)}"
            )
        self._ignore = ignore
        self._directory = directory
        self._version = version
        self._files = files
        self._remote = remote
        self._tracker = Tracker(func)
        self._file_sets = FileSetIndex()
        self._hits = 0
        self._misses = 0
        # The latest call: (entry key, manifest or None when it hit, its arguments' digest,
        # its Path arguments). NB. Arguments by digest only: a big one is not kept alive.
        self._last: tuple[str, dict[str, list[str]] | None, bytes, list[str]] | None = None
        kinds = {p.kind for p in self._signature.parameters.values()}
        simple = kinds <= {
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        }
        # Calls passing every parameter positionally skip signature binding.
        self._positional = tuple(self._signature.parameters) if simple and not ignore else None
        _decorated.add(self)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        __tracebackhide__ = True  # IPython shows the user's frames, not these
        if not self.memory.enabled:
            return self._func(*args, **kwargs)
        call = self._lookup(args, kwargs)
        if call.value is not MISSING:
            return cast(R, call.value)
        with self._leased(call):
            if call.value is not MISSING:
                return cast(R, call.value)
            return self._compute(call, args, kwargs)

    def _compute(self, call: _Call, args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        """Run the function for ``call``, tracking the files it reads; store the result.

        NB. The manifest is built before the body: nothing after it may fail, or a
        computed result would be lost.
        """
        __tracebackhide__ = True
        manifest = self._manifest(call)
        started = time.perf_counter()
        with self._tracking(call) as reads:
            value = self._func(*args, **kwargs)
        return cast(R, self._remember(call, manifest, value, started, reads))

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        """Bind like a function, so ``@cache`` works on methods."""
        return self if instance is None else types.MethodType(self, instance)

    def __repr__(self) -> str:
        return f"<cached function {self.cache_name}>"

    # -- pickling: rebuilt in the worker, not copied

    def __reduce__(self) -> str | tuple[Any, ...]:
        module = self.__module__
        if module not in _MAIN_MODULES and _resolve(module, self.__qualname__) is self:
            return str(self.__qualname__)  # importable: the worker imports it, as lru_cache does
        options = (
            self._ignore,
            self._worker_directory(),
            self._version,
            self.__qualname__,
            self._files,
            self._worker_remote(),
        )
        return (_rebuild, (self.memory, self._pickled_function(), *options))

    def _pickled_function(self) -> Callable[..., Any]:
        """The function in a form both picklers take.

        NB. The standard pickler (multiprocessing) stores functions by name; cloudpickle
        (joblib, Dask, Ray) copies ``__main__``'s by value. By name, ``f`` is this wrapper,
        not the function, so a twin that shares the function's code, globals and
        attributes is exposed as ``f.__funcache_function__`` and named that way.
        """
        func = self._func
        name = getattr(func, "__qualname__", None)
        if not isinstance(func, types.FunctionType) or (
            name is not None and _resolve(func.__module__, name) is func
        ):
            return func
        twin = types.FunctionType(
            func.__code__, func.__globals__, func.__name__, func.__defaults__, func.__closure__
        )
        twin.__kwdefaults__ = func.__kwdefaults__
        twin.__dict__ = func.__dict__  # shared, so attributes count the same in the worker
        twin.__module__ = func.__module__
        twin.__qualname__ = f"{self.__qualname__}.{_PICKLED_FUNCTION}"
        twin.__doc__ = func.__doc__
        twin.__annotations__ = func.__annotations__
        self.__dict__[_PICKLED_FUNCTION] = twin
        return twin

    def _worker_directory(self) -> str | None:
        """The parent's resolved cache directory, so workers in another cwd share it."""
        try:
            return str(self._open_store().directory)
        except OSError:
            return self._directory

    def _worker_remote(self) -> str | RemoteSpec | None:
        """The parent's remote and trusted keys, so workers share its remote tier."""
        try:
            tier = self._open_store().remote
        except OSError:
            return self._remote
        return tier.for_worker() if tier is not None else self._remote

    def _open_store(self) -> Store:
        """This function's store: its memory's, unless it has a directory= of its own."""
        return self.memory.store(self._directory, self._remote)

    if not TYPE_CHECKING:  # NB. else a type checker would accept any attribute

        def __getattr__(self, name: str) -> Any:
            # NB. Reached only for missing attributes: a spawn worker looking up
            # ``f.__funcache_function__`` by name before this process pickled anything.
            if name == _PICKLED_FUNCTION:
                return self._pickled_function()
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- one call

    def _lookup(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Call:
        """Key of this call and the stored value (or MISSING); counts the hit or miss."""
        __tracebackhide__ = True
        call = self._key(args, kwargs)
        try:
            call.store = self._open_store()
        except OSError as exc:  # an unusable cache directory must not stop the computation
            warnings.warn(
                f"{exc}; running {self.cache_name} uncached", FuncacheWarning, stacklevel=3
            )
        if call.key_files:  # an enclosing cached run depends on them too
            files.note_read(state.path for state in call.key_files)
        if call.store is not None:
            self._find(call, call.store)
        if call.value is MISSING:
            self._count_miss()
        else:
            self._count_hit()
        return call

    def _count_hit(self) -> None:
        self._hits += 1
        if _tallies is not None and self._last is not None:
            _tallies.setdefault(self, Tally()).hits.append(self._last[0])

    def _count_miss(self, undo: bool = False) -> None:
        step = -1 if undo else 1
        self._misses += step
        if _tallies is not None:
            _tallies.setdefault(self, Tally()).misses += step

    def _find(self, call: _Call, store: Store) -> None:
        """Set ``call.value`` to the stored value (plain, or by its files' contents)."""
        found = self._file_sets.find(store, call.key, store.get)
        call.value = found.value
        if call.value is not MISSING:
            self._last = (found.key, None, call.digest, call.arg_paths)

    @contextlib.contextmanager
    def _leased(self, call: _Call) -> Iterator[None]:
        """Hold the key's lease while computing; if another process held it, look again.

        Kernels and workers that miss one key at once then compute it once: the others
        wait, and hit (``call.value`` is set) when the holder has stored it.
        """
        if call.store is None:
            yield
            return

        waiting = announce_wait(f"computing {self.cache_name}")
        with lease(call.store.directory, call.key, on_wait=waiting) as waited:
            if waited:
                self._find(call, call.store)
                if call.value is not MISSING:
                    self._count_miss(undo=True)
                    self._count_hit()
            yield

    def _tracking(self, call: _Call) -> contextlib.AbstractContextManager[FileReads]:
        """Record the files the run opens (the cache directory's own left out)."""
        excluded = [call.store.directory] if call.store is not None else []
        return files.track(excluded, call.key_files)

    def _remember(
        self,
        call: _Call,
        manifest: dict[str, list[str]],
        value: Any,
        started: float,
        reads: FileReads,
    ) -> Any:
        """Store a freshly computed value; always hand it back, even if storing fails.

        A run that read files is stored under a key that also covers their contents,
        and listed in the call key's record of file sets.
        """
        seconds = time.perf_counter() - started
        store = call.store
        settled = reads.settle(store.output_limit if store is not None else 0)
        inputs, outputs = settled.inputs, settled.outputs
        manifest = {**manifest, **file_sets.manifest_of(inputs)}
        entry = file_sets.entry_key(call.key, inputs, bool(outputs))
        self._last = (entry, manifest, call.digest, call.arg_paths)
        if settled.unstable:
            warnings.warn(
                f"{self.cache_name}: {file_sets.changed_while_running(settled.unstable)}; "
                "the result was returned but not cached",
                FuncacheWarning,
                stacklevel=3,
            )
            return value
        if store is not None:
            meta = EntryMeta(self.cache_name, time.time(), seconds, 0, manifest)
            if self._file_sets.put(store, call.key, inputs, value, meta, outputs):
                remember_stored([value])  # so it keys as the copy a hit returns
        return value

    # -- keys

    def _key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Call:
        __tracebackhide__ = True
        try:
            fingerprint = self._tracker.current()
        except UnhashableError as exc:
            raise UnhashableError(
                f"{exc} (reached from {self._func.__qualname__}()); pass it as an argument "
                "listed in ignore=, or give its class a __getstate__"
            ) from None
        names = self._positional
        if names is None or kwargs or len(args) != len(names):
            bound = self._bound_values(args, kwargs)
            names, args = tuple(bound), tuple(bound.values())
        try:
            # NB. Per-argument digests, so that a value stored earlier can key as its copy.
            digest, parts = hash_items(args, code_hasher=code_hasher, stand_in=stand_in)
        except UnhashableError as exc:
            raise self._unhashable_argument(names, args, exc) from None
        arg_paths = files.named_files(args)
        key_files = self._key_files(arg_paths, fingerprint)
        known = file_sets.known_digest(key_files)
        key = call_key(fingerprint.digest, digest, self._version, known)
        return _Call(key, fingerprint, names, args, parts, key_files, digest, arg_paths)

    def _key_files(self, arg_paths: list[str], fingerprint: Fingerprint) -> list[FileState]:
        """Files counted before the run: ``files=`` matches, ``Path`` arguments and ``Path``
        globals the code reaches.

        Raises:
            OSError: such a file exists but cannot be read; the message names it.
        """
        if not arg_paths and not fingerprint.paths and not self._files:
            return []  # NB. the common case, on every call
        globals_paths = files.named_files(map(pathlib.Path, fingerprint.paths))
        paths = list(dict.fromkeys([*arg_paths, *globals_paths]))
        states, failed = files.states_of(paths)
        if self._files:
            declared, failed_declared = files.declared_states(self._files)
            states += declared
            failed += failed_declared
        if failed:
            raise OSError(
                f"cannot read {failed[0]}, a file {self._func.__qualname__}() depends on; "
                "make it readable or leave it out of files="
            )
        return states

    def _bound_values(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Arguments by parameter name, defaults applied, ignored ones left out.

        ``f(1, 2)``, ``f(1, b=2)`` and ``f(1)`` with default ``b=2`` give the same values.
        """
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = {}
        for name, value in bound.arguments.items():
            if name in self._ignore:
                continue
            kind = self._signature.parameters[name].kind
            values[name] = (
                dict(sorted(value.items())) if kind is inspect.Parameter.VAR_KEYWORD else value
            )
        return values

    def _unhashable_argument(
        self, names: tuple[str, ...], args: tuple[Any, ...], exc: UnhashableError
    ) -> UnhashableError:
        """The error again, naming the culprit parameter (the path starts at its index)."""
        try:
            index = int(exc.path[1:].partition("]")[0])
        except ValueError:
            return exc
        name, value = names[index], args[index]
        try:
            hash_value(value, code_hasher=code_hasher)  # again alone: the path inside it
        except UnhashableError as inner:
            exc = inner
        return UnhashableError(
            f"cannot hash argument {name!r} of {self._func.__qualname__}() "
            f"(type {type(value).__name__}): {exc}; pass ignore=[{name!r}] to leave it out "
            "of the key, or give its class a __getstate__"
        )

    def _manifest(self, call: _Call) -> dict[str, list[str]]:
        """Dependencies and arguments by label, so a later miss can be explained.

        Built from what the key was computed from, *before* the body runs: nothing after
        the body may fail, or a computed result would be lost.
        """
        arguments = {}
        for name, value, part in zip(call.names, call.arguments, call.parts, strict=True):
            digest = part[1:] if part.startswith(b"#") else hash_bytes(part)  # else a scalar
            arguments[f"{_ARGUMENT} `{name}`"] = [digest.hex(), shown_value(value)]
        return self._code_manifest(call.fingerprint, arguments, call.key_files)

    def _code_manifest(
        self,
        fingerprint: Fingerprint,
        arguments: dict[str, list[str]],
        key_files: list[FileState],
    ) -> dict[str, list[str]]:
        """The manifest of a call: dependencies, ``arguments``' lines, options, key files."""
        manifest = {label: list(entry) for label, entry in fingerprint.manifest.items()}
        manifest.update(arguments)
        if self._version is not None:
            manifest["version="] = [self._version, self._version]
        if self._files:
            manifest["files="] = [" ".join(self._files), ", ".join(self._files)]
        manifest.update(file_sets.manifest_of(key_files))
        return manifest

    # -- helpers exposed on the wrapper

    @property
    def uncached(self) -> Callable[P, R]:
        """The original function: call it to bypass the cache."""
        return self._func

    def cache_info(self) -> CacheInfo:
        """Hits and misses in this process, entries and bytes stored for this function."""
        entries = self._open_store().entries(self.cache_name)
        results = [meta for _, meta in entries if not file_sets.is_record(meta)]
        return CacheInfo(
            self._hits, self._misses, len(results), sum(meta.size for _, meta in entries)
        )

    def seconds_saved(self, keys: Iterable[str]) -> float:
        """What computing the entries ``keys`` took when they were stored (hits saved it)."""
        store = self._open_store()
        metas = [store.meta(key) for key in keys]
        return sum(meta.compute_seconds for meta in metas if meta is not None)

    def cache_clear(self) -> int:
        """Delete this function's stored entries (all code versions); returns how many.

        Resets the hit and miss counts too, as ``functools`` does.
        """
        self._hits = self._misses = 0
        return self._open_store().clear(self.cache_name)

    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Recompute this call and overwrite its entry (for ``async`` functions: await it)."""
        __tracebackhide__ = True
        call = self._key(args, kwargs)
        call.store = self._open_store()
        return self._compute(call, args, kwargs)

    def explain(self, *args: P.args, **kwargs: P.kwargs) -> Explanation:
        """Would this call hit? If not, which dependency or argument differs, and how."""
        __tracebackhide__ = True
        call = self._key(args, kwargs)
        store = self._open_store()
        if file_sets.would_use(store, call.key, self._file_sets.stored) is not None:
            return Explanation(self.cache_name, hit=True)
        manifest = self._files_now(store, call.key, self._manifest(call))
        return self._explain_miss(store, call.key, manifest)

    def explain_next(self) -> NextRun | None:
        """Would calling this function again with its last call's arguments hit, now?

        The code, globals and files it depends on are taken as they are now, the
        arguments by the digest the last call kept. None before any call in this process.
        """
        __tracebackhide__ = True
        if self._last is None:
            return self._explain_unseen()
        last_key, _, digest, arg_paths = self._last
        fingerprint = self._tracker.current()
        key_files = self._key_files(arg_paths, fingerprint)
        known = file_sets.known_digest(key_files)
        key = call_key(fingerprint.digest, digest, self._version, known)
        store = self._open_store()
        used = file_sets.would_use(store, key, self._file_sets.stored)
        if used is not None:
            return NextRun(self.cache_name, True, (), used.created, used.compute_seconds)
        # The arguments' lines as the last call's entry has them (its values are not kept).
        last = store.meta(last_key)
        arguments = {
            label: entry
            for label, entry in (last.manifest if last is not None else {}).items()
            if label.startswith(_ARGUMENT)
        }
        manifest = self._files_now(
            store, key, self._code_manifest(fingerprint, arguments, key_files)
        )
        reasons = self._explain_miss(store, key, manifest).reasons
        if last is None:  # NB. the arguments are unknown, not gone
            reasons = tuple(r for r in reasons if not r.startswith(_ARGUMENT))
        return NextRun(self.cache_name, False, reasons or (NOTHING_STORED,))

    def _explain_unseen(self) -> NextRun:
        """Before this definition's first call (a restarted kernel, a re-run ``def``):
        would a call with the arguments of one of its stored entries hit?

        The next call's arguments are unknown and entries keep per-argument digests only,
        not the combined one a key needs: so the code, globals and files are compared
        with each stored entry's, the arguments left out (files it read by a path
        relative to the cwd are looked up from the cwd now).
        """
        name = f"{self.cache_name} with a stored call's arguments"
        store = self._open_store()
        stored = [m for _, m in store.entries(self.cache_name) if not file_sets.is_record(m)]
        if not stored:
            return NextRun(self.cache_name, False, (NOTHING_STORED,))
        fingerprint = self._tracker.current()
        now = self._code_manifest(fingerprint, {}, self._key_files([], fingerprint))
        read = [files.labelled_path(label) for label in stored[-1].manifest]
        states, _ = files.states_of(path for path in read if path and file_label(path) not in now)
        now.update(file_sets.manifest_of(states))
        candidates = [
            {
                label: line
                for label, line in meta.manifest.items()
                if not label.startswith(_ARGUMENT)
            }
            for meta in stored
        ]
        reasons = explain_manifests(now, candidates)
        if reasons:
            return NextRun(name, False, tuple(reasons))
        digests = {label: line[0] for label, line in now.items()}
        same = [
            meta
            for meta, lines in zip(stored, candidates, strict=True)
            if {label: line[0] for label, line in lines.items()} == digests
        ]
        return NextRun(name, True, (), same[-1].created, same[-1].compute_seconds)

    def _files_now(
        self, store: Store, key: str, manifest: dict[str, list[str]]
    ) -> dict[str, list[str]]:
        """``manifest`` plus the files the latest stored run of ``key`` read, as they are now."""
        sets = self._file_sets.stored(store, key)
        if sets:
            states, _ = files.states_of(state.path for state in sets[0].states)
            manifest.update(file_sets.manifest_of(states))
        return manifest

    def explain_last(self) -> Explanation | None:
        """Why the most recent call in this process missed (None before any call)."""
        if self._last is None:
            return None
        key, manifest, *_ = self._last
        if manifest is None:
            return Explanation(self.cache_name, hit=True)
        return self._explain_miss(self._open_store(), key, manifest)

    def _explain_miss(self, store: Store, key: str, manifest: dict[str, list[str]]) -> Explanation:
        others = file_sets.other_results(store, self.cache_name, key)
        return Explanation(
            self.cache_name, hit=False, reasons=tuple(explain_manifests(manifest, others))
        )


class AsyncCachedFunction(CachedFunction[P, Coroutine[Any, Any, T]]):
    """``@cache`` on an ``async def``: the awaited value is what is cached."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        if sys.version_info >= (3, 12):  # so inspect.iscoroutinefunction(wrapper) holds
            inspect.markcoroutinefunction(self)

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        __tracebackhide__ = True
        if not self.memory.enabled:
            return await self._func(*args, **kwargs)
        call = self._lookup(args, kwargs)
        if call.value is not MISSING:
            return cast(T, call.value)
        with self._leased(call):
            if call.value is not MISSING:
                return cast(T, call.value)
            return await self._compute(call, args, kwargs)

    async def _compute(  # the same, awaited
        self, call: _Call, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        __tracebackhide__ = True
        manifest = self._manifest(call)
        started = time.perf_counter()
        with self._tracking(call) as reads:
            value = await self._func(*args, **kwargs)
        return cast(T, self._remember(call, manifest, value, started, reads))


def _resolve(module: str, qualname: str) -> object:
    """What ``module.qualname`` names in this process (None if nothing): pickle's lookup."""
    obj: object = sys.modules.get(module)
    for part in qualname.split("."):
        if obj is None or part == "<locals>":
            return None
        obj = getattr(obj, part, None)
    return obj


def _rebuild(
    memory: Memory,
    func: Callable[..., Any],
    ignore: frozenset[str],
    directory: str | None,
    version: str | None,
    qualname: str,
    files: tuple[str, ...] = (),
    remote: str | RemoteSpec | None = None,
) -> CachedFunction[Any, Any]:
    """Unpickle a cached function: this process's own wrapper if it has one, else a new one."""
    existing = _resolve(getattr(func, "__module__", "") or "", qualname)
    if isinstance(existing, CachedFunction) and existing.uncached in (
        func,
        existing.__dict__.get(_PICKLED_FUNCTION),
    ):
        return existing
    if isinstance(func, types.FunctionType) and func.__qualname__ != qualname:
        func.__qualname__ = qualname  # a twin copied by value: give it its own name back
    return wrapper_kind(func)(memory, func, ignore, directory, version, files, remote)
