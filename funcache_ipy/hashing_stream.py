"""The byte stream values are hashed through: scalar encodings and length prefixes.

Every item in the stream is a one-byte tag plus a length-prefixed or fixed-size payload,
so two different values can never produce the same stream. Shared by the value walker
(``hashing``) and the numpy/pandas encoders (``hashing_arrays``), together with the
internal failure that collects the culprit's path while it unwinds through both.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import xxhash

hash_bytes = xxhash.xxh3_128_digest
pack_len = struct.Struct("<Q").pack
pack_i64 = struct.Struct("<q").pack
_f64 = struct.Struct("<d").pack
_c128 = struct.Struct("<dd").pack


class Failure(Exception):
    """Internal: carries the culprit's type while the path is collected on unwinding."""

    def __init__(self, culprit: type, detail: str = "") -> None:
        super().__init__(culprit, detail)
        self.culprit = culprit
        self.detail = detail
        self.path: list[str] = []


def encode_int(n: int) -> bytes:
    """Encode an int: fixed 8 bytes when it fits, else tagged length + two's complement."""
    try:
        return b"i" + pack_i64(n)
    except struct.error:
        raw = n.to_bytes(n.bit_length() // 8 + 1, "little", signed=True)
        return b"I" + pack_len(len(raw)) + raw


def encode_str(s: str) -> bytes:
    """Encode a str as UTF-8; ``surrogatepass`` so lone surrogates hash instead of failing."""
    raw = s.encode("utf-8", "surrogatepass")
    return b"s" + pack_len(len(raw)) + raw


def encode_bytes(b: bytes) -> bytes:
    """Encode bytes with a length prefix."""
    return b"b" + pack_len(len(b)) + b


# NB. Floats are hashed by their exact bits: 0.0 and -0.0 differ and every NaN payload is
# stable (float("nan"), math.nan and np.nan share one bit pattern).
SCALARS: dict[type, Callable[[Any], bytes]] = {
    type(None): lambda o: b"N",
    bool: lambda o: b"T" if o else b"F",
    int: encode_int,
    float: lambda o: b"f" + _f64(o),
    complex: lambda o: b"c" + _c128(o.real, o.imag),
    str: encode_str,
    bytes: encode_bytes,
    type(...): lambda o: b"E",
    type(NotImplemented): lambda o: b"X",
}


def short_repr(key: Any) -> str:
    """A dict key as shown in an error path, cut short so messages stay one line."""
    text = repr(key)
    return text if len(text) <= 40 else text[:37] + "..."
