"""Stable, type-tagged 16-byte digests of Python values: the argument side of a key.

A value is serialised into an unambiguous, type-tagged byte stream (the grammar is in
``hashing_stream``) and the stream is hashed with xxh3-128. Big buffers (numpy data,
string columns) are hashed on their own and only their digest enters the stream, so they
are read once, in place (``hashing_arrays``); so are long lists, tuples, dicts and sets
of scalars, serialized in one C pass instead of walked (``hashing_bulk``). Python's
``hash()`` is never used: it is salted per process (``PYTHONHASHSEED``) and would make
keys useless across kernel restarts.

numpy and pandas are only looked up in ``sys.modules``: a value can only be an ndarray
if numpy was imported already, and importing them here would slow ``import funcache_ipy``.

Functions, classes, modules and code objects are not content: their digest comes from the
caller's ``code_hasher`` (the code fingerprint of fingerprint.py), so this module stays
below fingerprint.py in the layering.

Aliasing is part of the value: a container, array or instance met a second time in one
value is encoded as a back-reference to its first occurrence, so ``[a, a]`` and
``[a, copy(a)]`` hash apart. Aliasing is observable (mutate ``a`` through one slot), so
telling them apart can only cost a recomputation, never serve a stale result; and it keeps
values with many shared references (a figure and its axes) linear instead of
exponential to hash. Values without shared references encode exactly as before.
"""

from __future__ import annotations

import collections
import contextlib
import copyreg
import dataclasses
import datetime
import decimal
import enum
import fractions
import functools
import pathlib
import sys
import types
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from funcache_ipy.hashing_arrays import feed_numpy, feed_pandas
from funcache_ipy.hashing_bulk import BULK_MIN, dict_digest, sequence_digest, set_digest
from funcache_ipy.hashing_stream import (
    SCALARS,
    Failure,
    encode_str,
    hash_bytes,
    pack_len,
    short_repr,
)
from funcache_ipy.tracebacks import ShownAsUserError

__all__ = ["UnhashableError", "hash_items", "hash_value", "is_immutable"]

CodeHasher = Callable[[object], bytes]
StandIn = Callable[[object, bytes], bytes]


_CODE_TYPES = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.ModuleType,
    types.CodeType,
    types.MethodWrapperType,
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
)


