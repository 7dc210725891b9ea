"""Stable, type-tagged 16-byte digests of Python values: the argument side of a key.

A value is serialised into an unambiguous, type-tagged byte stream (every item is a tag
plus a length-prefixed or fixed-size payload, so two different values can never produce
the same stream) and the stream is hashed with xxh3-128. Big buffers (numpy data, string
columns) are hashed on their own and only their digest enters the stream, so they are
read once, in place. Python's ``hash()`` is never used: it is salted per process
(``PYTHONHASHSEED``) and would make keys useless across kernel restarts.

numpy and pandas are only looked up in ``sys.modules``: a value can only be an ndarray
if numpy was imported already, and importing them here would slow ``import funcache_ipy``.

Functions, classes, modules and code objects are not content: their digest comes from the
caller's ``code_hasher`` (the code fingerprint of fingerprint.py), so this module stays
below fingerprint.py in the layering.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import fractions
import functools
import pathlib
import struct
import sys
import types
import uuid
from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import xxhash

__all__ = ["UnhashableError", "hash_value", "is_immutable"]

CodeHasher = Callable[[object], bytes]

_digest = xxhash.xxh3_128_digest
_len = struct.Struct("<Q").pack
_i64 = struct.Struct("<q").pack
_f64 = struct.Struct("<d").pack
_c128 = struct.Struct("<dd").pack
_BLOCK_BYTES = 1 << 20  # copy size for non-contiguous arrays: stays in cache (measured best)

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


class UnhashableError(TypeError):
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


class _Failure(Exception):
    """Internal: carries the culprit's type while the path is collected on unwinding."""

    def __init__(self, culprit: type, detail: str = "") -> None:
        super().__init__(culprit, detail)
        self.culprit = culprit
        self.detail = detail
        self.path: list[str] = []


