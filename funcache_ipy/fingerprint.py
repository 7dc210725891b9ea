"""Fingerprint code from live objects: a function's code plus everything it can reach.

Notebook cells have no reliable source file, so a fingerprint is built from the *live*
code object and the objects its names resolve to, recursively: helpers it calls or merely
references, globals it reads, closures, defaults, user classes, local modules. Installed
libraries count by name + version only; other values by content (``hashing``).

A walk also records *guards*: cheap identity checks (namespace entries, function code and
defaults, closure cells, class dicts) plus the mutable values that must be re-hashed. A
``Tracker`` re-checks the guards on every call and walks again only when one fails, so a
warm call costs a few identity comparisons instead of a walk over every helper.

Line numbers, file names, comments and docstrings never reach a digest: bytecode is
read instruction by instruction with constants and names resolved to their values, so
an unused docstring constant is simply never seen.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import dis
import functools
import importlib.metadata
import importlib.util
import operator
import os
import sys
import sysconfig
import threading
import types
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import repeat
from keyword import iskeyword
from pathlib import Path
from typing import Any

import xxhash

from funcache_ipy.hashing import UnhashableError, hash_value, is_immutable

_ABSENT = object()  # a name that resolves to nothing; distinct from a global set to None
_CELL_CONTENTS = operator.attrgetter("cell_contents")
_LOADS_GLOBAL = frozenset({"LOAD_GLOBAL", "LOAD_NAME"})
_LOADS_ATTR = frozenset({"LOAD_ATTR", "LOAD_METHOD"})
# Class-dict entries that describe rather than define behaviour.
_CLASS_NOISE = frozenset(
    {
        "__dict__",
        "__weakref__",
        "__doc__",
        "__module__",
        "__qualname__",
        "__firstlineno__",
        "__static_attributes__",
    }
)
_MAX_REPR = 60
# The shell and kernel are the environment code runs in, not data it computes from:
# their objects (``get_ipython``'s shell) count by name and version, like a library.
_ENVIRONMENT_PACKAGES = frozenset({"IPython", "ipykernel"})
_BUILTIN_CALLABLES = (
    types.BuiltinFunctionType,
    types.WrapperDescriptorType,
    types.MethodWrapperType,
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
)


@dataclass(frozen=True)
class Fingerprint:
    """A digest of code and what it reaches, with a manifest for explaining misses.

    ``manifest`` maps a dependency label (e.g. "global `SCALE`", "function `helper`")
    to ``[digest_hex, short_repr]``; the repr is empty unless the value is small.
    """

    digest: bytes
    manifest: dict[str, list[str]]


# --------------------------------------------------------------------------- code objects


@dataclass(frozen=True)
class _CodeSummary:
    """What one code object (with its nested code) contributes, independent of globals."""

    digest: bytes
    global_names: tuple[str, ...]  # loaded globals, in first-use order
    chains: tuple[tuple[str, ...], ...]  # attribute chains rooted at a global: ("np", "linalg")
    bare_names: frozenset[str]  # globals used other than as the root of a chain
    imports: tuple[str, ...]  # modules imported inside the code


_CODE_SUMMARIES: weakref.WeakKeyDictionary[types.CodeType, _CodeSummary] = (
    weakref.WeakKeyDictionary()
)


def _summarize_code(code: types.CodeType) -> _CodeSummary:
    """Digest a code object's behaviour; memoized because code objects are immutable."""
    summary = _CODE_SUMMARIES.get(code)
    if summary is None:
        summary = _CODE_SUMMARIES[code] = _build_code_summary(code)
    return summary


