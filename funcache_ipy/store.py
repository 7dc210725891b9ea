"""Hardened diskcache store: string keys -> authenticated envelopes, plus JSON metadata.

diskcache 5.6.3 unpickles whatever a cache row holds (CVE-2025-69872), so anyone who can
write the cache directory could run code in the kernel. This store hands diskcache only
envelopes it sealed itself (:mod:`funcache_ipy.envelope`), through a ``Disk`` that
refuses diskcache's pickle mode, pickled keys and value-file names it did not make, and
verifies every envelope before unpickling. Metadata rides in diskcache's ``tag`` column
as JSON, so listing and explaining never unpickle, and an evicted value takes its
metadata with it.

Storage faults never raise: a bad entry is a miss (warned once, deleted), a failed
write returns ``False`` and warns, so the caller always keeps the value it computed.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import mmap
import os
import pickle
import re
import sqlite3
import stat
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final

import diskcache
from diskcache.core import MODE_BINARY, MODE_PICKLE, MODE_RAW, UNKNOWN

from funcache_ipy.envelope import CorruptEnvelope, Envelope, Sealer, load_secret, secret_path

__all__ = [
    "DEFAULT_DIRECTORY",
    "DEFAULT_SIZE_LIMIT",
    "ENV_VAR",
    "MISSING",
    "EntryMeta",
    "FuncacheWarning",
    "Store",
    "open_store",
]

DEFAULT_SIZE_LIMIT: Final = 16 * 2**30
ENV_VAR: Final = "FUNCACHE_IPY_DIR"
DEFAULT_DIRECTORY: Final = ".funcache"
_FILE_THRESHOLD = 2**15  # envelopes from 32 KiB up live in value files, smaller in SQLite
_LARGE = 2**21  # from one huge page up: preallocated on write, read into a private mapping
# NB. Reserving a file's blocks before writing makes ext4/xfs writes about a third faster
# (numpy's tofile does the same) and fails a too-large write before it starts. Linux only:
# elsewhere posix_fallocate may be emulated by writing a byte into every block.
_PREALLOCATE = sys.platform == "linux"
_HOT_ENTRY_LIMIT = 2**20
_HOT_TOTAL_LIMIT = 64 * 2**20
_TIMEOUT = 10.0  # seconds to wait for SQLite's write lock before giving up on a write
_VALUE_FILE = re.compile(r"[0-9a-f]{2}[/\\][0-9a-f]{2}[/\\][0-9a-f]{28}\.val")
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
_OPEN_FLAGS |= getattr(os, "O_NONBLOCK", 0)
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class FuncacheWarning(UserWarning):
    """Something went wrong with caching, never with the result: it was still returned."""


class _Missing:
    """Type of :data:`MISSING`; ``None`` is a valid cached value, so a miss needs its own."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


@dataclass(frozen=True)
class EntryMeta:
    """What ``%funcache info`` and ``explain`` show about an entry, stored as JSON."""

    name: str
    created: float
    compute_seconds: float
    size: int
    manifest: dict[str, list[str]]


class _CorruptEntry(Exception):
    """A cache row that funcache_ipy did not write, or cannot read (message: why)."""


class _VanishedValue(_CorruptEntry):
    """The row's value file is gone: tampering, or a concurrent overwrite or delete."""


_STORAGE_ERRORS = (OSError, sqlite3.Error, diskcache.Timeout)


