"""numpy and pandas values in the hash stream: exact content, read once and in place.

The walker in ``hashing`` calls these only with the modules it found in ``sys.modules``,
so nothing here imports numpy or pandas. Array data is hashed on its own and only its
digest enters the stream, so a large buffer is read once, without a copy when it is
contiguous.
"""

from __future__ import annotations

import sys
from array import array
from typing import TYPE_CHECKING, Any

import xxhash

from funcache_ipy.hashing_stream import (
    Failure,
    encode_bytes,
    encode_str,
    hash_bytes,
    pack_i64,
    pack_len,
    short_repr,
)

if TYPE_CHECKING:  # for annotations only: ``hashing`` imports this module, not the reverse
    from funcache_ipy.hashing import Walker

_BLOCK_BYTES = 1 << 20  # copy size for non-contiguous arrays: stays in cache (measured best)


def _objects(w: Walker, values: list[Any]) -> None:
    """Encode a column-like list of objects; all-str lists take a bulk path.

    NB. The bulk path (code-point lengths + one UTF-8 blob) is exact; it is chosen
    only when every element is exactly ``str``, so 1 and "1" never meet in it.
    """
    if values and set(map(type, values)) == {str}:
        lengths = array("q", map(len, values)).tobytes()
        blob = "".join(values).encode("utf-8", "surrogatepass")
        w.out += b"S" + pack_len(len(values)) + hash_bytes(lengths) + hash_bytes(blob)
    else:
        w.items(values, b"L")


def _ndarray(w: Walker, arr: Any, np: Any) -> None:
    """Encode an ndarray by dtype, shape and C-order content (never by pointers)."""
    w.out += b"A"
    _dtype(w, arr.dtype)
    w.out += pack_len(arr.ndim) + b"".join(map(pack_i64, arr.shape))
    if arr.dtype.hasobject:  # object, StringDType and structured-with-object fields
        _objects(w, arr.reshape(-1).tolist())
        return
    cached = w.arrays.get(id(arr))
    if cached is None:
        cached = w.arrays[id(arr)] = (arr, _array_digest(arr, np))
    w.out += cached[1]


def _dtype(w: Walker, dtype: Any) -> None:
    # dtype.str alone is "|V16" for every 16-byte record type; descr has the fields.
    if dtype.names is None:
        w.feed(dtype.str)
    else:
        try:
            w.feed(dtype.descr)
        except ValueError:  # NB. numpy refuses descr for out-of-order or overlapping fields
            fields = [(n, dtype.fields[n][0].str, *dtype.fields[n][1:]) for n in dtype.names]
            w.feed(("fields", fields, dtype.itemsize, dtype.isalignedstruct))
    if dtype.metadata:  # user metadata (e.g. units) is readable by code
        w.out += b"d"
        w.feed(dict(dtype.metadata))