def _build_code_summary(code: types.CodeType) -> _CodeSummary:
    h = xxhash.xxh3_128()
    n_args = code.co_argcount + code.co_kwonlyargcount
    n_args += bool(code.co_flags & 0x04) + bool(code.co_flags & 0x08)  # *args, **kwargs
    header = (
        code.co_argcount,
        code.co_posonlyargcount,
        code.co_kwonlyargcount,
        code.co_flags,
        code.co_varnames[:n_args],
        code.co_freevars,
    )
    h.update(repr(header).encode())
    names: dict[str, None] = {}
    chains: list[tuple[str, ...]] = []
    bare: set[str] = set()
    imports: list[str] = []
    current_chain: list[str] = []

    def close_chain() -> None:
        if len(current_chain) > 1:
            chains.append(tuple(current_chain))
        elif current_chain:
            bare.add(current_chain[0])
        current_chain.clear()

    for ins in dis.get_instructions(code):
        if ins.opname == "EXTENDED_ARG":
            continue
        h.update(ins.opname.encode())
        if ins.opname in _LOADS_ATTR and current_chain:
            current_chain.append(ins.argval)
            h.update(ins.argval.encode())
            continue
        close_chain()
        arg = ins.argval
        if isinstance(arg, types.CodeType):
            nested = _summarize_code(arg)
            h.update(nested.digest)
            names.update(dict.fromkeys(nested.global_names))
            chains.extend(nested.chains)
            bare.update(nested.bare_names)
            imports.extend(nested.imports)
        elif ins.opcode in dis.hasconst:
            h.update(hash_value(arg))
        else:
            h.update(repr(arg).encode())
        if ins.opname in _LOADS_GLOBAL:
            names[arg] = None
            current_chain.append(arg)
        elif ins.opname == "IMPORT_NAME":
            imports.append(arg)
    close_chain()
    h.update(repr(code.co_exceptiontable if hasattr(code, "co_exceptiontable") else b"").encode())
    return _CodeSummary(h.digest(), tuple(names), tuple(chains), frozenset(bare), tuple(imports))


# ------------------------------------------------------------------- where objects come from


@functools.lru_cache(maxsize=1)
def _library_roots() -> tuple[str, ...]:
    """Directories whose modules are libraries (stdlib, site-packages), not user code."""
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots.update({sys.base_prefix, sys.base_exec_prefix, sys.prefix, sys.exec_prefix})
    roots.add(str(Path(__file__).resolve().parent))  # funcache_ipy itself is a library
    return tuple(os.path.realpath(r) + os.sep for r in roots)


@functools.lru_cache(maxsize=4096)
def _is_local_file(path: str) -> bool:
    return not os.path.realpath(path).startswith(_library_roots())


def _is_local_module(module_name: str | None) -> bool:
    """True for ``__main__`` and modules loaded from files outside stdlib/site-packages."""
    if module_name is None:
        return False
    if module_name == "__main__":
        return True
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    return bool(path) and _is_local_file(path)


def _is_local_code(code: types.CodeType) -> bool:
    """Where a function's code lives decides whether it is walked (not ``__module__``,
    which ``functools.wraps`` copies from the wrapped function onto library wrappers).
    Cells and ``exec``'d code have pseudo file names such as ``<ipython-input-1>``."""
    filename = code.co_filename
    return filename.startswith("<") or _is_local_file(filename)


@functools.lru_cache(maxsize=1)
def _distributions_by_package() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


_PYTHON_VERSION = f"python{sys.version_info[0]}.{sys.version_info[1]}"


@functools.lru_cache(maxsize=1024)
def _library_version(top_level: str) -> str:
    """Version of whatever provides a top-level package, cheapest source first.

    NB. The full scan of installed distributions costs ~60 ms, which would land on the
    first hit of every new kernel; the stdlib, ``__version__`` and a distribution named
    like its package answer almost every case without it.
    """
    if top_level in sys.stdlib_module_names or top_level in sys.builtin_module_names:
        return _PYTHON_VERSION
    version = getattr(sys.modules.get(top_level), "__version__", None)
    if isinstance(version, str):
        return version
    for dist in (top_level, *_distributions_by_package().get(top_level, ())):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def _library_digest(module_name: str, qualname: str) -> bytes:
    """Libraries count by name + version only: their internals are never walked."""
    top = module_name.partition(".")[0]
    return xxhash.xxh3_128(
        f"lib:{module_name}:{qualname}:{_library_version(top)}".encode()
    ).digest()


def _display_name(obj: Any) -> str:
    return (
        getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__name__
    )


def _short_repr(obj: object) -> str:
    if not is_immutable(obj):
        return ""
    text = repr(obj)
    return text if len(text) <= _MAX_REPR else ""


# ---------------------------------------------------------------------------------- guards


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


