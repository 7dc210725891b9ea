"""Ed25519 signatures for entries shared with other people: who wrote it, and is it intact.

The local store authenticates entries with an HMAC under a per-user secret, which nobody
else can check. A shared tier needs the opposite: anyone may read an entry, and a reader
accepts it only if it was signed by a key the reader trusts (its own, or one listed in
``FUNCACHE_IPY_TRUST``). So each user also has a *signing* key, created beside the secret
key, whose public half is printed by ``python -m funcache_ipy key`` and handed to the team.

Signed object layout (little-endian), one per stored value or metadata record::

    header     "FCIPYSIG", u16 format version, u16 kind, u32 buffer count n, u64 pickle length
    signature  64-byte Ed25519 signature (see below)
    table      n x (u64 offset, u64 length)
    payload    pickle stream, then each buffer at a 64-byte aligned offset

The signature covers the header, the table, the length-prefixed entry key and a SHA-256
digest of the payload. So a signed object cannot be replayed under another key or kind,
and every byte that reaches ``pickle.loads`` -- the stream *and* the buffers -- is covered
by a cryptographic hash (unlike the local envelope's xxh3 checksums, which only need to
catch accidents because the HMAC secret never leaves the machine).

``cryptography`` is imported on first use only, so a local-only cache never pays for it.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from funcache_ipy.envelope import load_secret, secret_path

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

__all__ = [
    "FORMAT",
    "KIND_META",
    "KIND_VALUE",
    "INSTALL_HINT",
    "BadSignature",
    "PayloadDigest",
    "PublicKey",
    "Signer",
    "signing_key_path",
]

FORMAT = 1
KIND_VALUE = 1
KIND_META = 2
INSTALL_HINT = 'pip install "funcache_ipy[s3]"'
_MAGIC = b"FCIPYSIG"
_HEAD = struct.Struct("<8sHHIQ")  # magic, format, kind, buffer count, pickle length
_SLOT = struct.Struct("<QQ")  # offset, length of one buffer
_KEY_LENGTH = struct.Struct("<I")
_SIGNATURE_SIZE = 64
_ALIGN = 64
_TEXT_PREFIX = "ed25519:"
_DOMAIN = b"funcache_ipy signed entry\0"


class BadSignature(ValueError):
    """Not a signed object of this key and kind by this signer (message: why)."""


def _ed25519() -> object:
    """The ``cryptography`` Ed25519 module, or an ImportError that says what to install."""
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise ImportError(
            f"sharing a cache needs the cryptography package: {INSTALL_HINT}"
        ) from exc
    return ed25519


def signing_key_path() -> Path:
    """``signing.key`` beside the secret key (``$XDG_CONFIG_HOME/funcache_ipy/``)."""
    return secret_path().with_name("signing.key")


class PublicKey:
    """A signer's public key: its text form (what users exchange) and its short id."""

    def __init__(self, raw: bytes) -> None:
        _ed25519()
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        self.raw = raw
        self._key: Ed25519PublicKey = Ed25519PublicKey.from_public_bytes(raw)
        # The folder of the signer's entries on the shared tier: short, and path-safe.
        self.id = hashlib.sha256(raw).hexdigest()[:32]

    @classmethod
    def parse(cls, text: str) -> PublicKey:
        """Read ``ed25519:<base64url>`` as printed by ``python -m funcache_ipy key``.

        Raises:
            ValueError: not a public key in that form; the message shows the text.
        """
        body = text.strip()
        if not body.startswith(_TEXT_PREFIX):
            raise ValueError(f"not a funcache_ipy public key: {text!r} (expected ed25519:...)")
        try:
            raw = base64.urlsafe_b64decode(body[len(_TEXT_PREFIX) :] + "=")
            return cls(raw)
        except ValueError as exc:
            raise ValueError(f"not a funcache_ipy public key: {text!r} ({exc})") from None

    def text(self) -> str:
        return _TEXT_PREFIX + base64.urlsafe_b64encode(self.raw).decode().rstrip("=")

    def verify(
        self,
        data: bytes | bytearray | memoryview,
        kind: int,
        key: str,
        digest: PayloadDigest | None = None,
    ) -> tuple[memoryview, list[memoryview]]:
        """Check a signed object of ``key`` and ``kind``; return its pickle stream and buffers.

        The views share ``data``'s memory (writable ``data``, writable buffers).
        ``digest``: the payload's hash, taken while ``data`` arrived; used only if it
        covers exactly this object's payload, else the payload is hashed here.

        Raises:
            BadSignature: truncated, malformed, of another format, key or kind, tampered,
                or signed by someone else.
        """
        from cryptography.exceptions import InvalidSignature

        view = memoryview(data).cast("B")
        size = view.nbytes
        if size < _HEAD.size + _SIGNATURE_SIZE:
            raise BadSignature(f"truncated signed object ({size} bytes)")
        magic, version, stored_kind, count, stream_length = _HEAD.unpack_from(view)
        if magic != _MAGIC:
            raise BadSignature("not a funcache_ipy signed object")
        if version != FORMAT:
            raise BadSignature(f"unsupported signed object format {version}")
        table_start = _HEAD.size + _SIGNATURE_SIZE
        payload_start = table_start + count * _SLOT.size
        if payload_start + stream_length > size:
            raise BadSignature(f"truncated signed object ({size} bytes)")
        hashed = digest.of(data, payload_start) if digest is not None else None
        message = _message(
            bytes(view[: _HEAD.size]),
            view[table_start:payload_start],
            key,
            hashed or hashlib.sha256(view[payload_start:]).digest(),
        )
        try:
            self._key.verify(bytes(view[_HEAD.size : table_start]), message)
        except InvalidSignature:
            raise BadSignature(
                "signature check failed (tampered, or signed by another key)"
            ) from None
        if stored_kind != kind:
            raise BadSignature(f"object of kind {stored_kind}, expected {kind}")
        end = payload_start + stream_length
        stream = view[payload_start:end]
        buffers = []
        for index in range(count):
            start, length = _SLOT.unpack_from(view, table_start + index * _SLOT.size)
            if start < end or start + length > size:
                raise BadSignature(f"buffer {index} lies outside the object")
            end = start + length
            buffers.append(view[start:end])
        return stream, buffers


