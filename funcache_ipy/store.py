"""Hardened diskcache store: string keys -> authenticated envelopes, plus JSON metadata.

diskcache 5.6.3 unpickles whatever a cache row holds (CVE-2025-69872), so anyone who can
write the cache directory could run code in the kernel. This store hands diskcache only
envelopes it sealed itself (:mod:`funcache_ipy.envelope`), through a ``Disk`` that
refuses diskcache's pickle mode, pickled keys and value-file names it did not make, and
verifies every envelope before unpickling. Metadata rides in diskcache's ``tag`` column
as JSON, so listing and explaining never unpickle, and an evicted value takes its
metadata with it; an index on the name in it finds one function's entries directly.

Storage faults never raise: a bad entry is a miss (warned once, deleted), a failed
write returns ``False`` and warns, so the caller always keeps the value it computed.

A group-shared directory (setgid, group-writable: see :mod:`funcache_ipy.safedir`) holds
several users' entries. Each user's secret differs, so nobody can verify a teammate's
entry: each user's rows are keyed ``<key>~<user id>`` (an id derived from the secret), so
teammates computing the same key never read, "repair" or overwrite each other's rows.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import functools
import hashlib
import hmac
import json
import json.scanner
import os
import pickle
import re
import sqlite3
import stat
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final, NamedTuple

import diskcache
from diskcache.core import MODE_BINARY, MODE_PICKLE, MODE_RAW, UNKNOWN

from funcache_ipy.database import (
    STORAGE_ERRORS,
    change_stamp,
    corruption_notice,
    is_corruption,
    move_aside,
    open_database,
    referenced_files,
    tagged_rows,
)
from funcache_ipy.envelope import CorruptEnvelope, Envelope, Sealer, load_secret, secret_path
from funcache_ipy.remote import REMOTE_ENV, RemoteSpec, RemoteTier, tier_for
from funcache_ipy.safedir import SafeDir, UnsafePath

__all__ = [
    "DEFAULT_DIRECTORY",
    "DEFAULT_OUTPUT_LIMIT",
    "DEFAULT_SIZE_LIMIT",
    "ENV_VAR",
    "MISSING",
    "ORPHAN_GRACE",
    "SWEEP_INTERVAL",
    "EntryMeta",
    "FuncacheWarning",
    "Orphans",
    "Store",
    "open_store",
]

DEFAULT_SIZE_LIMIT: Final = 16 * 2**30
DEFAULT_OUTPUT_LIMIT: Final = 2**30
ENV_VAR: Final = "FUNCACHE_IPY_DIR"
DEFAULT_DIRECTORY: Final = ".funcache"
_FILE_THRESHOLD = 2**15  # envelopes from 32 KiB up live in value files, smaller in SQLite
_LARGE = 2**21  # value files from one huge page up are preallocated
# NB. Reserving a file's blocks before writing makes ext4/xfs writes about a third faster
# (numpy's tofile does the same) and fails a too-large write before it starts. Linux only:
# elsewhere posix_fallocate may be emulated by writing a byte into every block.
_PREALLOCATE = sys.platform == "linux"
_HOT_ENTRY_LIMIT = 2**20
_HOT_TOTAL_LIMIT = 64 * 2**20
_TIMEOUT = 10.0  # seconds to wait for SQLite's write lock before giving up on a write
# A value file is written before its row, so one without a row may be a write in progress
# (mtime is its last write): only files older than this count as a killed store's orphans.
ORPHAN_GRACE: Final = 10 * 60.0
# Looking for orphans walks the whole tree, so a store opening does it at most this often
# (stamped in _SWEEP_STAMP's mtime); clear() always does.
SWEEP_INTERVAL: Final = 6 * 3600.0
_SWEEP_STAMP: Final = "orphans-swept"
_VALUE_FILE = re.compile(r"[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{28}\.val")
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


class _EnvelopeDisk(diskcache.Disk):
    """A ``Disk`` that stores only envelopes and never unpickles anything.

    Value files are reached through :attr:`root` only, one link-free component at a time,
    and only under names diskcache could have generated: a forged row, or a symlinked
    sub-directory, could otherwise make it read, overwrite or delete ``~/.bashrc``.
    """

    root: SafeDir  # set on the per-store subclass made by :func:`_disk_for`

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
            return 0, MODE_RAW, None, sqlite3.Binary(value.to_bytes())
        filename, _ = self.filename(key, value)
        filename = filename.replace(os.sep, "/")
        _write_file(self.root, filename, value)
        return value.size, MODE_BINARY, filename, None

    def fetch(
        self, mode: int, filename: str | None, value: object, read: bool
    ) -> bytes | _ValueFile | None:
        """Return an envelope's bytes, or its open value file (read while verifying it).

        ``read=True`` means "the tag only" (``None``).

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
            return _open_value_file(self.root, filename)
        if mode == MODE_PICKLE:
            raise _CorruptEntry("diskcache pickle written by someone else; not unpickled")
        raise _CorruptEntry(f"not a funcache_ipy entry (diskcache mode {mode})")

    def remove(self, file_path: str) -> None:
        """Delete a value file (and the directories it empties), if diskcache named it."""
        if _VALUE_FILE.fullmatch(file_path):
            with contextlib.suppress(OSError):  # gone already, or a link on the way: left alone
                self.root.remove_file(file_path)


