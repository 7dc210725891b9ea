"""Open a cache directory's SQLite database (through diskcache) whatever state it is in.

One bad file must neither cost a result nor disable the cache for good:

- A corrupt or truncated ``cache.db`` is moved aside as ``cache.db.corrupt-<time>-<pid>``
  (kept for inspection, with its ``-wal``/``-shm`` files) and a fresh database is started.
- When nothing can be written (full disk, read-only mount, a directory the user may only
  read) the database is opened read-only (SQLite's ``mode=ro``, or ``immutable`` when even
  its shared-memory file cannot be made), so stored results are still served.
- A symbolic link, or anything but a regular file, in place of the database or its
  journal files is refused: SQLite would follow it out of the cache directory.
- In a group-shared directory (see :mod:`funcache_ipy.safedir`) the database is made
  group-writable before SQLite opens it. SQLite gives its ``-wal`` and ``-shm`` files the
  database's own mode, so they are group-writable too and every teammate can open it
  (without this, the umask left them 0644 and only their creator could).

It also owns the SQL funcache_ipy adds to diskcache's: an index of the rows by the name
in their metadata (made when a database opens, so older directories get it too), and the
queries that list rows in one go.

NB. The link check happens when the store opens; SQLite opens these files by path, so a
link planted later by someone who can write the directory is not caught. The directory
itself should be writable by its owner only (the store warns otherwise).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import stat
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Final

import diskcache
from diskcache.core import DBNAME

from funcache_ipy.safedir import SafeDir, UnsafePath

__all__ = [
    "DATABASE",
    "STORAGE_ERRORS",
    "Database",
    "change_stamp",
    "is_corruption",
    "move_aside",
    "open_database",
    "tagged_rows",
]

DATABASE: Final[str] = DBNAME
_COMPANIONS: Final = ("-wal", "-shm", "-journal")
STORAGE_ERRORS: Final = (OSError, sqlite3.Error, diskcache.Timeout)
# The name in a row's metadata (JSON in diskcache's tag column), NULL for anything else.
# NB. Guarded so that a foreign row (a BLOB, malformed JSON) can neither fail the query
# nor, once indexed, fail diskcache's own inserts.
_NAME: Final = (
    "CASE WHEN typeof(tag) = 'text' THEN "
    "CASE WHEN json_valid(tag) THEN json_extract(tag, '$.name') END END"
)


@dataclass(frozen=True)
class Database:
    """An open diskcache ``Cache`` and how it could be opened."""

    cache: diskcache.Cache
    writable: bool
    identity: os.stat_result | None  # of cache.db when opened: a later move-aside checks it
    notice: str | None = None  # what went wrong on the way, for a one-time warning
    recovered: bool = False  # a corrupt database was moved aside: its value files are orphans


def open_database(
    root: SafeDir, disk: type[diskcache.Disk], settings: dict[str, Any], timeout: float
) -> Database:
    """Open ``root``'s database read-write; else move a corrupt one aside, or open read-only.

    Raises:
        OSError, sqlite3.Error, diskcache.Timeout: not even reading is possible, or a
            corrupt database cannot be moved aside; the message says which file and why.
    """
    _refuse_odd_files(root)
    with contextlib.suppress(OSError):  # a teammate's database is theirs to chmod: see below
        root.share_file(DATABASE)
    identity = root.lstat(DATABASE)
    try:
        cache = _WritableCache(str(root.path), timeout=timeout, disk=disk, **settings)
    except STORAGE_ERRORS as exc:
        if not is_corruption(exc):
            return _open_read_only(root, disk, settings, timeout, exc)
        moved = move_aside(root, identity)
        cache = _WritableCache(str(root.path), timeout=timeout, disk=disk, **settings)
        notice = corruption_notice(root, exc, moved)
        _index_names(cache)
        return Database(cache, True, root.lstat(DATABASE), notice, recovered=True)
    _index_names(cache)
    return Database(cache, True, root.lstat(DATABASE))


def tagged_rows(cache: diskcache.Cache, name: str | None = None) -> list[tuple[object, object]]:
    """``(key, tag)`` of every row with a plain (not pickled) key, or of those named ``name``.

    One query either way; by name it uses the index :func:`open_database` makes (a
    database that could only be opened read-only may lack it: then it is a scan).
    """
    if name is None:
        rows = cache._sql("SELECT key, tag FROM Cache WHERE raw").fetchall()
    else:
        rows = cache._sql(f"SELECT key, tag FROM Cache WHERE {_NAME} = ? AND raw", (name,))
        rows = rows.fetchall()
    return [(key, tag) for key, tag in rows]


def change_stamp(cache: diskcache.Cache) -> tuple[object, int, int]:
    """What differs whenever the rows may have changed since an earlier stamp.

    SQLite's ``data_version`` counts commits by *other* connections (processes, or this
    process's other threads); ``total_changes`` the rows this connection wrote. Both are
    per connection, so the stamp holds the connection itself.
    """
    connection = cache._con
    ((version,),) = connection.execute("PRAGMA data_version").fetchall()
    return connection, version, connection.total_changes


def _index_names(cache: diskcache.Cache) -> None:
    """Index rows by their metadata's name, so one function's entries are found directly.

    NB. ``IF NOT EXISTS`` makes this the migration of directories written before the
    index existed. Without it (a SQLite lacking JSON functions, or a database locked
    for longer than the timeout) listing by name still works, by a scan.
    """
    with contextlib.suppress(sqlite3.OperationalError, diskcache.Timeout):
        cache._sql(f"CREATE INDEX IF NOT EXISTS Cache_funcache_name ON Cache({_NAME})")


def is_corruption(exc: BaseException) -> bool:
    """Whether SQLite says the database file itself is damaged (not locked, full or read-only).

    Python maps SQLITE_CORRUPT and SQLITE_NOTADB to the bare ``DatabaseError``; full disks,
    locks, permissions and I/O errors are ``OperationalError``.
    """
    return type(exc) is sqlite3.DatabaseError


def move_aside(root: SafeDir, identity: os.stat_result | None) -> str | None:
    """Rename ``cache.db`` (and its journal files) to ``cache.db.corrupt-<time>-<pid>``.

    Only if ``cache.db`` is still the file found corrupt (``identity``): another process may
    have replaced it with a fresh one already, which must not be moved in turn.

    Returns:
        The new name, or ``None`` when nothing was moved.

    Raises:
        OSError: the directory cannot be written; the message names the database.
    """
    current = root.lstat(DATABASE)
    if identity is None or current is None or not os.path.samestat(current, identity):
        return None
    target = f"{DATABASE}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    try:
        root.rename(DATABASE, target)
    except OSError as exc:
        raise OSError(
            exc.errno,
            f"funcache_ipy cache database {root.path / DATABASE} is corrupt and cannot be "
            f"moved aside ({exc.strerror}); delete it to start afresh",
        ) from exc
    for suffix in _COMPANIONS:
        with contextlib.suppress(FileNotFoundError):
            root.rename(DATABASE + suffix, target + suffix)
    return target


def corruption_notice(root: SafeDir, exc: BaseException, moved: str | None) -> str:
    """The one-line warning for a corrupt database that was replaced by a fresh one."""
    where = f"moved to {root.path / moved}" if moved else "replaced by another process"
    return (
        f"funcache_ipy cache database {root.path / DATABASE} was corrupt ({exc}); it was "
        f"{where} and a fresh database started, so earlier results will be recomputed"
    )


def referenced_files(cache: diskcache.Cache) -> set[str]:
    """The value-file names the database's rows refer to."""
    rows = cache._sql("SELECT filename FROM Cache WHERE filename IS NOT NULL").fetchall()
    return {filename for (filename,) in rows if type(filename) is str}