class _EnvelopeDisk(diskcache.Disk):
    """A ``Disk`` that stores only envelopes and never unpickles anything.

    It also validates the value-file names found in the database before opening or
    deleting them: a forged row could otherwise name ``~/.bashrc`` and have it removed.
    """

    def put(self, key: object) -> tuple[str, bool]:
        """Keys are strings: SQLite would equate ``1`` and ``1.0``; others are pickled."""
        if type(key) is not str:
            raise TypeError(f"funcache_ipy cache keys are str, not {type(key).__name__}")
        return key, True

    def get(self, key: object, raw: bool) -> object:
        """Return a stored key; a pickled (non-raw) key comes back as a non-str marker."""
        return key if raw else UNKNOWN

    def store(
        self, value: object, read: bool, key: object = UNKNOWN
    ) -> tuple[int, int, str | None, memoryview | None]:
        """Put small envelopes in SQLite, write large ones to a file part by part."""
        if not isinstance(value, Envelope):
            raise TypeError(f"funcache_ipy stores envelopes only, not {type(value).__name__}")
        if value.size < self.min_file_size:
            return 0, MODE_RAW, None, sqlite3.Binary(b"".join(value.parts))
        filename, full_path = self.filename(key, value)
        _write_parts(full_path, value.parts, value.size)
        return value.size, MODE_BINARY, filename, None

    def fetch(
        self, mode: int, filename: str | None, value: object, read: bool
    ) -> bytes | bytearray | mmap.mmap | None:
        """Return an envelope's raw bytes; ``read=True`` means "the tag only" (``None``).

        Raises:
            _CorruptEntry: the row is in a mode funcache_ipy never writes (diskcache's
                pickle mode above all), or its value file is missing or unreadable.
        """
        if read:
            return None
        if mode == MODE_RAW and type(value) is bytes:
            return value
        if mode == MODE_BINARY and value is None and filename is not None:
            if not _VALUE_FILE.fullmatch(filename):
                raise _CorruptEntry(f"value file name {filename!r} was not made by diskcache")
            return _read_file(os.path.join(self._directory, filename))
        if mode == MODE_PICKLE:
            raise _CorruptEntry("diskcache pickle written by someone else; not unpickled")
        raise _CorruptEntry(f"not a funcache_ipy entry (diskcache mode {mode})")

    def remove(self, file_path: str) -> None:
        """Delete a value file, but only one whose name diskcache could have generated."""
        if _VALUE_FILE.fullmatch(file_path):
            super().remove(file_path)


def _write_parts(full_path: str, parts: tuple[bytes | memoryview, ...], size: int) -> None:
    """Write ``parts`` to a new file one by one, so no joined copy of a large value exists.

    NB. Another process's ``Disk.remove`` prunes empty sub-directories, possibly between
    our ``makedirs`` and ``open``; diskcache retries the same way.
    """
    for attempt in range(10):
        os.makedirs(os.path.dirname(full_path), exist_ok=True)
        try:
            file = open(full_path, "xb", buffering=0)  # noqa: SIM115 - closed below
            break
        except FileNotFoundError:
            if attempt == 9:
                raise
    with file:
        try:
            if _PREALLOCATE and size >= _LARGE:
                os.posix_fallocate(file.fileno(), 0, size)
            for part in parts:
                view = memoryview(part).cast("B")
                while view:
                    view = view[file.write(view) :]
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(full_path)
            raise