def _disk_for(root: SafeDir) -> type[_EnvelopeDisk]:
    """An :class:`_EnvelopeDisk` class bound to ``root`` (diskcache builds its Disk itself)."""
    return type("_EnvelopeDisk", (_EnvelopeDisk,), {"root": root})


def _write_file(root: SafeDir, filename: str, envelope: Envelope) -> None:
    """Write ``envelope`` to a new value file, straight from the value's own buffers.

    NB. A process killed here leaves a file no row refers to; :meth:`Store.orphans`
    counts such files and the store collects them (see :data:`ORPHAN_GRACE`).
    """
    descriptor = root.create_file(filename)
    with open(descriptor, "wb", buffering=0) as file:
        try:
            if _PREALLOCATE and envelope.size >= _LARGE:
                os.posix_fallocate(descriptor, 0, envelope.size)
            envelope.write(file)
        except BaseException:
            with contextlib.suppress(OSError):
                root.remove_file(filename)
            raise


class _ValueFile(NamedTuple):
    """An open value file, to be read (and verified) by :meth:`Store.get`, then closed."""

    descriptor: int
    size: int


def _open_value_file(root: SafeDir, filename: str) -> _ValueFile:
    """Open a value file for reading, refusing links on the way and anything not regular.

    The regular-file check (after a non-blocking, link-refusing open) keeps a planted
    FIFO or device from hanging or feeding the read.
    """
    try:
        descriptor = root.open_file(filename)
    except FileNotFoundError:
        raise _VanishedValue(f"value file {root.path / filename} is missing") from None
    except OSError as exc:
        raise _CorruptEntry(f"cannot open value file: {exc}") from None
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode):
        os.close(descriptor)
        raise _CorruptEntry(f"value file {root.path / filename} is not a regular file")
    return _ValueFile(descriptor, info.st_size)


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


class _Listing:
    """Every entry, oldest first, and by name: valid while the database's stamp is the same.

    Its metadata by tag text spares the next listing parsing the rows it has seen (a row's
    tag never changes): after a few new entries, listing again parses just those.
    """

    def __init__(
        self,
        stamp: tuple[object, int, int],
        entries: list[tuple[str, EntryMeta]],
        by_tag: dict[str, EntryMeta],
    ) -> None:
        self.stamp = stamp
        self.all = entries
        self.by_tag = by_tag
        self.by_name: dict[str, list[tuple[str, EntryMeta]]] = {}
        for entry in entries:
            self.by_name.setdefault(entry[1].name, []).append(entry)


class Orphans(NamedTuple):
    """Value files that no database row refers to: a store killed mid-write leaves one."""

    files: int
    bytes: int