class UnhashableError(ShownAsUserError, TypeError):
    """A value, or something inside it, has no content that can be hashed.

    Raised instead of skipping the part: a skipped argument would make two different
    calls share one cache entry. ``path`` locates the culprit inside the value (e.g.
    ``"[2]['conn']"``) and ``type_name`` names its type, so callers can rephrase the
    message with the argument's name.
    """

    def __init__(self, message: str, *, path: str = "", type_name: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.type_name = type_name


def _layout(cls: type) -> tuple[int, int, int, int]:
    """The memory layout of instances; C-level fields or slots make it differ from plain."""
    return (cls.__basicsize__, cls.__itemsize__, cls.__dictoffset__, cls.__weakrefoffset__)


_Plain = type("_Plain", (), {})
_PLAIN_LAYOUT = _layout(_Plain)
# copyreg.__newobj__, as __reduce_ex__(5) names it (typeshed does not declare it).
_NEWOBJ = _Plain().__reduce_ex__(5)[0]

# NB. Past this length the middle of an error path is elided: a figure's path can run to
# kilobytes, and the start (where in the argument) and end (the culprit) are what help.
_PATH_LIMIT = 200

_IMMUTABLE_ATOMS = frozenset({type(None), bool, int, float, complex, str, bytes, type(...), range})


def is_immutable(obj: object) -> bool:
    """Tell whether ``obj``'s identity implies its content forever.

    The fingerprint walk uses this to skip re-hashing a global whose object has not been
    rebound. Only exact built-in types count: a subclass instance may carry a mutable
    ``__dict__``, and arrays, frames and instances can change in place.
    """
    kind = type(obj)
    if kind in _IMMUTABLE_ATOMS:
        return True
    if isinstance(obj, (tuple, frozenset)) and (kind is tuple or kind is frozenset):
        return all(map(is_immutable, obj))
    return False


def hash_value(obj: object, *, code_hasher: CodeHasher | None = None) -> bytes:
    """Return the 16-byte content digest of ``obj``.

    Equal content gives equal digests in any process; different types never collide
    by construction (``1``, ``1.0``, ``True`` and ``"1"`` differ).

    Args:
        obj: the value to hash.
        code_hasher: digest of functions, classes, modules and code objects (and of the
            class of objects hashed by state); without it they are named by
            module + qualname only.

    Returns:
        The xxh3-128 digest, 16 bytes.

    Raises:
        UnhashableError: some part of ``obj`` (a lock, a file, a generator...) cannot be
            reduced to content; the message names its type and where it sits.

    >>> hash_value((1, "a")) == hash_value((1, "a")) != hash_value([1, "a"])
    True
    """
    kind = type(obj)
    enc = SCALARS.get(kind)
    if enc is not None:
        return hash_bytes(enc(obj))
    if isinstance(obj, (tuple, list)) and (kind is tuple or kind is list) and len(obj) < BULK_MIN:
        flat = _scalar_parts(obj)  # longer ones are hashed in bulk, by the walker
        if flat is not None:
            return hash_bytes(_counted(b"(" if kind is tuple else b"[", flat))
    walker = Walker(code_hasher)
    with _reported(obj):
        walker.feed(obj)
    return hash_bytes(walker.out)


def hash_items(
    values: tuple[Any, ...],
    *,
    code_hasher: CodeHasher | None = None,
    stand_in: StandIn | None = None,
) -> tuple[bytes, list[bytes]]:
    """Digest a tuple of arguments from one digest per item; return each item's part too.

    A call's key needs one digest per argument, so that an argument can be keyed by a
    digest other than its own (``stand_in``, given the item and its digest), and
    explaining a miss needs to know which argument changed. The items are walked as one
    stream all the same, so aliasing *between* them still counts: an object met again
    in a later item is a reference into the earlier one. References within an item are
    relative to its start, so an item that shares nothing with the others has exactly
    the digest :func:`hash_value` gives it.

    Returns:
        The digest, and each item's part of it: a scalar's own encoding (a short tuple
        of scalars thus digests as :func:`hash_value` does), else ``#`` + its digest.

    >>> whole, parts = hash_items((1, "a"))
    >>> whole == hash_value((1, "a")) and hash_bytes(parts[1]) == hash_value("a")
    True
    """
    flat = _scalar_parts(values)  # the usual call: scalars only, no walker needed
    if flat is not None:
        return hash_bytes(_counted(b"(", flat)), flat
    parts: list[bytes] = []
    walker = Walker(code_hasher)
    out = walker.out
    walked: list[tuple[int, int, int]] = []
    with _reported(values):
        for index, item in enumerate(values):
            enc = SCALARS.get(type(item))
            if enc is not None:
                parts.append(enc(item))
                continue
            walker.base = len(walker.kept)
            start = len(out)
            try:
                walker.feed(item)
            except Failure as failure:
                failure.path.append(f"[{index}]")
                raise
            walked.append((index, start, len(out)))
            parts.append(b"")  # filled in below, once the stream stops growing
    view = memoryview(out)
    for index, start, end in walked:
        digest = hash_bytes(view[start:end])
        if stand_in is not None:
            digest = stand_in(values[index], digest)
        parts[index] = b"#" + digest
    return hash_bytes(_counted(b"(", parts)), parts


@contextlib.contextmanager
def _reported(obj: object) -> Iterator[None]:
    """Turn a walk's internal failures into an :class:`UnhashableError` naming the culprit."""
    try:
        yield
    except Failure as failure:
        path = _clip("".join(reversed(failure.path)), _PATH_LIMIT)
        name = failure.culprit.__qualname__
        detail = f": {_clip(failure.detail, 2 * _PATH_LIMIT)}" if failure.detail else ""
        message = f"cannot hash value{path} of type {name}{detail}"
        raise UnhashableError(message, path=path, type_name=name) from failure.__cause__
    except RecursionError as exc:
        name = type(obj).__qualname__
        message = f"cannot hash value of type {name}: nested deeper than the recursion limit"
        raise UnhashableError(message, type_name=name) from exc


def _scalar_parts(values: tuple[Any, ...] | list[Any]) -> list[bytes] | None:
    """Each item's encoding if every item is a scalar (the usual argument tuple), else None.

    With :func:`_counted`, exactly the bytes ``Walker.items`` would produce, without
    building a walker.
    """
    parts = []
    for item in values:
        enc = SCALARS.get(type(item))
        if enc is None:
            return None
        parts.append(enc(item))
    return parts


def _counted(tag: bytes, parts: list[bytes]) -> bytes:
    """A sequence's encoding from its items' (as ``Walker.items`` writes it)."""
    return tag + pack_len(len(parts)) + b"".join(parts)


def _clip(text: str, limit: int) -> str:
    """Cut the middle out of ``text`` if longer than ``limit``, keeping both ends."""
    if len(text) <= limit:
        return text
    head = limit // 3
    return f"{text[:head]}…{text[len(text) - (limit - head - 1) :]}"


def _qualified_name(obj: Any) -> str:
    """Name an object by module + qualname, the identity pickle would use."""
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    if isinstance(obj, types.CodeType):
        return getattr(obj, "co_qualname", obj.co_name)
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if not isinstance(qualname, str):
        raise Failure(type(obj), "it has no name to refer to it by")
    module = getattr(obj, "__module__", None)
    return f"{module}.{qualname}" if isinstance(module, str) else qualname


_UNSET = object()


def _attributes(obj: Any, names: list[str]) -> list[tuple[str, Any]]:
    """The declared fields that are set on ``obj`` (an ``init=False`` field may not be)."""
    pairs = [(name, getattr(obj, name, _UNSET)) for name in names]
    return [(name, value) for name, value in pairs if value is not _UNSET]


def _slot_names(cls: type) -> list[str]:
    """Instance slots declared along the MRO, by attribute name (private ones mangled).

    The rule ``copyreg._slotnames`` follows, without its caching on the class: a new
    class attribute could change the class's own code fingerprint.
    """
    names = []
    for base in cls.__mro__:
        slots = base.__dict__.get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name in ("__dict__", "__weakref__"):
                continue
            if name.startswith("__") and not name.endswith("__"):
                stripped = base.__name__.lstrip("_")
                name = f"_{stripped}{name}" if stripped else name
            names.append(name)
    return names


class Walker:
    """One traversal: the output stream plus the cycle guard, the memo and per-call caches.

    Two kinds of back-reference keep a walk finite and linear. An *ancestor* met again
    (a cycle) becomes ``@`` + its depth; a finished object met again (a shared reference)
    becomes ``^`` + its index in the memo, numbered in order of completion from ``base``
    (one of an earlier item of :func:`hash_items` becomes a backtick + its index). Atoms
    (scalars, classes, functions, enum members, numpy scalars, stdlib value types, empty
    tuples) are never memoized: their identity is an accident of interning, not the
    user's sharing.
    """

    __slots__ = (
        "arrays",
        "base",
        "code_hasher",
        "kept",
        "memo",
        "out",
        "shareable",
        "slots",
        "stack",
        "types",
    )

    def __init__(self, code_hasher: CodeHasher | None) -> None:
        self.code_hasher = code_hasher
        self.out = bytearray()
        self.stack: dict[int, int] = {}
        # id -> index in kept; holding the objects keeps their ids from being reused.
        self.memo: dict[int, int] = {}
        self.kept: list[object] = []
        # Back-references to objects from ``base`` on are counted from it (see hash_items).
        self.base = 0
        self.shareable: dict[type, bool] = {}
        self.types: dict[type, bytes] = {}
        self.slots: dict[type, list[str]] = {}
        # id -> (array, digest); holding the array keeps its id from being reused.
        self.arrays: dict[int, tuple[object, bytes]] = {}

    def feed(self, obj: Any) -> None:
        """Append the encoding of ``obj`` to the stream."""
        kind = type(obj)
        enc = SCALARS.get(kind)
        if enc is not None:
            self.out += enc(obj)
            return
        key = id(obj)
        memo = self.memo
        seen = memo.get(key)
        if seen is not None:
            base = self.base
            if seen >= base:
                self.out += b"^" + pack_len(seen - base)
            else:  # an object of an earlier item (hash_items)
                self.out += b"`" + pack_len(seen)
            return
        method = _DISPATCH.get(kind)
        if method is not None and kind not in _MUTABLE:
            method(self, obj)
        else:
            # Mutable containers and unknown objects can hold themselves: guard them.
            stack = self.stack
            if key in stack:
                self.out += b"@" + pack_len(stack[key])
                return
            stack[key] = len(stack)
            try:
                (method or Walker._feed_other)(self, obj)
            finally:
                del stack[key]
        shareable = self.shareable.get(kind)
        if shareable is None:
            shareable = self.shareable[kind] = _is_shareable(kind)
        # NB. Registered once finished, so a cycle still meets the ancestor guard above.
        if shareable and (kind not in _EMPTY_SINGLETONS or obj):
            memo[key] = len(self.kept)
            self.kept.append(obj)

    def digest_of(self, obj: Any) -> bytes:
        """Digest ``obj`` alone (for set members), sharing the cycle guard and caches.

        NB. What the member adds to the memo is dropped afterwards: members are visited in
        hash-seed order, so a back-reference from one member into another would make the
        digests differ between processes. References to objects finished before the set
        began are fine.
        """
        enc = SCALARS.get(type(obj))
        if enc is not None:
            return hash_bytes(enc(obj))
        outer, self.out = self.out, bytearray()
        memo, kept = self.memo, self.kept
        known = len(kept)
        try:
            self.feed(obj)
            return hash_bytes(self.out)
        finally:
            self.out = outer
            while len(memo) > known:
                memo.popitem()  # LIFO: exactly the entries this member added
            del kept[known:]

    def code_ref(self, obj: Any) -> bytes:
        """Reference code: its ``code_hasher`` digest, else its module + qualname."""
        hasher = self.code_hasher
        if hasher is None:
            return b"R" + encode_str(_qualified_name(obj))
        try:
            digest = hasher(obj)
        except UnhashableError as exc:
            raise Failure(type(obj), str(exc)) from exc
        return b"H" + pack_len(len(digest)) + digest

    def ref_type(self, cls: type) -> None:
        """Append a class reference, computed once per class per call."""
        ref = self.types.get(cls)
        if ref is None:
            ref = self.types[cls] = self.code_ref(cls)
        self.out += ref

    def items(self, values: Sequence[Any], tag: bytes) -> None:
        """Append a counted sequence; failures are located as ``[i]``.

        A long list or tuple of scalars (or of tuples of scalars) is hashed in bulk
        (``hashing_bulk``): ``!`` + its tag + count + the bulk digest.
        """
        out = self.out
        if len(values) >= BULK_MIN and isinstance(values, (list, tuple)):
            digest = sequence_digest(values, self.memo, self.kept)
            if digest is not None:
                out += b"!" + tag + pack_len(len(values)) + digest
                return
        out += tag + pack_len(len(values))
        for item in values:
            enc = SCALARS.get(type(item))
            if enc is not None:
                out += enc(item)
                continue
            try:
                self.feed(item)
            except Failure as failure:
                # NB. Found by identity only on failure: enumerate costs every call.
                index = next(i for i, x in enumerate(values) if x is item)
                failure.path.append(f"[{index}]")
                raise

    def fields(self, pairs: Iterable[tuple[str, Any]], count: int) -> None:
        """Append named fields (attributes); failures are located as ``.name``."""
        self.out += pack_len(count)
        name = ""
        try:
            for name, value in pairs:
                self.out += encode_str(name)
                self.feed(value)
        except Failure as failure:
            failure.path.append(f".{name}")
            raise

    def _list(self, obj: list[Any]) -> None:
        self.items(obj, b"[")

    def _dict(self, obj: dict[Any, Any]) -> None:
        # NB. Insertion order is kept: it is observable (iteration, repr, json.dumps), so
        # {"a": 1, "b": 2} and {"b": 2, "a": 1} can give different results.
        if len(obj) >= BULK_MIN and type(obj) is dict:
            digest = dict_digest(obj)
            if digest is not None:
                self.out += b"!{" + pack_len(len(obj)) + digest
                return
        self.out += b"{" + pack_len(len(obj))
        key: Any = None
        try:
            for key, value in obj.items():
                self.feed(key)
                self.feed(value)
        except Failure as failure:
            failure.path.append(f"[{short_repr(key)}]")
            raise

    def _mapping_proxy(self, obj: types.MappingProxyType[Any, Any]) -> None:
        # A read-only view of a dict (class namespaces, dataclass field metadata).
        self.out += b"P"
        self._dict(obj)  # type: ignore[arg-type]

    def _dict_view(self, obj: Any) -> None:
        # Keys and items in dict order (observable, as for dicts), values in order; the
        # type name keeps d.keys() apart from list(d) and from d.values().
        self.items(list(obj), b"~" + encode_str(type(obj).__name__))

    def _set(self, obj: set[Any] | frozenset[Any]) -> None:
        # Member digests are sorted: set iteration order depends on PYTHONHASHSEED.
        tag = b"<" if type(obj) is set else b">"
        if len(obj) >= BULK_MIN:
            digest = set_digest(obj)
            if digest is not None:
                self.out += b"!" + tag + pack_len(len(obj)) + digest
                return
        try:
            digests = sorted(map(self.digest_of, obj))
        except Failure as failure:
            failure.path.append("{…}")
            raise
        self.out += tag + pack_len(len(digests))
        self.out += b"".join(digests)

    def _code(self, obj: Any) -> None:
        self.out += b"x" + self.code_ref(obj)
        if self.code_hasher is not None:
            return
        # Without a code hasher a name is all we have; at least tell bound methods of
        # different objects apart ([].append vs other.append).
        owner = getattr(obj, "__self__", None)
        if owner is not None and not isinstance(owner, types.ModuleType):
            try:
                self.feed(owner)
            except Failure as failure:
                failure.path.append(".__self__")
                raise

    def _partial(self, obj: functools.partial[Any]) -> None:
        self.out += b"P"
        self.feed(obj.func)
        self.items(obj.args, b"(")
        # Keyword order cannot change what the call does, so it is not part of the key.
        self.fields(sorted(obj.keywords.items()), len(obj.keywords))

    def _path(self, obj: pathlib.PurePath) -> None:
        self.out += b"p" + encode_str(type(obj).__name__) + encode_str(str(obj))

    def _by_constructor(self, obj: Any) -> None:
        """Encode stdlib value types by constructor arguments under a fixed tag.

        A fixed tag rather than ``code_hasher(type)`` keeps their digests independent of
        the Python and stdlib version.
        """
        self.out += b"D" + encode_str(type(obj).__qualname__)
        self.feed(obj.__reduce_ex__(5)[1])

    def _feed_other(self, obj: Any) -> None:
        """Encode everything without an exact-type entry (obj is on the ancestor stack)."""
        if "numpy" in sys.modules and feed_numpy(self, obj, sys.modules["numpy"]):
            return
        if "pandas" in sys.modules and feed_pandas(self, obj, sys.modules["pandas"]):
            return
        if isinstance(obj, type):
            self.out += b"t"
            self.ref_type(obj)
        elif isinstance(obj, _CODE_TYPES):
            self._code(obj)
        elif isinstance(obj, enum.Enum):
            self.out += b"e"
            self.ref_type(type(obj))
            # Flag combinations are identified by value (older Pythons give them no name).
            self.feed(obj._value_ if isinstance(obj, enum.Flag) else obj._name_)
        elif dataclasses.is_dataclass(obj):
            names = [f.name for f in dataclasses.fields(obj)]
            self.record(obj, b"d", _attributes(obj, names))
        elif hasattr(type(obj), "__attrs_attrs__"):
            names = [a.name for a in type(obj).__attrs_attrs__]
            self.record(obj, b"a", _attributes(obj, names))
        elif isinstance(obj, tuple) and hasattr(type(obj), "_fields"):
            names = list(getattr(obj, "_fields"))  # noqa: B009 - unknown to type checkers
            self.record(obj, b"n", list(zip(names, obj, strict=True)))
        else:
            self._by_state(obj)

    def record(self, obj: Any, tag: bytes, declared: list[tuple[str, Any]]) -> None:
        """Encode a dataclass, attrs instance or namedtuple: its fields, then any other state.

        NB. The declared fields are not all the state: ``__post_init__`` or later code can
        set further attributes (``self.schedule = [...]``) that the user's function reads,
        so undeclared ``__dict__`` entries and slots are hashed too. A record without them
        keeps its plain encoding (and digest); one with them is tagged ``+`` in front.
        """
        kind = type(obj)
        slot_names = self.slots.get(kind)
        if slot_names is None:
            slot_names = self.slots[kind] = _slot_names(kind)
        names = {name for name, _ in declared}
        instance = getattr(obj, "__dict__", None)
        extra = {k: v for k, v in instance.items() if k not in names} if instance else {}
        slots = {
            name: value
            for name in slot_names
            if name not in names and (value := getattr(obj, name, _UNSET)) is not _UNSET
        }
        if extra or slots:
            self.out += b"+"
        self.out += tag
        self.ref_type(kind)
        self.fields(declared, len(declared))
        if extra or slots:
            self.state((extra or None, slots or None))

    def _by_state(self, obj: Any) -> None:
        """Encode an arbitrary object as class fingerprint + its pickle reduction.

        The reduction (``copyreg``'s, else ``__reduce_ex__(5)``) is the object's own
        statement of what it consists of (it uses ``__getstate__``, ``__dict__`` and
        ``__slots__``). If the class refuses to
        be pickled, ``__getstate__`` (by default the ``__dict__``) is used, but only for
        plain-layout instances: a lock, file or socket keeps its real state in C fields,
        and hashing what little sits in its ``__dict__`` would make different objects
        equal, so those raise.
        """
        try:
            # copyreg's table first, as pickle does: it is how re.Pattern and other C
            # types without a __reduce__ of their own say what they consist of.
            registered = copyreg.dispatch_table.get(type(obj))
            reduced = registered(obj) if registered else obj.__reduce_ex__(5)
        except Exception as exc:
            kind = type(obj)
            if _layout(kind) != _PLAIN_LAYOUT:
                raise Failure(kind) from exc
            try:
                # NB. object.__getstate__ is new in 3.11; before it, the state is __dict__.
                getstate = getattr(obj, "__getstate__", None)
                state = getstate() if getstate is not None else (vars(obj) or None)
            except Exception:
                raise Failure(kind) from exc
            # What __reduce_ex__(5) gives a plain object: refusing pickling does not
            # change the digest.
            reduced = (_NEWOBJ, (kind,), state)
        self.out += b"o"
        self.ref_type(type(obj))
        if isinstance(reduced, str):
            self.out += b"G" + encode_str(f"{getattr(obj, '__module__', None)}.{reduced}")
            return
        if not isinstance(reduced, tuple) or not 2 <= len(reduced) <= 6:
            raise Failure(type(obj), f"__reduce_ex__ returned {type(reduced).__qualname__}")
        func, args, state, list_items, dict_items, setter = reduced + (None,) * (6 - len(reduced))
        self.out += b"R" + encode_str(_qualified_name(func))
        segment = "<args>"
        try:
            self.feed(args)
            segment = ""
            self.state(state)
            segment = "<items>"
            self.feed(None if list_items is None else list(list_items))
            self.feed(None if dict_items is None else list(dict_items))
        except Failure as failure:
            if segment:
                failure.path.append(segment)
            raise
        self.out += b"N" if setter is None else b"R" + encode_str(_qualified_name(setter))

    def state(self, state: Any) -> None:
        """Encode pickle state; attribute dicts are sorted since assignment order is noise."""
        if type(state) is dict and all(type(k) is str for k in state):
            self.out += b"k"
            self.fields(sorted(state.items()), len(state))
        elif (
            type(state) is tuple
            and len(state) == 2
            and all(s is None or type(s) is dict for s in state)
        ):
            # (__dict__, __slots__) as produced by object.__getstate__ for slotted classes.
            self.out += b"K"
            self.state(state[0])
            self.state(state[1])
        else:
            try:
                self.feed(state)
            except Failure as failure:
                failure.path.append("<state>")
                raise


_DICT_VIEW_TYPES: tuple[type, ...] = (
    type({}.keys()),
    type({}.values()),
    type({}.items()),
    type(collections.OrderedDict().keys()),
    type(collections.OrderedDict().values()),
    type(collections.OrderedDict().items()),
)
# Dict views show a mutable dict, which can hold the view itself: they need the cycle guard.
_MUTABLE = frozenset({list, dict, set, functools.partial, *_DICT_VIEW_TYPES})
_DATETIME_TYPES = (
    datetime.datetime,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    datetime.timezone,
)
_PATH_TYPES = (
    pathlib.PurePosixPath,
    pathlib.PureWindowsPath,
    pathlib.PosixPath,
    pathlib.WindowsPath,
)
_DISPATCH: dict[type, Callable[[Walker, Any], None]] = {
    tuple: lambda w, o: w.items(o, b"("),
    list: Walker._list,
    dict: Walker._dict,
    types.MappingProxyType: Walker._mapping_proxy,
    set: Walker._set,
    frozenset: Walker._set,
    bytearray: lambda w, o: w.out.extend(b"B" + pack_len(len(o)) + o),
    memoryview: lambda w, o: w.items((o.format, o.shape, o.tobytes()), b"m"),
    range: lambda w, o: w.items((o.start, o.stop, o.step), b"r"),
    slice: lambda w, o: w.items((o.start, o.stop, o.step), b":"),
    functools.partial: Walker._partial,
    decimal.Decimal: lambda w, o: w.out.extend(b"M" + encode_str(str(o))),  # exact: "1.0" != "1"
    fractions.Fraction: lambda w, o: w.items((o.numerator, o.denominator), b"Q"),
    uuid.UUID: lambda w, o: w.out.extend(b"U" + o.bytes),
    **dict.fromkeys(_DATETIME_TYPES, Walker._by_constructor),
    **dict.fromkeys(_PATH_TYPES, Walker._path),
    **dict.fromkeys(_DICT_VIEW_TYPES, Walker._dict_view),
    **{t: Walker._code for t in _CODE_TYPES},
}

# Exact types whose identity is part of the value; other _DISPATCH entries are atoms.
_SHAREABLE_DISPATCH = frozenset(
    {tuple, frozenset, bytearray, memoryview, types.MappingProxyType, *_MUTABLE}
)
# Empty immutable containers may be one interned object: sharing them is no user's doing.
_EMPTY_SINGLETONS = frozenset({tuple, frozenset})


def _is_shareable(kind: type) -> bool:
    """Tell whether objects of exact type ``kind`` are memoized (see ``Walker``)."""
    if kind in _DISPATCH:
        return kind in _SHAREABLE_DISPATCH
    if issubclass(kind, (type, enum.Enum, *_CODE_TYPES)):
        return False
    numpy = sys.modules.get("numpy")
    return numpy is None or not issubclass(kind, numpy.generic)
