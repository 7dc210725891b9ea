"""Authenticated envelopes: the only bytes funcache_ipy ever writes to, or unpickles from, disk.

Unpickling runs code chosen by whoever wrote the bytes, so a cache directory that someone
else can write is a way into the kernel (CVE-2025-69872 is exactly that for diskcache's
own pickles). An envelope therefore carries an HMAC-SHA256 tag under a per-user secret
key kept *outside* the cache directory, and :meth:`Sealer.read` checks it before a
single pickle opcode is read.

Layout (little-endian), sized so that large numpy buffers need no copy either way::

    header   "FCIPYENV", u16 format version, u16 reserved, u32 buffer count n, u64 pickle length
    table    n x (u64 offset, u64 length, 16-byte keyed xxh3-128 of the buffer)
    tag      32-byte HMAC-SHA256 over header + table + entry key + pickle stream
    pickle   protocol-5 stream whose out-of-band buffers are listed in the table
    buffers  raw buffer bytes, each at a 64-byte aligned offset

The tag binds the entry's key, so a valid envelope cannot be replayed under another key.
Buffers (array data, possibly gigabytes) are covered by keyed xxh3-128 checksums stored
in the authenticated table instead of by the HMAC itself: hashing them with SHA-256 would
cost more than reading them, and buffer bytes are only ever handed to the reconstructors
that the authenticated pickle stream names -- they are never parsed as pickle.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import mmap
import os
import pickle
import queue
import secrets
import struct
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import xxhash

__all__ = [
    "SECRET_SIZE",
    "CorruptEnvelope",
    "Envelope",
    "Sealer",
    "load_secret",
    "secret_path",
]

SECRET_SIZE = 32
_MAGIC = b"FCIPYENV"
_VERSION = 1
_HEAD = struct.Struct("<8sHHIQ")  # magic, version, reserved, buffer count, pickle length
_SLOT = struct.Struct("<QQ16s")  # offset, length, keyed xxh3-128 of one buffer
_KEY_LENGTH = struct.Struct("<I")
_TAG_SIZE = 32
_ALIGN = 64  # numpy wants aligned data; 64 also keeps buffers on cache-line boundaries
# Buffers are checksummed a chunk at a time, each right after it is read or written,
# while it is still in a CPU cache. Measured on a 2 MiB-L2 Xeon: 1 MiB costs least;
# 64 KiB a third more (per-call overhead), 4 MiB a tenth more (it leaves the L2).
_CHUNK = 2**20
_LARGE = 2**21  # from one huge page up, a buffer gets memory of its own (see _allocate)
# From this many buffer bytes up, a second thread shares a read or write (see
# _read_buffers, _Checksums): starting it costs ~0.1 ms, reading 8 MiB ~2 ms.
_PARALLEL_FROM = 8 * 2**20
Buffer = bytearray | memoryview


class SeekableFile(Protocol):
    """What envelopes are written to and read from: a value file, or ``io.BytesIO``."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...

    def write(self, data: memoryview, /) -> int | None: ...

    def seek(self, offset: int, /) -> int: ...


class CorruptEnvelope(ValueError):
    """The bytes are not an envelope sealed for this key under this secret (message: why)."""