def _enc_int(n: int) -> bytes:
    """Encode an int: fixed 8 bytes when it fits, else tagged length + two's complement."""
    try:
        return b"i" + _i64(n)
    except struct.error:
        raw = n.to_bytes(n.bit_length() // 8 + 1, "little", signed=True)
        return b"I" + _len(len(raw)) + raw


def _enc_str(s: str) -> bytes:
    """Encode a str as UTF-8; ``surrogatepass`` so lone surrogates hash instead of failing."""
    raw = s.encode("utf-8", "surrogatepass")
    return b"s" + _len(len(raw)) + raw


def _enc_bytes(b: bytes) -> bytes:
    """Encode bytes with a length prefix."""
    return b"b" + _len(len(b)) + b


# NB. Floats are hashed by their exact bits: 0.0 and -0.0 differ and every NaN payload is
# stable (float("nan"), math.nan and np.nan share one bit pattern).
_SCALARS: dict[type, Callable[[Any], bytes]] = {
    type(None): lambda o: b"N",
    bool: lambda o: b"T" if o else b"F",
    int: _enc_int,
    float: lambda o: b"f" + _f64(o),
    complex: lambda o: b"c" + _c128(o.real, o.imag),
    str: _enc_str,
    bytes: _enc_bytes,
    type(...): lambda o: b"E",
    type(NotImplemented): lambda o: b"X",
}


def _layout(cls: type) -> tuple[int, int, int, int]:
    """The memory layout of instances; C-level fields or slots make it differ from plain."""
    return (cls.__basicsize__, cls.__itemsize__, cls.__dictoffset__, cls.__weakrefoffset__)


_Plain = type("_Plain", (), {})
_PLAIN_LAYOUT = _layout(_Plain)
# copyreg.__newobj__, as __reduce_ex__(5) names it (typeshed does not declare it).
_NEWOBJ = _Plain().__reduce_ex__(5)[0]

_IMMUTABLE_ATOMS = frozenset({type(None), bool, int, float, complex, str, bytes, type(...), range})


def is_immutable(obj: object) -> bool:
    """Tell whether ``obj``'s identity implies its content forever.

    fingerprint.py uses this to skip re-hashing a global whose object has not been
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
    enc = _SCALARS.get(kind)
    if enc is not None:
        return _digest(enc(obj))
    if isinstance(obj, (tuple, list)) and (kind is tuple or kind is list):
        flat = _encode_flat(obj, b"(" if kind is tuple else b"[")
        if flat is not None:
            return _digest(flat)
    walker = _Walker(code_hasher)
    try:
        walker.feed(obj)
    except _Failure as failure:
        path = "".join(reversed(failure.path))
        name = failure.culprit.__qualname__
        detail = f": {failure.detail}" if failure.detail else ""
        message = f"cannot hash value{path} of type {name}{detail}"
        raise UnhashableError(message, path=path, type_name=name) from failure.__cause__
    except RecursionError as exc:
        name = type(obj).__qualname__
        message = f"cannot hash value of type {name}: nested deeper than the recursion limit"
        raise UnhashableError(message, type_name=name) from exc
    return _digest(walker.out)


def _encode_flat(values: tuple[Any, ...] | list[Any], tag: bytes) -> bytes | None:
    """Encode a tuple/list of scalars in one go (the usual argument tuple), else None.

    Produces exactly the bytes ``_Walker.items`` would, without building a walker.
    """
    parts = [tag + _len(len(values))]
    for item in values:
        enc = _SCALARS.get(type(item))
        if enc is None:
            return None
        parts.append(enc(item))
    return b"".join(parts)


def _qualified_name(obj: Any) -> str:
    """Name an object by module + qualname, the identity pickle would use."""
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    if isinstance(obj, types.CodeType):
        return getattr(obj, "co_qualname", obj.co_name)
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if not isinstance(qualname, str):
        raise _Failure(type(obj), "it has no name to refer to it by")
    module = getattr(obj, "__module__", None)
    return f"{module}.{qualname}" if isinstance(module, str) else qualname


class _Walker:
    """One traversal: the output stream plus the cycle guard and per-call caches.

    Only the *ancestors* of the current item are remembered (id -> depth), so a cycle
    becomes a back-reference to a depth while a shared sub-value is hashed by content
    each time: ``[a, a]`` and ``[a, copy(a)]`` hash equal, as a careful user expects.
    """

    __slots__ = ("arrays", "code_hasher", "out", "stack", "types")

    def __init__(self, code_hasher: CodeHasher | None) -> None:
        self.code_hasher = code_hasher
        self.out = bytearray()
        self.stack: dict[int, int] = {}
        self.types: dict[type, bytes] = {}
        # id -> (array, digest); holding the array keeps its id from being reused.
        self.arrays: dict[int, tuple[object, bytes]] = {}

    def feed(self, obj: Any) -> None:
        """Append the encoding of ``obj`` to the stream."""
        kind = type(obj)
        enc = _SCALARS.get(kind)
        if enc is not None:
            self.out += enc(obj)
            return
        method = _DISPATCH.get(kind)
        if method is not None and kind not in _MUTABLE:
            method(self, obj)
            return
        # Mutable containers and unknown objects can hold themselves: guard them.
        key = id(obj)
        stack = self.stack
        if key in stack:
            self.out += b"@" + _len(stack[key])
            return
        stack[key] = len(stack)
        try:
            (method or _Walker._feed_other)(self, obj)
        finally:
            del stack[key]

    def digest_of(self, obj: Any) -> bytes:
        """Digest ``obj`` alone (for set members), sharing the cycle guard and caches."""
        enc = _SCALARS.get(type(obj))
        if enc is not None:
            return _digest(enc(obj))
        outer, self.out = self.out, bytearray()
        try:
            self.feed(obj)
            return _digest(self.out)
        finally:
            self.out = outer

    def code_ref(self, obj: Any) -> bytes:
        """Reference code: its ``code_hasher`` digest, else its module + qualname."""
        hasher = self.code_hasher
        if hasher is None:
            return b"R" + _enc_str(_qualified_name(obj))
        try:
            digest = hasher(obj)
        except UnhashableError as exc:
            raise _Failure(type(obj), str(exc)) from exc
        return b"H" + _len(len(digest)) + digest

    def ref_type(self, cls: type) -> None:
        """Append a class reference, computed once per class per call."""
        ref = self.types.get(cls)
        if ref is None:
            ref = self.types[cls] = self.code_ref(cls)
        self.out += ref

    def items(self, values: Sequence[Any], tag: bytes) -> None:
        """Append a counted sequence; failures are located as ``[i]``."""
        out = self.out
        out += tag + _len(len(values))
        for item in values:
            enc = _SCALARS.get(type(item))
            if enc is not None:
                out += enc(item)
                continue
            try:
                self.feed(item)
            except _Failure as failure:
                # NB. Found by identity only on failure: enumerate costs every call.
                index = next(i for i, x in enumerate(values) if x is item)
                failure.path.append(f"[{index}]")
                raise

    def fields(self, pairs: Iterable[tuple[str, Any]], count: int) -> None:
        """Append named fields (attributes); failures are located as ``.name``."""
        self.out += _len(count)
        name = ""
        try:
            for name, value in pairs:
                self.out += _enc_str(name)
                self.feed(value)
        except _Failure as failure:
            failure.path.append(f".{name}")
            raise

    def _list(self, obj: list[Any]) -> None:
        self.items(obj, b"[")

    def _dict(self, obj: dict[Any, Any]) -> None:
        # NB. Insertion order is kept: it is observable (iteration, repr, json.dumps), so
        # {"a": 1, "b": 2} and {"b": 2, "a": 1} can give different results.
        self.out += b"{" + _len(len(obj))
        key: Any = None
        try:
            for key, value in obj.items():
                self.feed(key)
                self.feed(value)
        except _Failure as failure:
            failure.path.append(f"[{_short_repr(key)}]")
            raise

    def _set(self, obj: set[Any] | frozenset[Any]) -> None:
        # Member digests are sorted: set iteration order depends on PYTHONHASHSEED.
        try:
            digests = sorted(map(self.digest_of, obj))
        except _Failure as failure:
            failure.path.append("{…}")
            raise
        self.out += (b"<" if type(obj) is set else b">") + _len(len(digests))
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
            except _Failure as failure:
                failure.path.append(".__self__")
                raise

    def _partial(self, obj: functools.partial[Any]) -> None:
        self.out += b"P"
        self.feed(obj.func)
        self.items(obj.args, b"(")
        # Keyword order cannot change what the call does, so it is not part of the key.
        self.fields(sorted(obj.keywords.items()), len(obj.keywords))

    def _path(self, obj: pathlib.PurePath) -> None:
        self.out += b"p" + _enc_str(type(obj).__name__) + _enc_str(str(obj))

    def _by_constructor(self, obj: Any) -> None:
        """Encode stdlib value types by constructor arguments under a fixed tag.

        A fixed tag rather than ``code_hasher(type)`` keeps their digests independent of
        the Python and stdlib version.
        """
        self.out += b"D" + _enc_str(type(obj).__qualname__)
        self.feed(obj.__reduce_ex__(5)[1])

    def _feed_other(self, obj: Any) -> None:
        """Encode everything without an exact-type entry (obj is on the ancestor stack)."""
        if "numpy" in sys.modules and _feed_numpy(self, obj, sys.modules["numpy"]):
            return
        if "pandas" in sys.modules and _feed_pandas(self, obj, sys.modules["pandas"]):
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
            self.out += b"d"
            self.ref_type(type(obj))
            names = [f.name for f in dataclasses.fields(obj)]
            self.fields(((n, getattr(obj, n)) for n in names), len(names))
        elif hasattr(type(obj), "__attrs_attrs__"):
            self.out += b"a"
            self.ref_type(type(obj))
            names = [a.name for a in type(obj).__attrs_attrs__]
            self.fields(((n, getattr(obj, n)) for n in names), len(names))
        elif isinstance(obj, tuple) and hasattr(type(obj), "_fields"):
            self.out += b"n"
            self.ref_type(type(obj))
            names = list(getattr(obj, "_fields"))  # noqa: B009 - unknown to type checkers
            self.fields(zip(names, obj, strict=True), len(obj))
        else:
            self._by_state(obj)

    def _by_state(self, obj: Any) -> None:
        """Encode an arbitrary object as class fingerprint + its pickle reduction.

        ``__reduce_ex__(5)`` is the object's own statement of what it consists of (it
        uses ``__getstate__``, ``__dict__`` and ``__slots__``). If the class refuses to
        be pickled, ``__getstate__`` (by default the ``__dict__``) is used, but only for
        plain-layout instances: a lock, file or socket keeps its real state in C fields,
        and hashing what little sits in its ``__dict__`` would make different objects
        equal, so those raise.
        """
        try:
            reduced = obj.__reduce_ex__(5)
        except Exception as exc:
            kind = type(obj)
            if _layout(kind) != _PLAIN_LAYOUT:
                raise _Failure(kind) from exc
            try:
                state = obj.__getstate__()
            except Exception:
                raise _Failure(kind) from exc
            # What __reduce_ex__(5) gives a plain object: refusing pickling does not
            # change the digest.
            reduced = (_NEWOBJ, (kind,), state)
        self.out += b"o"
        self.ref_type(type(obj))
        if isinstance(reduced, str):
            self.out += b"G" + _enc_str(f"{getattr(obj, '__module__', None)}.{reduced}")
            return
        if not isinstance(reduced, tuple) or not 2 <= len(reduced) <= 6:
            raise _Failure(type(obj), f"__reduce_ex__ returned {type(reduced).__qualname__}")
        func, args, state, list_items, dict_items, setter = reduced + (None,) * (6 - len(reduced))
        self.out += b"R" + _enc_str(_qualified_name(func))
        segment = "<args>"
        try:
            self.feed(args)
            segment = ""
            self.state(state)
            segment = "<items>"
            self.feed(None if list_items is None else list(list_items))
            self.feed(None if dict_items is None else list(dict_items))
        except _Failure as failure:
            if segment:
                failure.path.append(segment)
            raise
        self.out += b"N" if setter is None else b"R" + _enc_str(_qualified_name(setter))

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
            except _Failure as failure:
                failure.path.append("<state>")
                raise

    def objects(self, values: list[Any]) -> None:
        """Encode a column-like list of objects; all-str lists take a bulk path.

        NB. The bulk path (code-point lengths + one UTF-8 blob) is exact; it is chosen
        only when every element is exactly ``str``, so 1 and "1" never meet in it.
        """
        if values and set(map(type, values)) == {str}:
            lengths = array("q", map(len, values)).tobytes()
            blob = "".join(values).encode("utf-8", "surrogatepass")
            self.out += b"S" + _len(len(values)) + _digest(lengths) + _digest(blob)
        else:
            self.items(values, b"L")

    def ndarray(self, arr: Any, np: Any) -> None:
        """Encode an ndarray by dtype, shape and C-order content (never by pointers)."""
        self.out += b"A"
        self.dtype(arr.dtype)
        self.out += _len(arr.ndim) + b"".join(map(_i64, arr.shape))
        if arr.dtype.hasobject:  # object, StringDType and structured-with-object fields
            self.objects(arr.reshape(-1).tolist())
            return
        cached = self.arrays.get(id(arr))
        if cached is None:
            cached = self.arrays[id(arr)] = (arr, _array_digest(arr, np))
        self.out += cached[1]

    def dtype(self, dtype: Any) -> None:
        # dtype.str alone is "|V16" for every 16-byte record type; descr has the fields.
        self.feed(dtype.str if dtype.names is None else dtype.descr)


def _short_repr(key: Any) -> str:
    """A dict key as shown in an error path, cut short so messages stay one line."""
    text = repr(key)
    return text if len(text) <= 40 else text[:37] + "..."


def _array_digest(arr: Any, np: Any) -> bytes:
    """Digest an array's C-order bytes: in place if contiguous, else in copied blocks.

    NB. Streaming xxh3 over the blocks gives the same digest as one pass over a full
    copy, without allocating (and page-faulting) a copy of the whole array.
    """
    if arr.flags.c_contiguous:
        return _digest(arr.reshape(-1).view(np.uint8))
    hasher = xxhash.xxh3_128()
    rows = max(1, _BLOCK_BYTES // max(1, arr.nbytes // len(arr)))
    for start in range(0, len(arr), rows):
        block = np.ascontiguousarray(arr[start : start + rows])
        hasher.update(block.reshape(-1).view(np.uint8))
    return hasher.digest()


def _feed_numpy(w: _Walker, obj: Any, np: Any) -> bool:
    """Encode numpy arrays and scalars; False if ``obj`` is neither."""
    if isinstance(obj, np.ndarray):
        if type(obj) is np.ndarray or isinstance(obj, np.memmap):
            # A memmap is an array read from a file: same content, same digest.
            w.ndarray(obj, np)
        elif isinstance(obj, np.ma.MaskedArray):
            w.out += b"w"
            w.ref_type(type(obj))
            w.ndarray(obj.data, np)
            w.ndarray(np.ma.getmaskarray(obj), np)
            w.feed(obj.fill_value)
        else:
            w.out += b"O"
            w.ref_type(type(obj))
            w.ndarray(obj.view(np.ndarray), np)
            w.state(getattr(obj, "__dict__", None))
        return True
    if isinstance(obj, np.generic):
        w.out += b"g"
        w.dtype(obj.dtype)
        if obj.dtype.hasobject:
            w.feed(obj.item())
        else:
            w.out += _enc_bytes(obj.tobytes())
        return True
    return False


def _feed_pandas(w: _Walker, obj: Any, pd: Any) -> bool:
    """Encode pandas frames, series, indexes and extension arrays; False otherwise."""
    if isinstance(obj, pd.DataFrame):
        w.out += b"Z"
        _pandas_type(w, type(obj))
        _pandas_index(w, obj.index, pd, ".index")
        _pandas_index(w, obj.columns, pd, ".columns")
        w.out += _len(obj.shape[1])
        position = 0
        try:
            for position in range(obj.shape[1]):
                _pandas_values(w, obj.iloc[:, position], pd)
        except _Failure as failure:
            failure.path.append(f"[{_short_repr(obj.columns[position])}]")
            raise
    elif isinstance(obj, pd.Series):
        w.out += b"Y"
        _pandas_type(w, type(obj))
        w.feed(obj.name)
        _pandas_index(w, obj.index, pd, ".index")
        _pandas_values(w, obj, pd)
    elif isinstance(obj, pd.Index):
        _pandas_index(w, obj, pd, "")
        return True
    elif isinstance(obj, pd.api.extensions.ExtensionArray):
        w.out += b"V"
        _pandas_values(w, obj, pd)
        return True
    else:
        return False
    # Metadata the user can read back, so it is part of the value.
    w.feed(obj.attrs)
    w.feed(obj.flags.allows_duplicate_labels)
    return True


def _pandas_type(w: _Walker, cls: type) -> None:
    """Tag pandas' own classes by name (stable across versions), subclasses by code."""
    if cls.__module__.startswith("pandas."):
        w.out += b"." + _enc_str(cls.__qualname__)
    else:
        w.ref_type(cls)