class PayloadDigest:
    """The SHA-256 of a signed object's payload, taken chunk by chunk as the object arrives.

    Why: hashing 256 MB takes a fair part of its download; hashed as it arrives (hashlib
    lets other threads run while it hashes a large chunk), a download is verified about
    when it ends. :meth:`PublicKey.verify` still checks everything else, and uses this
    digest only for the very object, and payload offset, it was taken of.
    """

    def __init__(self, data: bytearray) -> None:
        self._data = data
        self._view = memoryview(data)  # NB. also pins data's size: it cannot be resized
        self._sha = hashlib.sha256()
        self._start: int | None = None
        self._hashed = 0

    def arrived(self, end: int) -> None:
        """``data[:end]`` is complete: hash what of it is payload and not hashed yet."""
        if self._start is None:
            if end < _HEAD.size:
                return
            count = _HEAD.unpack_from(self._view)[3]
            self._start = self._hashed = _HEAD.size + _SIGNATURE_SIZE + count * _SLOT.size
        if end > self._hashed:
            self._sha.update(self._view[self._hashed : end])
            self._hashed = end

    def of(self, data: object, payload_start: int) -> bytes | None:
        """The digest, if it covers exactly ``data``'s payload from ``payload_start``."""
        whole = data is self._data and self._hashed == len(self._data)
        return self._sha.digest() if whole and self._start == payload_start else None


class Signer:
    """This user's signing key: signs objects for the shared tier."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        self._private = private
        self.public = PublicKey(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    @classmethod
    def load(cls) -> Signer:
        """This user's signer, creating its key (0o600, beside the secret key) on first use.

        An Ed25519 private key is 32 random bytes, exactly what
        :func:`funcache_ipy.envelope.load_secret` creates (atomically, owner-only).

        Raises:
            ImportError: ``cryptography`` is missing; the message says what to install.
            OSError: the key cannot be created or read; the message names the file.
        """
        _ed25519()
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(Ed25519PrivateKey.from_private_bytes(load_secret(signing_key_path())))

    def sign(
        self, kind: int, key: str, stream: bytes | memoryview, buffers: list[memoryview]
    ) -> bytearray:
        """One signed object of ``kind`` for ``key``: a fresh copy of the stream and buffers.

        Copied (once, into the object) so that the caller may change its value at once,
        even while the object is still being uploaded.
        """
        table_start = _HEAD.size + _SIGNATURE_SIZE
        payload_start = table_start + len(buffers) * _SLOT.size
        slots = []
        position = payload_start + len(stream)
        for view in buffers:
            start = -(-position // _ALIGN) * _ALIGN
            slots.append((start, view.nbytes))
            position = start + view.nbytes
        table = b"".join(_SLOT.pack(start, length) for start, length in slots)
        head = _HEAD.pack(_MAGIC, FORMAT, kind, len(buffers), len(stream))
        data = bytearray(position)
        data[payload_start : payload_start + len(stream)] = stream
        for (start, length), view in zip(slots, buffers, strict=True):
            data[start : start + length] = view.cast("B")
        digest = hashlib.sha256(memoryview(data)[payload_start:]).digest()
        message = _message(head, table, key, digest)
        data[: _HEAD.size] = head
        data[_HEAD.size : table_start] = self._private.sign(message)
        data[table_start:payload_start] = table
        return data


def _message(head: bytes, table: bytes | memoryview, key: str, digest: bytes) -> bytes:
    """What is signed: domain, header, table, the length-prefixed key, and ``digest``, the
    SHA-256 of the payload.

    Hashing the payload first keeps the signed message small: Ed25519 would otherwise hash
    a gigabyte twice (SHA-512, in two passes).
    """
    encoded = key.encode()
    return b"".join((_DOMAIN, head, bytes(table), _KEY_LENGTH.pack(len(encoded)), encoded, digest))
