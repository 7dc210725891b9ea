"""One walk: the digest of a root object and everything it reaches, plus its guards.

Notebook cells have no reliable source file, so a fingerprint is built from the *live*
code object and the objects its names resolve to, recursively: helpers it calls or merely
references, globals it reads, closures, defaults, user classes, local modules. Installed
libraries count by name + version only (``origins``); other values by content
(``hashing``). Every read the digest depends on is recorded in the walk's ``Guards``.
"""

from __future__ import annotations

import builtins
import functools
import importlib.util
import os
import pathlib
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any

import xxhash

from funcache_ipy.bytecode import CodeSummary, summarize_code
from funcache_ipy.guards import ABSENT, Guards
from funcache_ipy.hashing import UnhashableError, hash_value, is_immutable
from funcache_ipy.origins import is_local_function, is_local_module, source_digest
from funcache_ipy.stand_ins import stand_in
from funcache_ipy.versions import library_digest

# Class-dict entries that describe rather than define behaviour; ``_abc_impl`` is the
# ABC machinery's private subclass cache (a C object that changes as isinstance runs),
# ``__slotnames__`` copyreg's cache of the slots (set on the class the first time an
# instance is pickled or hashed, so counting it made every class key change once).
_CLASS_NOISE = frozenset(
    {
        "__dict__",
        "__weakref__",
        "__doc__",
        "__module__",
        "__qualname__",
        "__firstlineno__",
        "__static_attributes__",
        "_abc_impl",
        "__slotnames__",
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


def display_name(obj: Any) -> str:
    """How the manifest names an object: qualname, else name, else its type's name."""
    return (
        getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__name__
    )


def shown_value(obj: object) -> str:
    """How a manifest shows a value: its repr when immutable and short, else ``""``.

    NB. Sizes are checked before ``repr``: a 100M-character string would be copied only to
    be thrown away, and ``repr(10**5000)`` raises (CPython's int-to-str limit).
    """
    if not is_immutable(obj) or not _small(obj):
        return ""
    text = repr(obj)
    return text if len(text) <= _MAX_REPR else ""


def _small(obj: object) -> bool:
    if isinstance(obj, str | bytes):
        return len(obj) <= _MAX_REPR
    if isinstance(obj, int):
        return obj.bit_length() <= 4 * _MAX_REPR
    if isinstance(obj, tuple | frozenset):
        return len(obj) <= _MAX_REPR and all(map(_small, obj))
    return True


class Walk:
    """One traversal from a root object; inlines everything reachable, once each.

    Inlining (rather than reusing other trackers' digests) keeps cycles exact: every guard
    that the root depends on is recorded in the root's own guard set.

    Args:
        home_module: module of the root; names from it are labelled unqualified.
        rehash: how the guards re-hash mutable values (see ``Guards``).
    """

    def __init__(self, home_module: str | None, rehash: Callable[[object], bytes] | None) -> None:
        self.home = home_module
        self.guards = Guards(rehash)
        self.manifest: dict[str, list[str]] = {}
        self.paths: list[str] = []  # ``Path`` values reached by name: files counted by content
        self.done: dict[int, bytes] = {}
        self.active: set[int] = set()

    # -- dispatch

    def dependency(self, obj: object, label: str) -> bytes:
        """Digest of anything a name can resolve to, recorded in the manifest."""
        key = id(obj)
        if key in self.done:
            return self.done[key]
        if key in self.active:  # recursion / mutual recursion: refer, don't descend
            return cycle_token(obj)
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
        if not is_local_function(fn):
            digest = library_digest(fn.__module__ or "?", fn.__qualname__)
            wrapped = _wrapped_of(fn)
            if wrapped is not None:  # a library decorator around user code
                digest = self.combine(digest, self.dependency(wrapped, label))
            registry = getattr(fn, "registry", None)
            if isinstance(registry, types.MappingProxyType):  # functools.singledispatch
                digest = self.combine(digest, self.value(registry, f"{label} registrations"))
            return self.record(label, digest)
        code = fn.__code__
        summary = summarize_code(code)
        parts = [summary.digest]
        if fn.__defaults__:
            parts.append(self.value(fn.__defaults__, f"defaults of `{fn.__qualname__}`"))
        if fn.__kwdefaults__:
            parts.append(self.value(fn.__kwdefaults__, f"defaults of `{fn.__qualname__}`"))
        for name, cell in zip(code.co_freevars, fn.__closure__ or (), strict=True):
            try:
                contents = cell.cell_contents
            except ValueError:  # not yet assigned
                contents = ABSENT
            self.guards.cell(cell, contents)
            if contents is not ABSENT:
                parts.append(self.dependency(contents, f"closure `{name}` of `{fn.__qualname__}`"))
        if fn.__dict__:  # attributes set on the function (``helper.scale = 3``)
            parts.append(self.value(fn.__dict__, f"attributes of `{fn.__qualname__}`"))
        parts.append(self.names(fn.__globals__, summary, fn.__module__))
        wrapped = _wrapped_of(fn)
        if wrapped is not None:
            parts.append(self.dependency(wrapped, label))
        return self.record(label, self.combine(b"function", *parts))

    def builtin(self, obj: Any, label: str) -> bytes:
        """C functions count by name; a bound one (``CONFIG.get``) also by its owner's state."""
        owner_class = getattr(obj, "__objclass__", None)
        module = getattr(obj, "__module__", "") or getattr(owner_class, "__module__", "builtins")
        digest = library_digest(module, display_name(obj))
        owner = getattr(obj, "__self__", None)
        if owner is not None and not isinstance(owner, types.ModuleType):
            digest = self.combine(digest, self.value(owner, label))
        return self.record(label, digest)

    def names(
        self, namespace: Mapping[str, Any], summary: CodeSummary, module: str | None
    ) -> bytes:
        """Digest every global a code summary reads, resolved in ``namespace``."""
        parts: list[bytes] = []
        for name in summary.global_names:
            obj = namespace.get(name, ABSENT)
            self.guards.read(namespace, name, obj)
            if obj is ABSENT:
                obj = getattr(builtins, name, ABSENT)
                self.guards.read(builtins.__dict__, name, obj)
            label = self.label(module, name, obj)
            if obj is ABSENT:
                parts.append(
                    self.record(label, xxhash.xxh3_128(f"absent:{name}".encode()).digest())
                )
            elif (
                isinstance(obj, types.ModuleType)
                and is_local_module(obj.__name__)
                and name not in summary.bare_names
                and any(attr_chain[0] == name for attr_chain in summary.chains)
            ):
                for attr_chain in summary.chains:
                    if attr_chain[0] == name:
                        parts.append(self.attribute_chain(obj, attr_chain))
            else:
                parts.append(self.dependency(obj, label))
            parts.append(name.encode())
        for module_name, level in summary.imports:
            parts.append(self.imported(module_name, level, namespace))
        return self.combine(b"names", *parts)

    def attribute_chain(self, module: types.ModuleType, attr_chain: tuple[str, ...]) -> bytes:
        """Follow ``mod.sub.attr`` through local modules; depend on the first non-module."""
        obj: object = module
        path = attr_chain[0]
        for attr in attr_chain[1:]:
            if not isinstance(obj, types.ModuleType):
                break
            namespace = obj.__dict__
            found = namespace.get(attr, ABSENT)
            self.guards.read(namespace, attr, found)
            path = f"{path}.{attr}"
            if found is ABSENT:  # e.g. a submodule imported later; be conservative
                return self.module(obj, path)
            obj = found
        if isinstance(obj, types.ModuleType):
            return self.dependency(obj, f"module `{obj.__name__}`")
        return self.combine(path.encode(), self.dependency(obj, self.label(None, path, obj)))

    def klass(self, cls: type, label: str) -> bytes:
        if not is_local_module(cls.__module__):
            return self.record(label, library_digest(cls.__module__, cls.__qualname__))
        self.guards.whole_dict(functools.partial(getattr, cls, "__dict__"))
        parts = [cls.__qualname__.encode()]
        if type(cls) is not type:  # a metaclass shapes the class's behaviour too
            parts.append(self.dependency(type(cls), self.label(None, type(cls).__qualname__, cls)))
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
        if isinstance(member, functools.cached_property):  # its lock is not behaviour
            return self.combine(b"cached_property", self.dependency(member.func, label))
        if isinstance(member, property):
            funcs = (member.fget, member.fset, member.fdel)
            return self.combine(b"property", *(self.dependency(f, label) for f in funcs if f))
        return self.dependency(member, label)

    def module(self, module: types.ModuleType, label: str) -> bytes:
        name = module.__name__
        if not is_local_module(name):
            return self.record(label, library_digest(name, ""))
        # A local module used other than through ``mod.attr``: everything it defines counts.
        self.guards.whole_dict(functools.partial(getattr, module, "__dict__"))
        parts = [name.encode()]
        for attr, obj in list(vars(module).items()):
            if attr.startswith("__") and attr.endswith("__"):
                continue
            label = self.label(name, attr, obj)
            parts.append(attr.encode())
            try:
                parts.append(self.dependency(obj, label))
            except UnhashableError:  # NB. a module-level lock or connection: a resource
                kind = type(obj)  # used by the module's code, not data; counts by type
                parts.append(self.record(label, library_digest(kind.__module__, kind.__qualname__)))
        return self.record(label, self.combine(b"module", *parts))

    def imported(self, module_name: str, level: int, namespace: Mapping[str, Any]) -> bytes:
        """A module imported by the code itself: live if loaded, else by its source files.

        Relative imports (``from .b import g``) resolve against the importing module's
        package.
        """
        if level:
            package = namespace.get("__package__") or ""
            try:
                module_name = importlib.util.resolve_name("." * level + module_name, package)
            except (ImportError, ValueError):
                return xxhash.xxh3_128(f"unresolvable:{level}:{module_name}".encode()).digest()
        module = sys.modules.get(module_name)
        # NB. Once the code has imported it, the live module (reloadable) is what counts.
        self.guards.read(sys.modules, module_name, ABSENT if module is None else module)
        label = f"module `{module_name}`"
        if module is not None:
            return self.dependency(module, label)
        digest = source_digest(module_name)
        return self.record(label, digest or library_digest(module_name, ""))

    def value(self, obj: object, label: str) -> bytes:
        """Content digest; mutable values are re-hashed by the guards on every call.

        A value the cache stored digests as its copy (``stand_ins``): a value reached by
        name is a top level of the key, like an argument.
        """
        kind = type(obj)
        if kind.__module__.partition(".")[0] in _ENVIRONMENT_PACKAGES:
            return self.record(label, library_digest(kind.__module__, kind.__qualname__))
        try:
            digest = stand_in(obj, hash_value(obj, code_hasher=self.code_inside_value))
        except UnhashableError as exc:
            raise UnhashableError(f"cannot fingerprint {label}: {exc}") from None
        if not is_immutable(obj):
            self.guards.value(obj)
        if isinstance(obj, pathlib.PurePath):
            self.paths.append(os.fspath(obj))
        return self.record(label, digest, shown_value(obj))

    def code_inside_value(self, obj: object) -> bytes:
        """Functions/classes found inside values (``OPS = {'a': helper}``) are walked too."""
        return self.dependency(obj, f"{kind_of(obj)} `{display_name(obj)}`")

    # -- bookkeeping

    def label(self, module: str | None, name: str, obj: object) -> str:
        """Manifest label, e.g. "function `helper`" or "global `mylib.SCALE`"."""
        qualified = name if module in (None, self.home) else f"{module}.{name}"
        return f"{kind_of(obj)} `{qualified}`"

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


def kind_of(obj: object) -> str:
    """The word a manifest label starts with: function, class, module or global."""
    if isinstance(obj, types.FunctionType | types.MethodType | functools.partial):
        return "function"
    if isinstance(obj, type):
        return "class"
    if isinstance(obj, types.ModuleType):
        return "module"
    if callable(obj) and _wrapped_of(obj) is not None:  # a cached function, an lru_cache
        return "function"
    return "global"


def _wrapped_of(obj: object) -> Any:
    """The function a ``functools.wraps``-style wrapper wraps, or None."""
    try:
        wrapped = getattr(obj, "__wrapped__", None)
    except Exception:  # NB. arbitrary __getattr__ may raise anything; treat as unwrapped
        return None
    return wrapped if callable(wrapped) and wrapped is not obj else None


def cycle_token(obj: object) -> bytes:
    """Stands for an object met again while it is still being fingerprinted."""
    return xxhash.xxh3_128(f"cycle:{display_name(obj)}".encode()).digest()