def _pandas_index(w: _Walker, index: Any, pd: Any, where: str) -> None:
    """Encode an Index: class, names and per-level values (not codes, which vary)."""
    try:
        w.out += b"W"
        _pandas_type(w, type(index))
        w.feed(list(index.names))
        if isinstance(index, pd.MultiIndex):
            w.out += _len(index.nlevels)
            for level in range(index.nlevels):
                _pandas_values(w, index.get_level_values(level), pd)
        elif isinstance(index, pd.RangeIndex):
            w.feed((index.start, index.stop, index.step))
        else:
            _pandas_values(w, index, pd)
    except _Failure as failure:
        failure.path.append(where)
        raise


def _pandas_values(w: _Walker, values: Any, pd: Any) -> None:
    """Encode the dtype and values of a Series, Index or ExtensionArray, exactly.

    NB. ``pd.util.hash_pandas_object`` is not used: it stringifies object columns, so 1
    and "1" collide, and its 64-bit per-row hashes weaken the 128-bit digest.
    """
    np = sys.modules["numpy"]
    dtype = values.dtype
    if isinstance(dtype, np.dtype):
        w.ndarray(np.asarray(values), np)
        return
    arr = values if isinstance(values, pd.api.extensions.ExtensionArray) else values.array
    w.out += b"v" + _enc_str(str(dtype))
    if isinstance(dtype, pd.CategoricalDtype):
        _pandas_index(w, dtype.categories, pd, ".categories")
        w.feed(bool(dtype.ordered))
        w.ndarray(np.asarray(arr.codes), np)
        return
    if isinstance(dtype, (pd.DatetimeTZDtype, pd.PeriodDtype)):
        w.ndarray(np.asarray(arr.asi8), np)  # str(dtype) carries the unit and zone
        return
    w.ndarray(np.asarray(arr.isna(), dtype=bool), np)
    numpy_dtype = getattr(dtype, "numpy_dtype", None)
    if isinstance(dtype, pd.StringDtype):
        w.objects(arr.to_numpy(dtype=object, na_value="").tolist())
    elif numpy_dtype is not None and numpy_dtype.kind in "biuf":
        w.ndarray(arr.to_numpy(dtype=numpy_dtype, na_value=numpy_dtype.type(0)), np)
    else:
        w.objects(arr.to_numpy(dtype=object).tolist())