class Store:
    """One cache directory: diskcache underneath, envelopes in it, a hot layer on top.

    Eviction is *least-recently-stored*, not least-recently-used: LRU turns every read
    into a SQLite write transaction (slower hits, lock contention between kernels,
    failures on read-only copies), and the hot layer hides most hits from diskcache
    anyway. With content-addressed keys a still-useful entry that gets evicted is simply
    recomputed and stored afresh; eviction only starts once ``size_limit`` is reached.

    The hot layer is per process: an entry deleted or evicted by another process may
    still be served here, which is safe because a key always names the same result.

    When nothing can be written (full disk, read-only mount or directory) the store
    serves what it holds and stores nothing, saying so once; each later ``set`` tries
    writing again, so freeing space is enough. Storage failures are warned once per
    session and cause, not once per call.
    """

    directory: Path
    # The shared tier asked on a local miss and given what is stored (see open_store).
    remote: RemoteTier | None = None

    def __init__(
        self, directory: str | os.PathLike[str], *, size_limit: int = DEFAULT_SIZE_LIMIT
    ) -> None:
        """Open (creating if needed) the store in ``directory``.

        Raises:
            OSError: the directory, its database or the secret key cannot be created or
                opened, not even for reading; the message names the path and what to do.
        """
        self.directory = Path(directory).expanduser().resolve()
        self._size_limit = size_limit
        # Files a run writes up to this size are stored with its entry, so that a hit can
        # put them back; a bigger one must still be on disk as the run left it.
        self.output_limit = DEFAULT_OUTPUT_LIMIT
        key_path = secret_path()
        secret = load_secret(key_path)
        self._sealer = Sealer(secret)
        # Marks this user's rows in a shared directory; reveals nothing of the secret.
        self._user_id = hmac.digest(secret, b"funcache_ipy user id", hashlib.sha256).hex()[:16]
        self._row_suffix = ""  # "~<user id>" while the directory is group-shared (see _open)
        info = key_path.stat()
        if os.name == "posix" and (info.st_mode & 0o077 or info.st_uid != os.getuid()):
            warnings.warn(
                f"funcache_ipy secret key {key_path} is accessible to other users "
                f"(mode {stat.filemode(info.st_mode)}); run: chmod 600 {key_path}",
                FuncacheWarning,
                stacklevel=_stacklevel(),
            )
        self._hot = _HotBytes(_HOT_TOTAL_LIMIT)
        self._warned: set[str] = set()  # keys whose fault was reported
        self._reported: set[tuple[str, str]] = set()  # (what failed, why): reported once
        self._listing: _Listing | None = None  # the last full listing (see entries)
        self._open()

    def __repr__(self) -> str:
        return f"Store({str(self.directory)!r})"

    @property
    def size_limit(self) -> int:
        """Bytes the directory may hold before the least recently stored entries go.

        One limit per store, and one store per directory in a process, so ``@cache``
        functions and ``%%funcache`` cells sharing a directory share the limit too.
        """
        return self._size_limit

    @size_limit.setter
    def size_limit(self, limit: int) -> None:
        self._size_limit = limit
        self._database.cache.size_limit = limit  # NB. what diskcache's eviction reads

    @property
    def writable(self) -> bool:
        """Whether new results can be stored (``False``: full disk or read-only directory)."""
        return self._database.writable

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
        cache = self._database.cache
        try:
            try:
                data, tag = cache.get(key + self._row_suffix, default=MISSING, tag=True)
            except _VanishedValue:  # maybe overwritten between SELECT and open: look again
                data, tag = cache.get(key + self._row_suffix, default=MISSING, tag=True)
        except _CorruptEntry as exc:
            return self._fault(key, str(exc))
        except STORAGE_ERRORS as exc:
            self._storage_failed(
                "read", exc, f"cannot read the funcache_ipy cache in {self.directory}"
            )
            return MISSING
        if data is MISSING:
            return MISSING if self.remote is None else self._fill_from_remote(self.remote, key)
        try:
            if isinstance(data, _ValueFile):
                size = data.size
                with open(data.descriptor, "rb", buffering=0) as file:
                    stream, buffers = self._sealer.read(file, size, key)
            else:
                size = len(data)
                stream, buffers = self._sealer.unseal(data, key)
        except CorruptEnvelope as exc:
            return self._fault(key, str(exc), tag)
        except OSError as exc:
            return self._fault(key, f"cannot read value file: {exc}", tag)
        try:
            if size >= _HOT_ENTRY_LIMIT:
                return pickle.loads(stream, buffers=buffers)
            hot = (bytes(stream), tuple(bytes(buffer) for buffer in buffers))
            value = _thaw(hot)
        except Exception as exc:  # unpickling runs arbitrary reconstructors
            return self._fault(key, f"cannot unpickle: {exc!r}", tag)
        self._hot.put(key, hot, size)
        return value

    def set(self, key: str, value: object, meta: EntryMeta, *, share: bool = True) -> bool:
        """Store ``value`` under ``key`` with ``meta`` (its ``size`` is filled in here);
        ``share``: upload it to the remote tier too, if there is one.

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
        failure = f"cannot write cache entry {meta.name!r} to {self.directory}"
        try:
            if not self._database.writable or not self._root.is_current():
                self._reopen()  # deleted under us (rm -rf .funcache), or space freed since
            if not self._database.writable:
                return False  # said once, when the store opened read-only
            self._database.cache.set(key + self._row_suffix, envelope, tag=tag)
        except STORAGE_ERRORS as exc:
            self._hot.discard(key)
            self._storage_failed("write", exc, failure)
            return False
        if share and self.remote is not None:
            self.remote.put(key, envelope.stream, envelope.buffers, tag)
        if envelope.size < _HOT_ENTRY_LIMIT:
            hot = (envelope.stream, tuple(bytes(buffer) for buffer in envelope.buffers))
            self._hot.put(key, hot, envelope.size)
        else:
            self._hot.discard(key)
        return True

    def meta(self, key: str) -> EntryMeta | None:
        """The metadata of ``key``'s entry, or ``None`` if absent (read without unpickling)."""
        try:
            row = key + self._row_suffix
            _, tag = self._database.cache.get(row, default=MISSING, read=True, tag=True)
        except STORAGE_ERRORS as exc:
            self._storage_failed(
                "read", exc, f"cannot read the funcache_ipy cache in {self.directory}"
            )
            return None
        if tag is None and self.remote is not None:
            tag = self.remote.meta(key)
        return _parse_meta(tag)

    def entries(self, name: str | None = None) -> list[tuple[str, EntryMeta]]:
        """``(key, meta)`` of the entries of function/cell ``name`` (all if None), oldest first.

        Rows without valid metadata (foreign or damaged) are left out; ``clear()`` removes them.
        One query: by name through an index; and while nothing was written since the last
        full listing, from that listing (``%funcache info`` lists all entries, then each
        function's). The metadata returned is shared with that listing: do not mutate it.
        """
        try:
            stamp = change_stamp(self._database.cache)
            listing = self._listing
            if listing is not None and listing.stamp == stamp:
                found = listing.by_name.get(name, []) if name is not None else listing.all
            else:
                known = listing.by_tag if listing is not None else {}
                rows = tagged_rows(self._database.cache, name)
                found, by_tag = _parsed(rows, known, self._row_suffix)
                if name is None:
                    self._listing = _Listing(stamp, found, by_tag)
        except STORAGE_ERRORS as exc:
            self._storage_failed(
                "read", exc, f"cannot list the funcache_ipy cache in {self.directory}"
            )
            return []
        return list(found)

    def clear(self, name: str | None = None) -> int:
        """Delete the entries of ``name`` (everything if None); return how many went.

        Clearing everything also collects orphaned value files (see :meth:`orphans`).
        """
        failure = f"cannot clear the funcache_ipy cache in {self.directory}"
        if not self._database.writable:
            self._storage_failed("clear", OSError(errno.EROFS, "opened read-only"), failure)
            return 0
        if name is None and not self._root.shared:
            self._hot.clear()
            try:
                removed = int(self._database.cache.clear())
                self._collect_orphans()
            except STORAGE_ERRORS as exc:
                self._storage_failed("clear", exc, failure)
                return 0
            return removed
        # NB. In a shared directory only this user's entries: the others are teammates'.
        removed = self.delete(key for key, _ in self.entries(name))
        if name is None:
            with contextlib.suppress(*STORAGE_ERRORS):
                self._collect_orphans()
        return removed

    def delete(self, keys: Iterable[str]) -> int:
        """Delete the entries ``keys`` (absent ones are skipped); return how many went."""
        failure = f"cannot clear the funcache_ipy cache in {self.directory}"
        if not self._database.writable:
            self._storage_failed("clear", OSError(errno.EROFS, "opened read-only"), failure)
            return 0
        removed = 0
        for key in keys:
            self._hot.discard(key)
            try:
                removed += self._database.cache.delete(key + self._row_suffix)
            except STORAGE_ERRORS as exc:
                self._storage_failed("clear", exc, failure)
                break
        return removed

    def orphans(self) -> Orphans:
        """Value files no entry refers to, and their bytes (what ``%funcache info`` shows).

        A process killed while storing leaves one (the file is written before its row).
        Files older than :data:`ORPHAN_GRACE` are deleted by ``clear()`` and when a
        store opens (at most every :data:`SWEEP_INTERVAL`); younger ones may be a write
        in progress in another process.
        """
        try:
            found = list(self._orphan_files())
        except STORAGE_ERRORS as exc:
            self._storage_failed(
                "read", exc, f"cannot read the funcache_ipy cache in {self.directory}"
            )
            return Orphans(0, 0)
        return Orphans(len(found), sum(info.st_size for _, info in found))

    def volume(self) -> int:
        """Bytes on disk: the SQLite database plus value files."""
        try:
            return int(self._database.cache.volume())
        except STORAGE_ERRORS as exc:
            self._storage_failed(
                "read", exc, f"cannot read the funcache_ipy cache in {self.directory}"
            )
            return 0

    def close(self) -> None:
        """Close this thread's database connection; drop the hot layer and the listing.

        The store stays usable: diskcache reconnects on the next call.
        """
        self._hot.clear()
        self._listing = None
        self._database.cache.close()

    def _fill_from_remote(self, remote: RemoteTier, key: str) -> object:
        """A local miss: the remote tier's verified value, also stored here; else MISSING."""
        found = remote.get(key)
        meta = _parse_meta(found[2]) if found is not None else None
        if found is None or meta is None:
            return MISSING
        try:
            value = pickle.loads(found[0], buffers=found[1])
        except Exception:  # NB. signed by a trusted key, yet not loadable here (versions)
            return MISSING
        self.set(key, value, meta, share=False)
        return value

    def _open(self) -> None:
        """Open the directory (creating it 0o700, with a ``.gitignore`` of ``*``) and database.

        Every setting that matters is passed explicitly, so values planted in the
        database's Settings table cannot change how entries are stored or evicted.
        """
        settings = {
            "size_limit": self._size_limit,
            "eviction_policy": "least-recently-stored",
            "cull_limit": 10,
            "statistics": 0,
            "tag_index": 0,
            "disk_min_file_size": _FILE_THRESHOLD,
        }
        root: SafeDir | None = None
        try:
            root = SafeDir(self.directory, create=True)
            self._check_ownership(root)
            with contextlib.suppress(OSError):  # a read-only directory is still served
                root.write_new(".gitignore", b"*\n")
            database = open_database(root, _disk_for(root), settings, _TIMEOUT)
        except STORAGE_ERRORS as exc:
            if root is not None:
                root.close()
            advice = f"set {ENV_VAR} (or pass directory=...) to a writable location"
            raise OSError(
                f"cannot open the funcache_ipy cache directory {self.directory}: "
                + (str(exc) if isinstance(exc, UnsafePath) else f"{exc}; {advice}")
            ) from exc
        self._root, self._database = root, database
        self._row_suffix = "~" + self._user_id if root.shared else ""
        if database.notice is not None:
            kind = "recovered" if database.recovered else "read-only"
            self._report(("open", kind), database.notice)
        if database.writable and (database.recovered or _sweep_due(root)):
            with contextlib.suppress(*STORAGE_ERRORS):  # collected next time, then
                self._collect_orphans()

    def _reopen(self) -> None:
        """Open directory and database afresh (the old ones were deleted, or read-only)."""
        old_root, old_database = self._root, self._database
        self._open()
        old_database.cache.close()
        old_root.close()

    def _check_ownership(self, root: SafeDir) -> None:
        """Warn (once) when others may write the directory: they could tamper with it.

        A group-shared directory (setgid, group-writable, not world-writable) was shared
        with a team on purpose, whoever owns it: no warning. Teammates can delete entries
        there, never make one load (each user's are authenticated under their own secret).
        """
        info = root.stat()
        if os.name != "posix" or root.shared:
            return
        if not (info.st_mode & 0o022 or info.st_uid != os.geteuid()):
            return
        owner = "owned by another user" if info.st_uid != os.geteuid() else "writable by others"
        self._report(
            ("ownership", owner),
            f"funcache_ipy cache directory {self.directory} is {owner} "
            f"(mode {stat.filemode(info.st_mode)}, uid {info.st_uid}): they can delete or "
            f"plant entries; use a directory of your own, mode 700 (chmod 700 "
            f"{self.directory}), or to share it with your group: chmod 2770",
        )

    def _orphan_files(self) -> Iterator[tuple[str, os.stat_result]]:
        """Value files (by diskcache's naming) that no row refers to."""
        referenced = referenced_files(self._database.cache)
        for filename, info in self._root.files(depth=2):
            if _VALUE_FILE.fullmatch(filename) and filename not in referenced:
                yield filename, info

    def _collect_orphans(self) -> Orphans:
        """Delete orphaned value files older than :data:`ORPHAN_GRACE`; return what went."""
        cutoff = time.time() - ORPHAN_GRACE
        files = size = 0
        for filename, info in list(self._orphan_files()):
            if info.st_mtime < cutoff:
                with contextlib.suppress(OSError):  # gone already: someone else collected it
                    self._root.remove_file(filename)
                    files, size = files + 1, size + info.st_size
        return Orphans(files, size)

    def _storage_failed(self, action: str, exc: BaseException, failure: str) -> None:
        """Report a storage failure once per action and cause; recover a corrupt database."""
        if is_corruption(exc) and self._database.writable:
            with contextlib.suppress(*STORAGE_ERRORS):
                self._recover(exc)
                return
        self._report(
            (action, _cause(exc)),
            f"{failure}: {exc}; {_CONSEQUENCE[action]} (said once per session for this error)",
        )

    def _recover(self, exc: BaseException) -> None:
        """Move a database found corrupt while in use aside, and start a fresh one."""
        self._database.cache.close()
        moved = move_aside(self._root, self._database.identity)
        self._reopen()
        self._hot.clear()
        self._report(("corrupt", str(exc)), corruption_notice(self._root, exc, moved))

    def _report(self, what: tuple[str, str], message: str) -> None:
        """Warn with ``message`` unless ``what`` was reported by this store already."""
        if what not in self._reported:
            self._reported.add(what)
            _warn(message)

    def _fault(self, key: str, reason: str, tag: object = None) -> _Missing:
        """Handle a bad entry: forget and delete it, warn once for this key, miss."""
        meta = _parse_meta(tag) or self.meta(key)
        self._hot.discard(key)
        if self._database.writable:
            with contextlib.suppress(*STORAGE_ERRORS):  # a miss either way; the warning says why
                self._database.cache.delete(key + self._row_suffix)
        if key not in self._warned:
            self._warned.add(key)
            name = meta.name if meta else "<unknown>"
            done = "deleted" if self._database.writable else "left (the cache is read-only)"
            _warn(
                f"cache entry {name!r} (key {key}) in {self.directory} is unusable "
                f"({reason}); it was {done} and will be recomputed"
            )
        return MISSING