def _array_digest(arr: Any, np: Any) -> bytes:
    """Digest an array's C-order bytes: in place if contiguous, else in copied blocks.

    NB. Streaming xxh3 over the blocks gives the same digest as one pass over a full
    copy, without allocating (and page-faulting) a copy of the whole array.
    """
    if arr.flags.c_contiguous:
        return hash_bytes(arr.reshape(-1).view(np.uint8))
    hasher = xxhash.xxh3_128()
    rows = max(1, _BLOCK_BYTES // max(1, arr.nbytes // len(arr)))
    for start in range(0, len(arr), rows):
        block = np.ascontiguousarray(arr[start : start + rows])
        hasher.update(block.reshape(-1).view(np.uint8))
    return hasher.digest()


def feed_numpy(w: Walker, obj: Any, np: Any) -> bool:
    """Encode numpy arrays and scalars; False if ``obj`` is neither."""
    if isinstance(obj, np.ndarray):
        if type(obj) is np.ndarray or isinstance(obj, np.memmap):
            # A memmap is an array read from a file: same content, same digest.
            _ndarray(w, obj, np)
        elif isinstance(obj, np.ma.MaskedArray):
            w.out += b"w"
            w.ref_type(type(obj))
            _ndarray(w, obj.data, np)
            _ndarray(w, np.ma.getmaskarray(obj), np)
            w.feed(obj.fill_value)
        else:
            w.out += b"O"
            w.ref_type(type(obj))
            _ndarray(w, obj.view(np.ndarray), np)
            w.state(getattr(obj, "__dict__", None))
        return True
    if isinstance(obj, np.generic):
        w.out += b"g"
        _dtype(w, obj.dtype)
        if obj.dtype.hasobject:
            w.feed(obj.item())
        else:
            w.out += encode_bytes(obj.tobytes())
        return True
    return False


def feed_pandas(w: Walker, obj: Any, pd: Any) -> bool:
    """Encode pandas frames, series, indexes and extension arrays; False otherwise."""
    if isinstance(obj, pd.DataFrame):
        w.out += b"Z"
        _pandas_type(w, type(obj))
        _pandas_index(w, obj.index, pd, ".index")
        _pandas_index(w, obj.columns, pd, ".columns")
        w.out += pack_len(obj.shape[1])
        position = 0
        try:
            for position in range(obj.shape[1]):
                _pandas_values(w, obj.iloc[:, position], pd)
        except Failure as failure:
            failure.path.append(f"[{short_repr(obj.columns[position])}]")
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


def _pandas_type(w: Walker, cls: type) -> None:
    """Tag pandas' own classes by name (stable across versions), subclasses by code."""
    if cls.__module__.startswith("pandas."):
        w.out += b"." + encode_str(cls.__qualname__)
    else:
        w.ref_type(cls)


def _pandas_index(w: Walker, index: Any, pd: Any, where: str) -> None:
    """Encode an Index: class, names and per-level values (not codes, which vary)."""
    try:
        w.out += b"W"
        _pandas_type(w, type(index))
        w.feed(list(index.names))
        if isinstance(index, pd.MultiIndex):
            w.out += pack_len(index.nlevels)
            for level in range(index.nlevels):
                _pandas_values(w, index.get_level_values(level), pd)
        elif isinstance(index, pd.RangeIndex):
            w.feed((index.start, index.stop, index.step))
        else:
            _pandas_values(w, index, pd)
        freq = getattr(index, "freq", None)  # DatetimeIndex/TimedeltaIndex: code reads it
        if freq is not None and not isinstance(index, pd.PeriodIndex):
            w.out += b"q"
            w.feed(freq.freqstr)
    except Failure as failure:
        failure.path.append(where)
        raise


def _pandas_values(w: Walker, values: Any, pd: Any) -> None:
    """Encode the dtype and values of a Series, Index or ExtensionArray, exactly.

    NB. ``pd.util.hash_pandas_object`` is not used: it stringifies object columns, so 1
    and "1" collide, and its 64-bit per-row hashes weaken the 128-bit digest.
    """
    np = sys.modules["numpy"]
    dtype = values.dtype
    if isinstance(dtype, np.dtype):
        _ndarray(w, np.asarray(values), np)
        return
    arr = values if isinstance(values, pd.api.extensions.ExtensionArray) else values.array
    w.out += b"v" + encode_str(str(dtype))
    if isinstance(dtype, pd.CategoricalDtype):
        _pandas_index(w, dtype.categories, pd, ".categories")
        w.feed(bool(dtype.ordered))
        _ndarray(w, np.asarray(arr.codes), np)
        return
    if isinstance(dtype, (pd.DatetimeTZDtype, pd.PeriodDtype)):
        _ndarray(w, np.asarray(arr.asi8), np)  # str(dtype) carries the unit and zone
        return
    _ndarray(w, np.asarray(arr.isna(), dtype=bool), np)
    numpy_dtype = getattr(dtype, "numpy_dtype", None)
    if isinstance(dtype, pd.StringDtype):
        _objects(w, arr.to_numpy(dtype=object, na_value="").tolist())
    elif numpy_dtype is not None and numpy_dtype.kind in "biuf":
        _ndarray(w, arr.to_numpy(dtype=numpy_dtype, na_value=numpy_dtype.type(0)), np)
    else:
        _objects(w, arr.to_numpy(dtype=object).tolist())