_MUTABLE = frozenset({list, dict, set, functools.partial})
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
_DISPATCH: dict[type, Callable[[_Walker, Any], None]] = {
    tuple: lambda w, o: w.items(o, b"("),
    list: _Walker._list,
    dict: _Walker._dict,
    set: _Walker._set,
    frozenset: _Walker._set,
    bytearray: lambda w, o: w.out.extend(b"B" + _len(len(o)) + o),
    memoryview: lambda w, o: w.items((o.format, o.shape, o.tobytes()), b"m"),
    range: lambda w, o: w.items((o.start, o.stop, o.step), b"r"),
    slice: lambda w, o: w.items((o.start, o.stop, o.step), b":"),
    functools.partial: _Walker._partial,
    decimal.Decimal: lambda w, o: w.out.extend(b"M" + _enc_str(str(o))),  # exact: "1.0" != "1"
    fractions.Fraction: lambda w, o: w.items((o.numerator, o.denominator), b"Q"),
    uuid.UUID: lambda w, o: w.out.extend(b"U" + o.bytes),
    **dict.fromkeys(_DATETIME_TYPES, _Walker._by_constructor),
    **dict.fromkeys(_PATH_TYPES, _Walker._path),
    **{t: _Walker._code for t in _CODE_TYPES},
}