def _refuse_odd_files(root: SafeDir) -> None:
    """Refuse to open a database or journal file that is a link or not a regular file."""
    for name in (DATABASE, *(DATABASE + suffix for suffix in _COMPANIONS)):
        info = root.lstat(name)
        if info is None or stat.S_ISREG(info.st_mode):
            continue
        if stat.S_ISLNK(info.st_mode):
            raise UnsafePath(
                errno.ELOOP,
                "is a symbolic link, which funcache_ipy never follows inside its cache "
                "directory; remove it",
                str(root.path / name),
            )
        raise UnsafePath(errno.EINVAL, "is not a regular file; remove it", str(root.path / name))


def _open_read_only(
    root: SafeDir,
    disk: type[diskcache.Disk],
    settings: dict[str, Any],
    timeout: float,
    failure: BaseException,
) -> Database:
    """Open the database without writing anything; re-raise ``failure`` if even that fails."""
    disk_settings = {key[5:]: value for key, value in settings.items() if key.startswith("disk_")}
    path = urllib.parse.quote(str(root.path / DATABASE))
    # NB. A WAL database needs its -shm file even to read; ``immutable`` reads without it
    # (and without locks), which is safe here: every value is authenticated for its key.
    for options in ("mode=ro", "mode=ro&immutable=1"):
        with contextlib.suppress(*STORAGE_ERRORS):
            cache = _ReadOnlyCache(
                str(root.path),
                disk(str(root.path), **disk_settings),
                f"file:{path}?{options}",
                timeout,
            )
            notice = (
                f"cannot write to the funcache_ipy cache directory {root.path} "
                f"({_why_unwritable(root, failure)}); stored results are served, new ones "
                "are not stored until it can be written again"
            )
            return Database(cache, False, root.lstat(DATABASE), notice)
    raise failure