class _Guards:
    """Cheap checks that tell whether a walk's result still holds.

    Built during a walk, then frozen into C-speed identity checks (``itemgetter``,
    ``map``/``all``); only mutable values are re-hashed on each call.
    """

    def __init__(self) -> None:
        _watch_function_edits()
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

    def cell(self, cell: types.CellType, contents: object) -> None:
        self.cells.append(cell)
        self.cell_contents.append(contents)

    def whole_dict(self, get_dict: Callable[[], Mapping[str, Any]]) -> None:
        current = get_dict()
        self.dicts.append((get_dict, tuple(current), tuple(current.values())))

    def value(self, obj: object, digest: bytes) -> None:
        self.values.append((obj, digest))

    def freeze(self) -> _Guards:
        """Turn the recorded reads into one identity check per namespace."""
        for namespace, seen in self.reads.values():
            present = {name: obj for name, obj in seen.items() if obj is not _ABSENT}
            absent = tuple(name for name, obj in seen.items() if obj is _ABSENT)
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
        return all(_guard_hash(obj) == digest for obj, digest in self.values)


def _identity_check(namespace: Mapping[str, Any], seen: dict[str, object]) -> Callable[[], bool]:
    """A function telling whether each name in ``namespace`` is still the object seen.

    For a dict (module or notebook globals) it is generated code whose globals *are* that
    dict, so each check is CPython's specialized ``LOAD_GLOBAL`` plus ``is``: ~6 ns, about
    a third of ``itemgetter`` + ``map(is_)``. A hit through 100 helpers needs 100 checks.
    Names come from bytecode or ``__dict__`` keys; anything not a plain identifier takes
    the generic path.
    """
    names = list(seen)
    expected = tuple(seen.values())
    if type(namespace) is dict and all(n.isidentifier() and not iskeyword(n) for n in names):
        param = "_expected"
        while param in seen:
            param += "_"
        body = " and ".join(f"{name} is {param}[{i}]" for i, name in enumerate(names)) or "True"
        module = compile(f"def check({param}):\n    return {body}\n", "<funcache guard>", "exec")
        code = next(c for c in module.co_consts if isinstance(c, types.CodeType))
        return types.FunctionType(code, namespace, "check", (expected,))  # type: ignore[arg-type]

    def check() -> bool:
        return all(map(operator.is_, map(namespace.get, names, repeat(_ABSENT)), expected))

    return check


def _guard_hash(obj: object) -> bytes:
    """Hash a mutable value for a guard: code inside it counts by current fingerprint."""
    return hash_value(obj, code_hasher=code_hasher)


# ----------------------------------------------------------------------------------- walk