def _read_file(full_path: str) -> bytes | bytearray | mmap.mmap:
    """Read a value file into fresh, writable memory with a single copy.

    Large files go to a private anonymous mapping advised to use huge pages: a
    ``bytearray`` would first zero-fill (and fault in) every 4 KiB page, which alone
    costs more than reading the file. ``O_NOFOLLOW``/``O_NONBLOCK`` plus the regular-file
    check keep a planted symlink or FIFO from hanging or redirecting the read.
    """
    try:
        descriptor = os.open(full_path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise _VanishedValue(f"value file {full_path} is missing") from None
    except OSError as exc:
        raise _CorruptEntry(f"cannot open value file: {exc}") from None
    with open(descriptor, "rb", buffering=0) as file:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise _CorruptEntry(f"value file {full_path} is not a regular file")
        size = info.st_size
        if size < _LARGE or not hasattr(mmap, "MAP_ANONYMOUS"):
            buffer: bytearray | mmap.mmap = bytearray(size)
        else:
            buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            if hasattr(mmap, "MADV_HUGEPAGE"):
                buffer.madvise(mmap.MADV_HUGEPAGE)
        view = memoryview(buffer)
        position = 0
        try:
            while position < size and (count := file.readinto(view[position:])):
                position += count
        except OSError as exc:
            raise _CorruptEntry(f"cannot read value file: {exc}") from None
    if position < size:
        raise _CorruptEntry(f"value file {full_path} shrank while being read")
    return buffer


_Hot = tuple[bytes, tuple[bytes, ...]]


class _HotBytes:
    """LRU of verified pickle streams and buffers of small entries, bounded in bytes.

    Holding bytes rather than objects is what makes a hit return a fresh object: each
    hit unpickles anew (with fresh writable buffers), so a caller mutating its result
    can never change what the next hit returns.
    """

    def __init__(self, limit: int) -> None:
        self._entries: collections.OrderedDict[str, tuple[_Hot, int]] = collections.OrderedDict()
        self._total = 0
        self._limit = limit
        self._lock = threading.Lock()

    def lookup(self, key: str) -> _Hot | None:
        with self._lock:
            item = self._entries.get(key)
            if item is None:
                return None
            self._entries.move_to_end(key)
            return item[0]

    def put(self, key: str, hot: _Hot, size: int) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            self._total += size - (old[1] if old else 0)
            self._entries[key] = (hot, size)
            while self._total > self._limit:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._total -= evicted

    def discard(self, key: str) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            self._total -= old[1] if old else 0

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._total = 0


def _thaw(hot: _Hot) -> object:
    """Unpickle a hot entry into a brand-new object (buffers copied into bytearrays)."""
    stream, buffers = hot
    if buffers:
        return pickle.loads(stream, buffers=[bytearray(buffer) for buffer in buffers])
    return pickle.loads(stream)


class Store:
    """One cache directory: diskcache underneath, envelopes in it, a hot layer on top.

    Eviction is *least-recently-stored*, not least-recently-used: LRU turns every read
    into a SQLite write transaction (slower hits, lock contention between kernels,
    failures on read-only copies), and the hot layer hides most hits from diskcache
    anyway. With content-addressed keys a still-useful entry that gets evicted is simply
    recomputed and stored afresh; eviction only starts once ``size_limit`` is reached.

    The hot layer is per process: an entry deleted or evicted by another process may
    still be served here, which is safe because a key always names the same result.
    """

    directory: Path

    def __init__(
        self, directory: str | os.PathLike[str], *, size_limit: int = DEFAULT_SIZE_LIMIT
    ) -> None:
        """Open (creating if needed) the store in ``directory``.

        Raises:
            OSError: the directory or the secret key cannot be created or opened; the
                message names the path and what to do.
        """
        self.directory = Path(directory).expanduser().resolve()
        self._size_limit = size_limit
        key_path = secret_path()
        self._sealer = Sealer(load_secret(key_path))
        info = key_path.stat()
        if os.name == "posix" and (info.st_mode & 0o077 or info.st_uid != os.getuid()):
            warnings.warn(
                f"funcache_ipy secret key {key_path} is accessible to other users "
                f"(mode {stat.filemode(info.st_mode)}); run: chmod 600 {key_path}",
                FuncacheWarning,
                stacklevel=_stacklevel(),
            )
        self._hot = _HotBytes(_HOT_TOTAL_LIMIT)
        self._warned: set[str] = set()
        self._cache = self._open_cache()

    def __repr__(self) -> str:
        return f"Store({str(self.directory)!r})"

    def get(self, key: str) -> object:
        """The value stored under ``key``, as a fresh object, or :data:`MISSING`.

        A corrupt, tampered or unreadable entry is a miss: it is deleted and a
        :class:`FuncacheWarning` names it (once per key).
        """
        hot = self._hot.lookup(key)
        if hot is not None:
            try:
                return _thaw(hot)
            except Exception as exc:  # unpickling runs arbitrary reconstructors
                return self._fault(key, f"cannot unpickle: {exc!r}")
        try:
            try:
                data, tag = self._cache.get(key, default=MISSING, tag=True)
            except _VanishedValue:  # maybe overwritten between SELECT and open: look again
                data, tag = self._cache.get(key, default=MISSING, tag=True)
        except _CorruptEntry as exc:
            return self._fault(key, str(exc))
        except _STORAGE_ERRORS as exc:
            _warn(f"cannot read the funcache_ipy cache in {self.directory}: {exc}")
            return MISSING
        if data is MISSING:
            return MISSING
        try:
            stream, buffers = self._sealer.unseal(data, key)
            if len(data) >= _HOT_ENTRY_LIMIT:
                return pickle.loads(stream, buffers=buffers)
            hot = (bytes(stream), tuple(bytes(buffer) for buffer in buffers))
            value = _thaw(hot)
        except CorruptEnvelope as exc:
            return self._fault(key, str(exc), tag)
        except Exception as exc:  # unpickling runs arbitrary reconstructors
            return self._fault(key, f"cannot unpickle: {exc!r}", tag)
        self._hot.put(key, hot, len(data))
        return value

    def set(self, key: str, value: object, meta: EntryMeta) -> bool:
        """Store ``value`` under ``key`` with ``meta`` (its ``size`` is filled in here).

        Returns:
            Whether the value was stored. ``False`` (with a :class:`FuncacheWarning`)
            when it cannot be pickled or the write fails; nothing is raised.
        """
        if type(key) is not str:
            raise TypeError(f"funcache_ipy cache keys are str, not {type(key).__name__}")
        try:
            envelope = self._sealer.seal(value, key)
        except Exception as exc:  # pickling runs arbitrary __reduce__ code
            _warn(
                f"cannot store result of type {_type_name(value)}: {exc}; "
                "it was returned but not cached"
            )
            return False
        tag = json.dumps(dataclasses.asdict(dataclasses.replace(meta, size=envelope.size)))
        try:
            if not os.path.isdir(self.directory):  # deleted under us (rm -rf .funcache)
                self._cache.close()
                self._cache = self._open_cache()
            self._cache.set(key, envelope, tag=tag)
        except _STORAGE_ERRORS as exc:
            self._hot.discard(key)
            _warn(
                f"cannot write cache entry {meta.name!r} to {self.directory}: {exc}; "
                "the result was returned but not cached"
            )
            return False
        if envelope.size < _HOT_ENTRY_LIMIT:
            hot = (envelope.stream, tuple(bytes(buffer) for buffer in envelope.buffers))
            self._hot.put(key, hot, envelope.size)
        else:
            self._hot.discard(key)
        return True

    def meta(self, key: str) -> EntryMeta | None:
        """The metadata of ``key``'s entry, or ``None`` if absent (read without unpickling)."""
        try:
            _, tag = self._cache.get(key, default=MISSING, read=True, tag=True)
        except _STORAGE_ERRORS as exc:
            _warn(f"cannot read the funcache_ipy cache in {self.directory}: {exc}")
            return None
        return _parse_meta(tag)

    def entries(self, name: str | None = None) -> list[tuple[str, EntryMeta]]:
        """``(key, meta)`` of the entries of function/cell ``name`` (all if None), oldest first.

        Rows without valid metadata (foreign or damaged) are left out; ``clear()`` removes them.
        """
        found = []
        try:
            for key in list(self._cache.iterkeys()):
                if type(key) is str:
                    _, tag = self._cache.get(key, default=MISSING, read=True, tag=True)
                    meta = _parse_meta(tag)
                    if meta is not None and (name is None or meta.name == name):
                        found.append((key, meta))
        except _STORAGE_ERRORS as exc:
            _warn(f"cannot list the funcache_ipy cache in {self.directory}: {exc}")
        found.sort(key=lambda item: item[1].created)
        return found

    def clear(self, name: str | None = None) -> int:
        """Delete the entries of ``name`` (everything if None); return how many went."""
        if name is None:
            self._hot.clear()
            try:
                return int(self._cache.clear())
            except _STORAGE_ERRORS as exc:
                _warn(f"cannot clear the funcache_ipy cache in {self.directory}: {exc}")
                return 0
        removed = 0
        for key, _ in self.entries(name):
            self._hot.discard(key)
            try:
                removed += self._cache.delete(key)
            except _STORAGE_ERRORS as exc:
                _warn(f"cannot clear the funcache_ipy cache in {self.directory}: {exc}")
                break
        return removed

    def volume(self) -> int:
        """Bytes on disk: the SQLite database plus value files."""
        try:
            return int(self._cache.volume())
        except _STORAGE_ERRORS as exc:
            _warn(f"cannot read the funcache_ipy cache in {self.directory}: {exc}")
            return 0

    def close(self) -> None:
        """Close this thread's database connection and drop the hot layer.

        The store stays usable: diskcache reconnects on the next call.
        """
        self._hot.clear()
        self._cache.close()

    def _open_cache(self) -> diskcache.Cache:
        """Create the directory (0o700, ``.gitignore`` of ``*``) and open diskcache in it.

        Every setting that matters is passed explicitly, so values planted in the
        database's Settings table cannot change how entries are stored or evicted.
        """
        directory = self.directory
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError), open(directory / ".gitignore", "x") as f:
                f.write("*\n")
            return diskcache.Cache(
                str(directory),
                timeout=_TIMEOUT,
                disk=_EnvelopeDisk,
                size_limit=self._size_limit,
                eviction_policy="least-recently-stored",
                cull_limit=10,
                statistics=0,
                tag_index=0,
                disk_min_file_size=_FILE_THRESHOLD,
            )
        except _STORAGE_ERRORS as exc:
            raise OSError(
                f"cannot open the funcache_ipy cache directory {directory}: {exc}; "
                f"set {ENV_VAR} (or pass directory=...) to a writable location"
            ) from exc

    def _fault(self, key: str, reason: str, tag: object = None) -> _Missing:
        """Handle a bad entry: forget and delete it, warn once for this key, miss."""
        meta = _parse_meta(tag) or self.meta(key)
        self._hot.discard(key)
        with contextlib.suppress(*_STORAGE_ERRORS):  # a miss either way; the warning says why
            self._cache.delete(key)
        if key not in self._warned:
            self._warned.add(key)
            name = meta.name if meta else "<unknown>"
            _warn(
                f"cache entry {name!r} (key {key}) in {self.directory} is unusable "
                f"({reason}); it was deleted and will be recomputed"
            )
        return MISSING