class Envelope:
    """A sealed value, not yet written: its checksums are computed while it is written.

    The buffers are views of the caller's own objects (no copy), so an envelope must be
    written before the value is mutated. :meth:`write` checksums each chunk of a buffer
    as soon as it is written, while it is in a CPU cache: a separate pass over a large
    buffer would read all of it from memory once more.
    """

    __slots__ = ("_key", "_sealer", "_starts", "buffers", "size", "stream")

    def __init__(self, sealer: Sealer, key: str, stream: bytes, buffers: list[memoryview]) -> None:
        self._sealer = sealer
        self._key = key
        self.stream = stream
        self.buffers = buffers
        position = _HEAD.size + len(buffers) * _SLOT.size + _TAG_SIZE + len(stream)
        self._starts: list[int] = []
        for view in buffers:
            position = -(-position // _ALIGN) * _ALIGN
            self._starts.append(position)
            position += view.nbytes
        self.size = position

    def to_bytes(self) -> bytes:
        """The envelope's bytes, in one piece (for small envelopes)."""
        file = io.BytesIO()
        self.write(file)
        return file.getvalue()

    def write(self, file: SeekableFile) -> None:
        """Write the envelope to the empty, seekable ``file`` (in which it is all there is).

        The header goes in last, once the checksums it holds are known.
        """
        position = _HEAD.size + len(self.buffers) * _SLOT.size + _TAG_SIZE
        file.seek(position)
        _write_all(file, self.stream)
        position += len(self.stream)
        with _Checksums(self._sealer, self.buffers) as checksums:
            for index, (view, start) in enumerate(zip(self.buffers, self._starts, strict=True)):
                _write_all(file, bytes(start - position))  # alignment padding
                for offset in range(0, view.nbytes, _CHUNK):
                    chunk = view[offset : offset + _CHUNK]
                    _write_all(file, chunk)
                    checksums.update(index, chunk)
                position = start + view.nbytes
            digests = checksums.digests()
        head = _HEAD.pack(_MAGIC, _VERSION, 0, len(self.buffers), len(self.stream))
        head += b"".join(
            _SLOT.pack(start, view.nbytes, checksum)
            for view, start, checksum in zip(self.buffers, self._starts, digests, strict=True)
        )
        file.seek(0)
        _write_all(file, head + self._sealer._tag(head, self._key, self.stream))


def _fill(view: memoryview, read: Callable[[memoryview, int], int | None]) -> None:
    """Fill ``view`` by calls ``read(rest, filled)``, each returning how much it read.

    Raises:
        CorruptEnvelope: the file ended first (it shrank while being read).
    """
    filled = 0
    while filled < view.nbytes:
        count = read(view[filled:], filled)
        if not count:
            raise CorruptEnvelope("envelope file shrank while being read")
        filled += count


def _read_into(file: SeekableFile, view: memoryview) -> None:
    """Fill ``view`` from ``file``'s current position (see :func:`_fill`)."""
    _fill(view, lambda rest, _: file.readinto(rest))


def _pread_into(descriptor: int, view: memoryview, position: int) -> None:
    """Fill ``view`` from the file at ``position``, leaving its file offset alone."""
    _fill(view, lambda rest, filled: os.preadv(descriptor, [rest], position + filled))


def _read_buffers(
    file: SeekableFile, starts: Sequence[int], views: Sequence[memoryview], hashers: list[Any]
) -> None:
    """Fill each of ``views`` from ``file`` at its start, feeding ``hashers`` (one each).

    A chunk at a time, each checksummed right after it is read, while it is in the CPU
    cache. From :data:`_PARALLEL_FROM` bytes up, and from a real file, two threads share
    the work: reading from the page cache and xxhash both release the GIL, and both are
    bound by one core's memory bandwidth, so a second core shortens the read (reading
    and unpickling a 24 MiB frame: ~7.5 ms rather than ~10.5, as fast as ``pickle.loads``
    of its bytes in memory). The calling thread reads and checksums
    the first half of the bytes, a helper the second half; a buffer cut by the middle is
    checksummed by the caller, its second part once the helper is done. A thread per
    read, not a pool: a pool's idle thread does not survive ``fork``.

    Raises:
        CorruptEnvelope: the file ended first (it shrank while being read).
    """
    chunks = [
        (index, offset)
        for index, view in enumerate(views)
        for offset in range(0, view.nbytes, _CHUNK)
    ]
    descriptor = _descriptor(file)
    total = sum(view.nbytes for view in views)
    if descriptor is None or total < _PARALLEL_FROM:
        for index, offset in chunks:
            chunk = views[index][offset : offset + _CHUNK]
            if offset == 0:  # NB. a buffer's chunks follow each other
                file.seek(starts[index])
            _read_into(file, chunk)
            hashers[index].update(chunk)
        return
    middle, done = total // 2, 0
    split = len(chunks)
    for position, (index, offset) in enumerate(chunks):
        done += min(_CHUNK, views[index].nbytes - offset)
        if done >= middle:
            split = position + 1
            break
    first, second = chunks[:split], chunks[split:]
    cut = first[-1][0] if second and second[0][0] == first[-1][0] else None
    failed: list[BaseException] = []

    def read(part: list[tuple[int, int]], skip: int | None) -> None:
        for index, offset in part:
            chunk = views[index][offset : offset + _CHUNK]
            _pread_into(descriptor, chunk, starts[index] + offset)
            if index != skip:
                hashers[index].update(chunk)

    def read_second() -> None:
        try:
            read(second, skip=cut)
        except BaseException as exc:  # NB. re-raised in the calling thread
            failed.append(exc)

    helper = threading.Thread(target=read_second, name="funcache_ipy read", daemon=True)
    helper.start()
    try:
        read(first, skip=None)
    finally:
        helper.join()
    if failed:
        raise failed[0]
    for index, offset in second:
        if index == cut:
            hashers[index].update(views[index][offset : offset + _CHUNK])


def _descriptor(file: SeekableFile) -> int | None:
    """``file``'s descriptor, if it is a real file (positional reads need one)."""
    try:
        return file.fileno() if isinstance(file, io.FileIO) else None
    except (OSError, ValueError):
        return None


class _Checksums:
    """Keyed xxh3-128 checksums of the buffers of an envelope being written, a chunk at a time.

    Small envelopes hash each chunk on the spot, right after it is written, while it is
    in the CPU cache. From :data:`_PARALLEL_FROM` bytes up a helper thread hashes chunk i
    while the caller writes chunk i+1: xxhash and file I/O both release the GIL, so a
    second core takes the hashing off the critical path (a 256 MB store ~20% faster).
    Not two writers, as reads have (:func:`_read_buffers`): buffered writes to one file
    take its inode lock, so they would not run side by side. A thread per envelope, not
    a pool: a pool's idle thread does not survive ``fork`` (process-pool workers). Use
    as a context manager, so the thread ends however the write ends.
    """

    def __init__(self, sealer: Sealer, buffers: Sequence[Buffer]) -> None:
        self._hashers = [sealer._checksum() for _ in buffers]
        self._chunks: queue.SimpleQueue[tuple[Any, memoryview] | None] | None = None
        self._thread: threading.Thread | None = None
        if sum(memoryview(buffer).nbytes for buffer in buffers) >= _PARALLEL_FROM:
            self._chunks = queue.SimpleQueue()
            self._thread = threading.Thread(
                target=self._hash_forever, name="funcache_ipy checksums", daemon=True
            )
            self._thread.start()

    def __enter__(self) -> _Checksums:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._join()

    def update(self, index: int, chunk: memoryview) -> None:
        """Add ``chunk`` (not to change until :meth:`digests`) to buffer ``index``'s checksum."""
        if self._chunks is None:
            self._hashers[index].update(chunk)
        else:
            self._chunks.put((self._hashers[index], chunk))

    def digests(self) -> list[bytes]:
        """Every buffer's checksum, once all chunks are in."""
        self._join()
        return [hasher.digest() for hasher in self._hashers]

    def _hash_forever(self) -> None:
        assert self._chunks is not None
        while (item := self._chunks.get()) is not None:
            hasher, chunk = item
            hasher.update(chunk)

    def _join(self) -> None:
        if self._thread is not None and self._chunks is not None:
            self._chunks.put(None)
            self._thread.join()
            self._thread = None


def _allocate(size: int) -> Buffer:
    """Fresh writable memory for one buffer, to become an unpickled array's own memory.

    With numpy loaded (whose arrays these buffers become), numpy's allocator: it reuses
    memory the process freed (the frame a hit replaces) and advises huge pages from
    4 MiB up, so a repeated hit restoring a 24 MiB frame reads in a third of the time
    of a fresh mapping each time. Without numpy, large buffers get a private anonymous
    mapping advised to use huge pages: a ``bytearray`` would first zero-fill (and fault
    in) every 4 KiB page, which alone costs about as much as reading the file.
    """
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        return memoryview(numpy.empty(size, numpy.uint8))
    if size < _LARGE or not hasattr(mmap, "MAP_ANONYMOUS"):
        return bytearray(size)
    buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        buffer.madvise(mmap.MADV_HUGEPAGE)
    return memoryview(buffer)  # NB. bytes-like: a stored PickleBuffer comes back as this


def _write_all(file: SeekableFile, data: bytes | memoryview) -> None:
    """Write all of ``data`` (a raw file may write less than asked)."""
    view = memoryview(data).cast("B")
    while view:
        view = view[file.write(view) or 0 :]


def _datetime_array(data: Any, dtype: Any) -> Any:
    """Rebuild a datetime64/timedelta64 array from its int64 view (see :class:`_Pickler`)."""
    return data.view(dtype)


class _Pickler(pickle.Pickler):
    """Protocol-5 pickler that also sends datetime64/timedelta64 array data out of band.

    NB. numpy pickles arrays whose dtype carries metadata (datetime units) in band, so a
    DataFrame's timestamp column would land in the pickle stream, which is authenticated
    with SHA-256 (~2 GB/s) instead of checksummed with xxh3 (~30 GB/s). Sent as an int64
    view, the same bytes travel out of band and are viewed back on load.
    """

    def reducer_override(self, obj: Any) -> Any:
        numpy = sys.modules.get("numpy")
        if (
            numpy is not None
            and type(obj) is numpy.ndarray
            and obj.dtype.kind in "mM"
            and (obj.flags.c_contiguous or obj.flags.f_contiguous)
        ):
            return _datetime_array, (obj.view(numpy.int64), obj.dtype)
        return NotImplemented


class Discard:
    """A file that forgets what is written to it: pickling dry runs (can it pickle?)."""

    def write(self, data: bytes) -> int:
        return len(data)


def out_of_band(buffer: pickle.PickleBuffer) -> bool:
    """A ``buffer_callback`` keeping every buffer out of band, so a dry run copies none."""
    return False  # NB. false means out of band


class Sealer:
    """Seals values into envelopes and verifies envelopes under one secret key."""

    def __init__(self, secret: bytes) -> None:
        self._hmac = hmac.new(secret, digestmod=hashlib.sha256)
        seed = hmac.digest(secret, b"funcache_ipy buffer checksum seed", "sha256")
        self._seed = int.from_bytes(seed[:8], "little")

    def seal(self, value: object, key: str) -> Envelope:
        """Pickle ``value`` (protocol 5, buffers out of band) into an envelope for ``key``.

        Raises:
            Exception: whatever pickling ``value`` raises (unpicklable objects).
        """
        buffers: list[memoryview] = []
        sink = io.BytesIO()
        _Pickler(sink, protocol=5, buffer_callback=lambda b: buffers.append(b.raw())).dump(value)
        return Envelope(self, key, sink.getvalue(), buffers)

    def unseal(
        self, data: bytes | bytearray | memoryview, key: str
    ) -> tuple[memoryview, list[Buffer]]:
        """Verify ``data`` as the envelope of ``key``; return its pickle stream and buffers.

        Raises:
            CorruptEnvelope: as :meth:`read`.
        """
        return self.read(io.BytesIO(data), memoryview(data).nbytes, key)

    def read(self, file: SeekableFile, size: int, key: str) -> tuple[memoryview, list[Buffer]]:
        """Read and verify the envelope of ``key`` from ``file`` (``size`` bytes, all of it).

        Nothing is trusted before the HMAC over header, table, key and pickle stream checks
        out. Each buffer is then read into memory of its own (writable, so arrays unpickled
        from it need no copy) a chunk at a time, and each chunk checksummed as soon as it
        is read, while it is in a CPU cache: one pass over memory, as ``np.load`` makes.

        Raises:
            CorruptEnvelope: truncated, malformed, tampered, or sealed under another
                secret or for another key; or the file shrank while being read.
            OSError: reading failed.
        """
        if size < _HEAD.size:
            raise CorruptEnvelope(f"truncated envelope ({size} bytes)")
        head = bytearray(_HEAD.size)
        _read_into(file, memoryview(head))
        magic, version, _, count, stream_length = _HEAD.unpack(head)
        if magic != _MAGIC:
            raise CorruptEnvelope("not a funcache_ipy envelope")
        if version != _VERSION:
            raise CorruptEnvelope(f"unsupported envelope format {version}")
        table_end = _HEAD.size + count * _SLOT.size
        stream_start = table_end + _TAG_SIZE
        stream_end = stream_start + stream_length
        if stream_end > size:
            raise CorruptEnvelope(f"truncated envelope ({size} bytes)")
        front = head + bytes(stream_end - _HEAD.size)
        view = memoryview(front)
        _read_into(file, view[_HEAD.size :])
        stream = view[stream_start:]
        expected = self._tag(view[:table_end], key, stream)
        if not hmac.compare_digest(expected, view[table_end:stream_start]):
            raise CorruptEnvelope("authentication failed (tampered, or sealed under another key)")
        slots = [_SLOT.unpack_from(view, _HEAD.size + i * _SLOT.size) for i in range(count)]
        end = stream_end
        for start, length, _ in slots:
            if start < end or start + length > size:
                raise CorruptEnvelope(f"truncated envelope ({size} bytes)")
            end = start + length
        if end != size:
            raise CorruptEnvelope(f"envelope is {size} bytes, expected {end}")
        buffers = [_allocate(length) for _, length, _ in slots]
        hashers = [self._checksum() for _ in slots]
        starts = [start for start, _, _ in slots]
        _read_buffers(file, starts, [memoryview(buffer) for buffer in buffers], hashers)
        for index, ((_, _, expected), hasher) in enumerate(zip(slots, hashers, strict=True)):
            if hasher.digest() != expected:
                raise CorruptEnvelope(f"checksum mismatch in buffer {index}")
        return stream, buffers

    def _checksum(self) -> Any:
        """A fresh keyed xxh3-128 hasher for one buffer."""
        return xxhash.xxh3_128(seed=self._seed)

    def _tag(self, head: bytes | memoryview, key: str, stream: bytes | memoryview) -> bytes:
        """HMAC of header + table, the length-prefixed key and the pickle stream."""
        mac = self._hmac.copy()
        encoded = key.encode()
        mac.update(head)
        mac.update(_KEY_LENGTH.pack(len(encoded)))
        mac.update(encoded)
        mac.update(stream)
        return mac.digest()


def secret_path() -> Path:
    """Where the per-user secret key lives: ``$XDG_CONFIG_HOME/funcache_ipy/secret.key``.

    Read at call time. A relative ``XDG_CONFIG_HOME`` is ignored, as the XDG spec says,
    so the key never lands in (and travels with) a project directory.
    """
    base = os.environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".config"
    return root / "funcache_ipy" / "secret.key"


def load_secret(path: Path) -> bytes:
    """Read the secret key at ``path``, creating it (0o600, directory 0o700) on first use.

    Creation publishes a fully written temporary file with ``os.link``, which fails if
    the name exists: two processes starting at once both end up reading the one key
    that was linked first, and no reader can ever see a half-written key.

    Raises:
        OSError: the key cannot be created or read, or has the wrong length; the
            message names the file and what to do.
    """
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(secrets.token_bytes(SECRET_SIZE))
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process published its key first: everyone uses that one
        finally:
            temporary.unlink()
    except OSError as exc:
        raise OSError(
            f"cannot create the funcache_ipy secret key {path}: {exc}; "
            "set XDG_CONFIG_HOME to a writable directory"
        ) from exc
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    """The key's bytes; a key of the wrong length is refused rather than padded."""
    with open(path, "rb") as file:
        secret = file.read(SECRET_SIZE + 1)
    if len(secret) != SECRET_SIZE:
        raise OSError(
            f"funcache_ipy secret key {path} holds {len(secret)} bytes, expected "
            f"{SECRET_SIZE}; delete it to create a new one (cached entries will be recomputed)"
        )
    return secret