class _Walk:
    """One traversal from a root object; inlines everything reachable, once each.

    Inlining (rather than reusing other trackers' digests) keeps cycles exact: every guard
    that the root depends on is recorded in the root's own guard set.
    """

    def __init__(self, home_module: str | None) -> None:
        self.home = home_module
        self.guards = _Guards()
        self.manifest: dict[str, list[str]] = {}
        self.done: dict[int, bytes] = {}
        self.active: set[int] = set()

    # -- dispatch

    def dependency(self, obj: object, label: str) -> bytes:
        """Digest of anything a name can resolve to, recorded in the manifest."""
        key = id(obj)
        if key in self.done:
            return self.done[key]
        if key in self.active:  # recursion / mutual recursion: refer, don't descend
            return _cycle_token(obj)
        self.active.add(key)
        try:
            digest = self._dispatch(obj, label)
        finally:
            self.active.discard(key)
        self.done[key] = digest
        return digest

    def _dispatch(self, obj: object, label: str) -> bytes:
        if isinstance(obj, types.FunctionType):
            return self.function(obj, label)
        if isinstance(obj, type):
            return self.klass(obj, label)
        if isinstance(obj, types.ModuleType):
            return self.module(obj, label)
        if isinstance(obj, types.MethodType):
            inner = self.dependency(obj.__func__, label)
            return self.combine(b"method", inner, self.value(obj.__self__, f"{label}.__self__"))
        if isinstance(obj, functools.partial):
            return self.combine(
                b"partial",
                self.dependency(obj.func, label),
                self.value(obj.args, f"{label} (partial args)"),
                self.value(obj.keywords, f"{label} (partial keywords)"),
            )
        if isinstance(obj, _BUILTIN_CALLABLES):
            return self.builtin(obj, label)
        wrapped = _wrapped_of(obj) if callable(obj) else None
        if wrapped is not None:  # e.g. an lru_cache object around a user function
            kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
            return self.combine(kind.encode(), self.dependency(wrapped, label))
        return self.value(obj, label)

    # -- kinds

    def function(self, fn: types.FunctionType, label: str) -> bytes:
        if not _is_local_code(fn.__code__):
            digest = _library_digest(fn.__module__ or "?", fn.__qualname__)
            wrapped = _wrapped_of(fn)
            if wrapped is not None:  # a library decorator around user code
                digest = self.combine(digest, self.dependency(wrapped, label))
            return self.record(label, digest)
        code = fn.__code__
        summary = _summarize_code(code)
        parts = [summary.digest]
        if fn.__defaults__:
            parts.append(self.value(fn.__defaults__, f"defaults of `{fn.__qualname__}`"))
        if fn.__kwdefaults__:
            parts.append(self.value(fn.__kwdefaults__, f"defaults of `{fn.__qualname__}`"))
        for name, cell in zip(code.co_freevars, fn.__closure__ or (), strict=True):
            try:
                contents = cell.cell_contents
            except ValueError:  # not yet assigned
                contents = _ABSENT
            self.guards.cell(cell, contents)
            if contents is not _ABSENT:
                parts.append(self.dependency(contents, f"closure `{name}` of `{fn.__qualname__}`"))
        parts.append(self.names(fn.__globals__, summary, fn.__module__))
        wrapped = _wrapped_of(fn)
        if wrapped is not None:
            parts.append(self.dependency(wrapped, label))
        return self.record(label, self.combine(b"function", *parts))

    def builtin(self, obj: Any, label: str) -> bytes:
        """C functions count by name; a bound one (``CONFIG.get``) also by its owner's state."""
        owner_class = getattr(obj, "__objclass__", None)
        module = getattr(obj, "__module__", None) or getattr(owner_class, "__module__", "builtins")
        digest = _library_digest(module, _display_name(obj))
        owner = getattr(obj, "__self__", None)
        if owner is not None and not isinstance(owner, types.ModuleType):
            digest = self.combine(digest, self.value(owner, label))
        return self.record(label, digest)

    def names(
        self, namespace: Mapping[str, Any], summary: _CodeSummary, module: str | None
    ) -> bytes:
        """Digest every global a code summary reads, resolved in ``namespace``."""
        parts: list[bytes] = []
        for name in summary.global_names:
            obj = namespace.get(name, _ABSENT)
            self.guards.read(namespace, name, obj)
            if obj is _ABSENT:
                obj = getattr(builtins, name, _ABSENT)
                self.guards.read(builtins.__dict__, name, obj)
            label = self.label(module, name, obj)
            if obj is _ABSENT:
                parts.append(
                    self.record(label, xxhash.xxh3_128(f"absent:{name}".encode()).digest())
                )
            elif (
                isinstance(obj, types.ModuleType)
                and _is_local_module(obj.__name__)
                and name not in summary.bare_names
            ):
                for attr_chain in summary.chains:
                    if attr_chain[0] == name:
                        parts.append(self.attribute_chain(obj, attr_chain))
            else:
                parts.append(self.dependency(obj, label))
            parts.append(name.encode())
        for module_name in summary.imports:
            parts.append(self.imported(module_name))
        return self.combine(b"names", *parts)

    def attribute_chain(self, module: types.ModuleType, attr_chain: tuple[str, ...]) -> bytes:
        """Follow ``mod.sub.attr`` through local modules; depend on the first non-module."""
        obj: object = module
        path = attr_chain[0]
        for attr in attr_chain[1:]:
            if not isinstance(obj, types.ModuleType):
                break
            namespace = obj.__dict__
            found = namespace.get(attr, _ABSENT)
            self.guards.read(namespace, attr, found)
            path = f"{path}.{attr}"
            if found is _ABSENT:  # e.g. a submodule imported later; be conservative
                return self.module(obj, path)
            obj = found
        if isinstance(obj, types.ModuleType):
            return self.dependency(obj, f"module `{obj.__name__}`")
        return self.combine(path.encode(), self.dependency(obj, self.label(None, path, obj)))

    def klass(self, cls: type, label: str) -> bytes:
        if not _is_local_module(cls.__module__):
            return self.record(label, _library_digest(cls.__module__, cls.__qualname__))
        self.guards.whole_dict(functools.partial(getattr, cls, "__dict__"))
        parts = [cls.__qualname__.encode()]
        for base in cls.__bases__:
            parts.append(
                self.dependency(base, self.label(base.__module__, base.__qualname__, base))
            )
        for name, member in vars(cls).items():
            if name in _CLASS_NOISE:
                continue
            parts.append(name.encode())
            parts.append(
                self.member(
                    member, self.label(cls.__module__, f"{cls.__qualname__}.{name}", member)
                )
            )
        return self.record(label, self.combine(b"class", *parts))

    def member(self, member: object, label: str) -> bytes:
        if isinstance(member, staticmethod | classmethod):
            return self.combine(
                type(member).__name__.encode(), self.dependency(member.__func__, label)
            )
        if isinstance(member, property):
            funcs = (member.fget, member.fset, member.fdel)
            return self.combine(b"property", *(self.dependency(f, label) for f in funcs if f))
        return self.dependency(member, label)

    def module(self, module: types.ModuleType, label: str) -> bytes:
        name = module.__name__
        if not _is_local_module(name):
            return self.record(label, _library_digest(name, ""))
        # A local module used other than through ``mod.attr``: everything it defines counts.
        self.guards.whole_dict(functools.partial(getattr, module, "__dict__"))
        parts = [name.encode()]
        for attr, obj in list(vars(module).items()):
            if attr.startswith("__") and attr.endswith("__"):
                continue
            parts.append(attr.encode())
            parts.append(self.dependency(obj, self.label(name, attr, obj)))
        return self.record(label, self.combine(b"module", *parts))

    def imported(self, module_name: str) -> bytes:
        """A module imported inside a function body, live if loaded, else by file content."""
        module = sys.modules.get(module_name)
        label = f"module `{module_name}`"
        if module is not None:
            return self.dependency(module, label)
        try:
            spec = importlib.util.find_spec(module_name)
        except (ImportError, ValueError):
            spec = None
        origin = getattr(spec, "origin", None)
        if origin and os.path.isfile(origin) and _is_local_file(origin):
            return self.record(label, xxhash.xxh3_128(Path(origin).read_bytes()).digest())
        return self.record(label, _library_digest(module_name, ""))

    def value(self, obj: object, label: str) -> bytes:
        """Content digest; mutable values are re-hashed by the guards on every call."""
        kind = type(obj)
        if kind.__module__.partition(".")[0] in _ENVIRONMENT_PACKAGES:
            return self.record(label, _library_digest(kind.__module__, kind.__qualname__))
        try:
            digest = hash_value(obj, code_hasher=self.code_inside_value)
        except UnhashableError as exc:
            raise UnhashableError(f"cannot fingerprint {label}: {exc}") from None
        if not is_immutable(obj):
            self.guards.value(obj, _guard_hash(obj))
        return self.record(label, digest, _short_repr(obj))

    def code_inside_value(self, obj: object) -> bytes:
        """Functions/classes found inside values (``OPS = {'a': helper}``) are walked too."""
        return self.dependency(obj, f"{_kind(obj)} `{_display_name(obj)}`")

    # -- bookkeeping

    def label(self, module: str | None, name: str, obj: object) -> str:
        """Manifest label, e.g. "function `helper`" or "global `mylib.SCALE`"."""
        qualified = name if module in (None, self.home) else f"{module}.{name}"
        return f"{_kind(obj)} `{qualified}`"

    def record(self, label: str, digest: bytes, shown: str = "") -> bytes:
        self.manifest.setdefault(label, [digest.hex(), shown])
        return digest

    @staticmethod
    def combine(*parts: bytes) -> bytes:
        h = xxhash.xxh3_128()
        for part in parts:
            h.update(len(part).to_bytes(4, "little"))
            h.update(part)
        return h.digest()