_stores_by_argument: dict[tuple[str, str | None], Store] = {}
_stores_by_path: dict[Path, Store] = {}
_stores_lock = threading.Lock()


def environ(name: str) -> str | None:
    """``os.environ.get(name)``, read on every cached call, in ~0.1 µs rather than ~1 µs.

    NB. ``os.environ.get`` raises and catches a ``KeyError`` for an unset name; the
    mapping's own dict (``_data``, there since Python 3.2) answers without one. Any
    other mapping falls back to ``get``.
    """
    data = getattr(os.environ, "_data", None)
    if not isinstance(data, dict):
        return os.environ.get(name)
    raw = data.get(_environ_key(name))
    return None if raw is None else str(os.environ.decodevalue(raw))


@functools.cache
def _environ_key(name: str) -> object:
    return os.environ.encodekey(name)


def open_store(
    directory: str | os.PathLike[str] | None = None, remote: str | RemoteSpec | None = None
) -> Store:
    """The process's one :class:`Store` for ``directory``, opening it on first use.

    ``None`` means ``$FUNCACHE_IPY_DIR`` if set, else ``./.funcache``, read at each call
    (so ``%env`` or ``%cd`` take effect). Called on every cached call, so the common case
    is one dictionary lookup; resolving the path only happens on first use. Spellings
    that resolve to the same real directory share one store, and so one size limit.

    Its remote tier is ``remote``, else ``$FUNCACHE_IPY_REMOTE``, read at each call too
    (NB. one remote per store at a time: a function with a remote= of its own should
    also have a directory= of its own).

    Raises:
        OSError: the directory or the secret key cannot be created; the message says how.
    """
    raw = os.fspath(directory) if directory is not None else environ(ENV_VAR)
    raw = str(raw or DEFAULT_DIRECTORY)
    argument = (raw, None if os.path.isabs(raw) else os.getcwd())
    store = _stores_by_argument.get(argument)
    if store is None:
        path = Path(raw).expanduser().resolve()
        with _stores_lock:
            store = _stores_by_path.get(path)
            if store is None:
                store = Store(path)
                _stores_by_path[path] = store
            _stores_by_argument[argument] = store
    remote = remote or environ(REMOTE_ENV) or None
    if remote is not None or store.remote is not None:
        store.remote = None if remote is None else tier_for(remote, _warn)
    return store