def _why_unwritable(root: SafeDir, failure: BaseException) -> str:
    """Say why writing failed in the user's terms; SQLite's own words may be "disk I/O error"."""
    with contextlib.suppress(OSError):
        status = os.statvfs(root.path)
        if status.f_flag & os.ST_RDONLY:
            return f"read-only file system; SQLite: {failure}"
        if status.f_bavail == 0 or status.f_favail == 0:
            return f"the disk is full; SQLite: {failure}"
    effective = os.access in os.supports_effective_ids
    if not os.access(root.path, os.W_OK, effective_ids=effective):
        return f"the directory is not writable for you; SQLite: {failure}"
    database = root.lstat(DATABASE)
    if database is not None and not os.access(
        root.path / DATABASE, os.W_OK, effective_ids=effective
    ):
        return (
            f"{DATABASE} is not writable for you (mode {stat.filemode(database.st_mode)}, "
            f"uid {database.st_uid}: its owner can run chmod g+w on it); SQLite: {failure}"
        )
    return str(failure)


class _WritableCache(diskcache.Cache):
    """diskcache's ``Cache``; its connection is closed when opening fails half way."""

    def __init__(self, directory: str, **settings: Any) -> None:
        try:
            super().__init__(directory, **settings)
        except BaseException:
            self.close()
            raise


class _ReadOnlyCache(diskcache.Cache):
    """diskcache's reading methods over a SQLite connection that cannot write.

    NB. ``Cache.__init__`` writes (settings, schema, triggers), so this one sets only what
    ``get``, ``iterkeys``, ``volume`` and ``close`` use. Writing methods must not be called.
    """

    def __init__(self, directory: str, disk: diskcache.Disk, uri: str, timeout: float) -> None:
        self._directory = directory
        self._disk = disk
        self._uri = uri
        self._timeout = timeout
        self._local = threading.local()
        self._txn_id = None
        self.statistics = 0
        self.eviction_policy = "least-recently-stored"
        try:
            ((self._page_size,),) = self._sql("PRAGMA page_size").fetchall()
            self._sql("SELECT count(*) FROM Cache").fetchall()  # fail now, not on first get
        except BaseException:
            self.close()
            raise

    @property
    def _con(self) -> sqlite3.Connection:
        """This thread's connection (a forked child opens its own, as diskcache's does)."""
        if getattr(self._local, "pid", None) != os.getpid():
            self.close()
            self._local.pid = os.getpid()
        connection: sqlite3.Connection | None = getattr(self._local, "con", None)
        if connection is None:
            connection = sqlite3.connect(
                self._uri, uri=True, timeout=self._timeout, isolation_level=None
            )
            self._local.con = connection
        return connection