_stores_by_argument: dict[tuple[str, str | None, int], Store] = {}
_stores_by_path: dict[tuple[Path, int], Store] = {}
_stores_lock = threading.Lock()


def open_store(
    directory: str | os.PathLike[str] | None = None, *, size_limit: int = DEFAULT_SIZE_LIMIT
) -> Store:
    """The process's one :class:`Store` for ``directory``, opening it on first use.

    ``None`` means ``$FUNCACHE_IPY_DIR`` if set, else ``./.funcache``, read at each call
    (so ``%env`` or ``%cd`` take effect). Called on every cached call, so the common case
    is one dictionary lookup; resolving the path only happens on first use.

    Raises:
        OSError: the directory or the secret key cannot be created; the message says how.
    """
    raw = os.fspath(directory) if directory is not None else os.environ.get(ENV_VAR)
    raw = str(raw or DEFAULT_DIRECTORY)
    argument = (raw, None if os.path.isabs(raw) else os.getcwd(), size_limit)
    store = _stores_by_argument.get(argument)
    if store is None:
        path = Path(raw).expanduser().resolve()
        with _stores_lock:
            store = _stores_by_path.get((path, size_limit))
            if store is None:
                store = Store(path, size_limit=size_limit)
                _stores_by_path[path, size_limit] = store
            _stores_by_argument[argument] = store
    return store


def _parse_meta(tag: object) -> EntryMeta | None:
    """Metadata from a row's tag; ``None`` unless it is well-formed (rows can be forged)."""
    if type(tag) is not str:
        return None
    try:
        meta = EntryMeta(**json.loads(tag))
    except (ValueError, TypeError, RecursionError):
        return None
    manifest = meta.manifest
    valid = (
        type(meta.name) is str
        and all(type(x) in (int, float) for x in (meta.created, meta.compute_seconds))
        and type(meta.size) is int
        and type(manifest) is dict
        and all(
            type(item) is list and all(type(text) is str for text in item)
            for item in manifest.values()
        )
    )
    return meta if valid else None


def _type_name(value: object) -> str:
    """``module.Qualname`` of ``value``'s type (just ``qualname`` for builtins)."""
    kind = type(value)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def _stacklevel() -> int:
    """Stack level of the first frame outside this package, so warnings blame user code."""
    level = 1
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    return level


def _warn(message: str) -> None:
    """Issue a :class:`FuncacheWarning` pointing at the user's code."""
    warnings.warn(message, FuncacheWarning, stacklevel=_stacklevel())