_CONSEQUENCE: Final = {
    "read": "treated as a miss",
    "write": "the result was returned but not cached",
    "clear": "nothing more was deleted",
}


def _sweep_due(root: SafeDir) -> bool:
    """Whether orphans were last looked for over :data:`SWEEP_INTERVAL` ago; if so, stamp now.

    NB. Stamped before sweeping, so kernels starting together do not all walk the tree.
    """
    info = root.lstat(_SWEEP_STAMP)
    if (
        info is not None
        and stat.S_ISREG(info.st_mode)
        and info.st_mtime > time.time() - SWEEP_INTERVAL
    ):
        return False
    with contextlib.suppress(OSError):
        if info is not None and not stat.S_ISREG(info.st_mode):
            root.remove_file(_SWEEP_STAMP)
        root.touch(_SWEEP_STAMP)
    return True


def _cause(exc: BaseException) -> str:
    """What kind of failure ``exc`` is, so each kind is reported once (not each occurrence)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return str(getattr(exc, "sqlite_errorname", "") or f"{type(exc).__name__}: {exc}")


def _parsed(
    rows: list[tuple[object, object]], known: dict[str, EntryMeta], suffix: str
) -> tuple[list[tuple[str, EntryMeta]], dict[str, EntryMeta]]:
    """``(key, meta)`` of this user's rows (keyed ``<key><suffix>``, see the module's
    docstring) with well-formed metadata, oldest first; and their metadata by tag text.
    Tags in ``known`` are not parsed again."""
    found = []
    by_tag = {}
    for row, tag in rows:
        if type(row) is not str or type(tag) is not str:
            continue
        key, mark, user = row.partition("~")
        if mark + user != suffix:  # a teammate's row (or, in a private directory, any such)
            continue
        meta = known.get(tag) or _parse_meta(tag)
        if meta is not None:
            found.append((key, meta))
            by_tag[tag] = meta
    found.sort(key=lambda item: item[1].created)
    return found, by_tag


# json.loads minus its wrappers (whitespace regexes, checks), which cost more than the
# scanning of these short texts; set's tags are json.dumps output, with no whitespace around.
# (typeshed types the scanner's context as a scanner, not the decoder it really is)
_scan_json: Final = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]
_META_FIELDS: Final = frozenset(field.name for field in dataclasses.fields(EntryMeta))
_NUMBERS: Final = (int, float)


def _parse_meta(tag: object) -> EntryMeta | None:
    """Metadata from a row's tag; ``None`` unless it is well-formed (rows can be forged).

    NB. Runs once per entry when everything is listed: plain loops, no generators.
    """
    if type(tag) is not str:
        return None
    try:
        fields, end = _scan_json(tag, 0)
    except (StopIteration, ValueError, RecursionError):  # NB. StopIteration: not JSON at all
        return None
    if end != len(tag) or type(fields) is not dict or fields.keys() != _META_FIELDS:
        return None
    name, created, seconds, size, manifest = (
        fields["name"],
        fields["created"],
        fields["compute_seconds"],
        fields["size"],
        fields["manifest"],
    )
    if (
        type(name) is not str
        or type(created) not in _NUMBERS
        or type(seconds) not in _NUMBERS
        or type(size) is not int
        or type(manifest) is not dict
    ):
        return None
    for item in manifest.values():
        if type(item) is not list:
            return None
        for text in item:
            if type(text) is not str:
                return None
    return EntryMeta(name, created, seconds, size, manifest)


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