def _kind(obj: object) -> str:
    if isinstance(obj, types.FunctionType | types.MethodType | functools.partial):
        return "function"
    if isinstance(obj, type):
        return "class"
    if isinstance(obj, types.ModuleType):
        return "module"
    return "global"


def _wrapped_of(obj: object) -> Any:
    """The function a ``functools.wraps``-style wrapper wraps, or None."""
    try:
        wrapped = getattr(obj, "__wrapped__", None)
    except Exception:  # NB. arbitrary __getattr__ may raise anything; treat as unwrapped
        return None
    return wrapped if callable(wrapped) and wrapped is not obj else None


# -------------------------------------------------------------------------------- trackers


class Tracker:
    """The current fingerprint of one function, re-walked only when its guards fail.

    Owned by whoever needs repeated fingerprints (the decorator's wrapper), so a
    snapshot of old globals lives no longer than the wrapper itself.
    """

    __slots__ = ("_target", "_state")

    def __init__(self, target: Callable[..., Any]) -> None:
        self._target = target
        # (fingerprint, guards), replaced as one object so other threads never see a mix
        self._state: tuple[Fingerprint, _Guards] | None = None

    def current(self) -> Fingerprint:
        """Fingerprint now; a few identity checks when nothing changed."""
        with _entered(self._target) as reentered:
            if reentered:
                return Fingerprint(_cycle_token(self._target), {})
            state = self._state
            if state is not None and state[1].hold():
                return state[0]
            fingerprint, guards = _walk_root(self._target)
            self._state = (fingerprint, guards)
            return fingerprint


