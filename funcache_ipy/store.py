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

import contextlib
import errno
import hashlib
import hmac
import os
import pickle
import stat
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from funcache_ipy.cache_directory import DEFAULT_DIRECTORY, ENV_VAR, open_directory
from funcache_ipy.database import (
    STORAGE_ERRORS,
    change_stamp,
    corruption_notice,
    is_corruption,
    move_aside,
    tagged_rows,
)
from funcache_ipy.entry_meta import EntryMeta, Listing, parse_meta, parsed
from funcache_ipy.envelope import CorruptEnvelope, Sealer, load_secret, secret_path
from funcache_ipy.environment import environ
from funcache_ipy.hot_layer import HotBytes, thaw
from funcache_ipy.missing import MISSING, Missing
from funcache_ipy.orphans import Orphans, collect_orphans, orphan_files, sweep_due
from funcache_ipy.remote import REMOTE_ENV, RemoteSpec, RemoteTier, tier_for
from funcache_ipy.value_files import CorruptEntry, ValueFile, VanishedValue
from funcache_ipy.warning import FuncacheWarning, stacklevel, warn

__all__ = [
    "DEFAULT_OUTPUT_LIMIT",
    "DEFAULT_SIZE_LIMIT",
    "MISSING",
    "EntryMeta",
    "FuncacheWarning",
    "Store",
    "environ",
    "open_store",
]

DEFAULT_SIZE_LIMIT: Final = 16 * 2**30
DEFAULT_OUTPUT_LIMIT: Final = 2**30
_HOT_ENTRY_LIMIT = 2**20
_HOT_TOTAL_LIMIT = 64 * 2**20


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
                stacklevel=stacklevel(),
            )
        self._hot = HotBytes(_HOT_TOTAL_LIMIT)
        self._warned: set[str] = set()  # keys whose fault was reported
        self._reported: set[tuple[str, str]] = set()  # (what failed, why): reported once
        self._listing: Listing | None = None  # the last full listing (see entries)
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
                return thaw(hot)
            except Exception as exc:  # unpickling runs arbitrary reconstructors
                return self._fault(key, f"cannot unpickle: {exc!r}")
        cache = self._database.cache
        try:
            try:
                data, tag = cache.get(key + self._row_suffix, default=MISSING, tag=True)
            except VanishedValue:  # maybe overwritten between SELECT and open: look again
                data, tag = cache.get(key + self._row_suffix, default=MISSING, tag=True)
        except CorruptEntry as exc:
            return self._fault(key, str(exc))
        except STORAGE_ERRORS as exc:
            self._storage_failed(
                "read", exc, f"cannot read the funcache_ipy cache in {self.directory}"
            )
            return MISSING
        if data is MISSING:
            return MISSING if self.remote is None else self._fill_from_remote(self.remote, key)
        try:
            if isinstance(data, ValueFile):
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
            value = thaw(hot)
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
            warn(
                f"cannot store result of type {_type_name(value)}: {exc}; "
                "it was returned but not cached"
            )
            return False
        tag = meta.to_json(envelope.size)
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
        return parse_meta(tag)

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
                found, by_tag = parsed(rows, known, self._row_suffix)
                if name is None:
                    self._listing = Listing(stamp, found, by_tag)
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
                collect_orphans(self._root, self._database.cache)
            except STORAGE_ERRORS as exc:
                self._storage_failed("clear", exc, failure)
                return 0
            return removed
        # NB. In a shared directory only this user's entries: the others are teammates'.
        removed = self.delete(key for key, _ in self.entries(name))
        if name is None:
            with contextlib.suppress(*STORAGE_ERRORS):
                collect_orphans(self._root, self._database.cache)
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
        Files older than :data:`~funcache_ipy.orphans.ORPHAN_GRACE` are deleted by
        ``clear()`` and when a store opens (at most every
        :data:`~funcache_ipy.orphans.SWEEP_INTERVAL`); younger ones may be a write in
        progress in another process.
        """
        try:
            found = list(orphan_files(self._root, self._database.cache))
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
        meta = parse_meta(found[2]) if found is not None else None
        if found is None or meta is None:
            return MISSING
        try:
            value = pickle.loads(found[0], buffers=found[1])
        except Exception:  # NB. signed by a trusted key, yet not loadable here (versions)
            return MISSING
        self.set(key, value, meta, share=False)
        return value

    def _open(self) -> None:
        """Open the directory and its database (see :func:`open_directory`)."""
        root, database = open_directory(self.directory, self._size_limit, self._report)
        self._root, self._database = root, database
        self._row_suffix = "~" + self._user_id if root.shared else ""
        if database.notice is not None:
            kind = "recovered" if database.recovered else "read-only"
            self._report(("open", kind), database.notice)
        if database.writable and (database.recovered or sweep_due(root)):
            with contextlib.suppress(*STORAGE_ERRORS):  # collected next time, then
                collect_orphans(self._root, self._database.cache)

    def _reopen(self) -> None:
        """Open directory and database afresh (the old ones were deleted, or read-only)."""
        old_root, old_database = self._root, self._database
        self._open()
        old_database.cache.close()
        old_root.close()

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
            warn(message)

    def _fault(self, key: str, reason: str, tag: object = None) -> Missing:
        """Handle a bad entry: forget and delete it, warn once for this key, miss."""
        meta = parse_meta(tag) or self.meta(key)
        self._hot.discard(key)
        if self._database.writable:
            with contextlib.suppress(*STORAGE_ERRORS):  # a miss either way; the warning says why
                self._database.cache.delete(key + self._row_suffix)
        if key not in self._warned:
            self._warned.add(key)
            name = meta.name if meta else "<unknown>"
            done = "deleted" if self._database.writable else "left (the cache is read-only)"
            warn(
                f"cache entry {name!r} (key {key}) in {self.directory} is unusable "
                f"({reason}); it was {done} and will be recomputed"
            )
        return MISSING


_stores_by_argument: dict[tuple[str, str | None], Store] = {}
_stores_by_path: dict[Path, Store] = {}
_stores_lock = threading.Lock()


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
        store.remote = None if remote is None else tier_for(remote, warn)
    return store


_CONSEQUENCE: Final = {
    "read": "treated as a miss",
    "write": "the result was returned but not cached",
    "clear": "nothing more was deleted",
}


def _cause(exc: BaseException) -> str:
    """What kind of failure ``exc`` is, so each kind is reported once (not each occurrence)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return str(getattr(exc, "sqlite_errorname", "") or f"{type(exc).__name__}: {exc}")


def _type_name(value: object) -> str:
    """``module.Qualname`` of ``value``'s type (just ``qualname`` for builtins)."""
    kind = type(value)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"