def _walk_root(target: object) -> tuple[Fingerprint, _Guards]:
    walk = _Walk(getattr(target, "__module__", None))
    label = f"{_kind(target)} `{_display_name(target)}`"
    digest = walk.dependency(target, label)
    walk.manifest.pop(label, None)
    if isinstance(target, types.FunctionType):
        own_code = _summarize_code(target.__code__).digest.hex()
        walk.manifest[f"code of `{_display_name(target)}`"] = [own_code, ""]
    return Fingerprint(digest, walk.manifest), walk.guards.freeze()


_ENTERED = threading.local()


@contextlib.contextmanager
def _entered(obj: object) -> Iterator[bool]:
    """Mark ``obj`` as being fingerprinted on this thread; yield True on re-entry.

    NB. Re-hashing a guarded value can meet the very function being fingerprinted (a
    function stored in a list it reads); the re-entrant call gets a stable cycle token.
    """
    busy: set[int] = _ENTERED.__dict__.setdefault("ids", set())
    if id(obj) in busy:
        yield True
        return
    busy.add(id(obj))
    try:
        yield False
    finally:
        busy.discard(id(obj))


def _cycle_token(obj: object) -> bytes:
    return xxhash.xxh3_128(f"cycle:{_display_name(obj)}".encode()).digest()


def fingerprint_function(fn: Callable[..., Any]) -> Fingerprint:
    """Fingerprint of a function: its code and everything its code reaches."""
    return Tracker(fn).current()


_RECENT_LIMIT = 128
_recent_trackers: collections.OrderedDict[int, Tracker] = collections.OrderedDict()
_recent_lock = threading.Lock()


def _recent_tracker(target: Callable[..., Any]) -> Tracker:
    """A tracker for a function or class met as a value, from a small LRU.

    Methods hash ``self`` through its class on every call, so class fingerprints must not
    be re-walked each time. The LRU is bounded because a tracker pins the objects its
    guards watch (a notebook's old frames, after the user rebinds them); keyed by id,
    which cannot be reused while the tracker holds its target.
    """
    with _recent_lock:
        tracker = _recent_trackers.get(id(target))
        if tracker is None:
            tracker = _recent_trackers[id(target)] = Tracker(target)
            if len(_recent_trackers) > _RECENT_LIMIT:
                _recent_trackers.popitem(last=False)
        else:
            _recent_trackers.move_to_end(id(target))
    return tracker


def code_hasher(obj: object) -> bytes:
    """Digest of a function/class/module/code object met as a *value* (e.g. an argument).

    Passed to ``hashing.hash_value``.
    """
    if isinstance(obj, types.CodeType):
        return _summarize_code(obj).digest
    if isinstance(obj, types.FunctionType | type):
        return _recent_tracker(obj).current().digest
    with _entered(obj) as reentered:
        if reentered:
            return _cycle_token(obj)
        return _walk_root(obj)[0].digest


def fingerprint_names(namespace: Mapping[str, Any], names: Iterable[str]) -> Fingerprint:
    """Fingerprint of the objects some names resolve to (a ``%%funcache`` cell's inputs).

    Functions and classes count by code (recursively), modules by name/version or, when
    local, by what they define; everything else by content. Absent names count as absent,
    so defining one later changes the fingerprint.
    """
    walk = _Walk("__main__")
    parts = []
    for name in sorted(set(names)):
        obj = namespace.get(name, _ABSENT)
        if obj is _ABSENT:
            obj = getattr(builtins, name, _ABSENT)
        label = f"`{name}`"
        if obj is _ABSENT:
            digest = walk.record(label, xxhash.xxh3_128(f"absent:{name}".encode()).digest())
        else:
            digest = walk.dependency(obj, label)
        parts += [name.encode(), digest]
    return Fingerprint(walk.combine(b"names", *parts), walk.manifest)
