"""Files a computation reads: traced while it runs, hashed once, re-checked with a ``stat``.

A function's result depends on the files it reads as much as on its arguments, but which
files those are is only known once it has run. :func:`track` records them through
CPython's ``open`` audit event (PEP 578), which ``open()``, ``io.open``, ``os.open``,
``pathlib``, ``np.load`` and ``pd.read_csv`` all raise. The hook is installed once and
does nothing outside a tracking context (one string comparison per audit event).

After the run each file read becomes a :class:`FileState`: its stat identity (size,
mtime_ns, inode, ctime_ns) and a content digest. Validating a state later costs one
``stat`` when the identity is unchanged: an unchanged stat is *trusted*. Only a changed
stat costs a re-hash, so touching a file or rewriting it with the same bytes still
validates. ``os.utime`` back to an old mtime does not fool it, because it changes the
ctime, which no unprivileged call can set back.

NB. A stat is only trustworthy if the file could not change again within the same
timestamp tick (ext4 ticks every few milliseconds, FAT every 2 s). A file whose mtime or
ctime was less than :data:`_RACY_NS` old when it was hashed is *racy* (git's term): its
stat is never trusted, its content is re-hashed at each validation instead.

Files are hashed by reading them into a reusable buffer rather than through ``mmap``:
a mapped file truncated by another process while it is being hashed kills the process
with SIGBUS, and a crashed kernel is worse than a slower hash.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import glob
import os
import stat
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import xxhash

from funcache_ipy.envelope import secret_path
from funcache_ipy.origins import is_local_file

ABSENT = "absent"  # digest of a path with no file: opening it failed, and may not later
_RACY_NS = 3_000_000_000
_CHUNK = 2**20
_SYSTEM_PREFIXES = ("/proc/", "/dev/", "/sys/")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_HASH_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)
# Audit events that change a file without an ``open`` event, and their path arguments.
_CHANGE_EVENTS = {"os.remove": (0,), "os.rename": (0, 1), "os.truncate": (0,)}
_DIGEST_CACHE_LIMIT = 65536


class FileState(NamedTuple):
    """A file as it was when hashed: stat identity and content digest (hex xxh3-128).

    ``racy`` means the stat was too fresh to be trusted later (see the module docstring).
    A missing file has size -1 and digest :data:`ABSENT`.
    """

    path: str
    size: int
    mtime_ns: int
    ino: int
    ctime_ns: int
    digest: str
    racy: bool


class Settled(NamedTuple):
    """What a tracked run read and wrote, checked once it finished.

    ``inputs``: files read and not written, as they are now (the run saw this content).
    ``written``: files the run created, changed or removed (outputs, not inputs).
    ``unstable``: files read that changed while the run was going, or could not be hashed:
    the result may mix old and new content and must not be stored.
    """

    inputs: tuple[FileState, ...]
    written: tuple[str, ...]
    unstable: tuple[str, ...]


_Identity = tuple[int, int, int, int]  # size, mtime_ns, ino, ctime_ns; size -1: absent
_NO_FILE: _Identity = (-1, 0, 0, 0)


class FileReads:
    """The files one tracked run opened, with their stat when first opened.

    Yielded by :func:`track`; :meth:`settle` turns it into states once the run is over.
    """

    def __init__(self, excluded: tuple[str, ...]) -> None:
        self._excluded = excluded
        self._opened: dict[str, _Identity | None] = {}  # None: not a regular file
        self._written: set[str] = set()
        self._keyed: dict[str, FileState] = {}

    def expect(self, states: Iterable[FileState]) -> None:
        """Files already part of the key: not inputs again, but they must not change."""
        for state in states:
            self._keyed[state.path] = state

    def note(self, paths: Iterable[str]) -> None:
        """Count files as read without an ``open`` (a nested cached call that hit)."""
        for path in paths:
            self._read(path)

    def settle(self) -> Settled:
        """Hash what was read, now that the run is over. Never raises."""
        inputs, unstable = [], []
        for path, before in self._opened.items():
            if before is None or path in self._written or path in self._keyed:
                continue
            state = _state_if_stable(path, before)
            if state is None:
                unstable.append(path)
            else:
                inputs.append(state)
        for path, state in self._keyed.items():
            if path not in self._written and not unchanged([state]):
                unstable.append(path)
        return Settled(tuple(inputs), tuple(sorted(self._written)), tuple(unstable))

    def _event(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path, _, flags = args
            if flags & os.O_ACCMODE != os.O_WRONLY and not flags & (os.O_TRUNC | os.O_APPEND):
                self._read(path)
            if flags & _WRITE_FLAGS:
                self._write(path)
        else:
            for index in _CHANGE_EVENTS[event]:
                self._write(args[index])

    def _read(self, raw: object) -> None:
        path = _absolute(raw)
        if path is None or path in self._opened or self._is_excluded(path):
            return
        identity = _identity(path)
        self._opened[path] = identity

    def _write(self, raw: object) -> None:
        path = _absolute(raw)
        if path is not None:
            self._written.add(path)

    def _merge_into(self, parent: FileReads) -> None:
        for path, identity in self._opened.items():
            parent._opened.setdefault(path, identity)
        for path, state in self._keyed.items():
            if path not in parent._opened:
                parent._opened[path] = _identity_of(state)
        parent._written |= self._written

    def _is_excluded(self, path: str) -> bool:
        """The interpreter's own files, the cache and the secret key are not inputs."""
        return (
            path.startswith(_SYSTEM_PREFIXES)
            or path.endswith(".pyc")
            or path.startswith(self._excluded)
            or not is_local_file(path)
        )


_active: contextvars.ContextVar[FileReads | None] = contextvars.ContextVar(
    "funcache_ipy_file_reads", default=None
)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    # NB. Runs for every audit event in the process, tracked or not: keep it this short.
    if event == "open" or event in _CHANGE_EVENTS:
        reads = _active.get()
        if reads is not None:
            reads._event(event, args)


@functools.cache
def _install_hook() -> None:
    """Audit hooks cannot be removed: install one, the first time anything is tracked."""
    sys.addaudithook(_audit)


@contextlib.contextmanager
def track(
    excluded: Sequence[str | os.PathLike[str]] = (), expected: Iterable[FileState] = ()
) -> Iterator[FileReads]:
    """Record the files opened inside the ``with`` block (this thread or task only).

    A tracked block inside another one also counts for the outer one, so a cached
    function calling another learns the inner function's files.

    NB. Files opened by threads or processes the block starts are not seen: a context
    variable keeps concurrent tasks apart, and new threads start without it.

    Args:
        excluded: directories whose files never count (the cache directory).
        expected: files already hashed into the key (``files=``, ``Path`` arguments):
            not inputs again, but the result is unstable if they change during the run.
    """
    _install_hook()
    roots = [os.path.join(os.path.abspath(p), "") for p in excluded]
    roots.append(os.path.join(str(secret_path().parent), ""))
    reads = FileReads(tuple(roots))
    reads.expect(expected)
    parent = _active.get()
    token = _active.set(reads)
    try:
        yield reads
    finally:
        _active.reset(token)
        if parent is not None:
            reads._merge_into(parent)


def note_read(paths: Iterable[str]) -> None:
    """Tell an enclosing :func:`track` (if any) that these files were read."""
    reads = _active.get()
    if reads is not None:
        reads.note(paths)


@contextlib.contextmanager
def _untracked() -> Iterator[None]:
    """funcache_ipy's own reads (hashing) are not the user's."""
    token = _active.set(None)
    try:
        yield
    finally:
        _active.reset(token)


# -- states: hash once per content, trust an unchanged stat


def unchanged(states: Iterable[FileState]) -> bool:
    """Whether every file still has the recorded content (a ``stat`` each when unchanged)."""
    return all(current_digest(state) == state.digest for state in states)


def current_digest(state: FileState) -> str:
    """The digest of ``state.path`` now; the recorded one when its stat is trustworthy."""
    identity = _identity(state.path)
    if identity is None:
        return "not a regular file"
    if not state.racy and identity == (state.size, state.mtime_ns, state.ino, state.ctime_ns):
        return state.digest
    now = state_of(state.path)
    return "unreadable" if now is None else now.digest


def state_of(path: str) -> FileState | None:
    """The file at ``path`` now (absent files included); None if it cannot be read."""
    identity = _identity(path)
    if identity is None:
        return None
    if identity == _NO_FILE:
        return FileState(path, -1, 0, 0, 0, ABSENT, False)
    return _state_if_stable(path, identity)


def _state_if_stable(path: str, before: _Identity) -> FileState | None:
    """The file's state if it still has identity ``before``, through hashing; else None."""
    if before == _NO_FILE:
        return FileState(path, -1, 0, 0, 0, ABSENT, False) if _identity(path) == before else None
    size, mtime_ns, ino, ctime_ns = before
    cached = _digests.get((path, size, mtime_ns, ino, ctime_ns))
    if cached is not None:
        return FileState(path, size, mtime_ns, ino, ctime_ns, cached, False)
    started = time.time_ns()
    digest = _hash_file(path, before)
    if digest is None or _identity(path) != before:
        return None
    racy = max(mtime_ns, ctime_ns) > started - _RACY_NS
    if not racy:
        if len(_digests) >= _DIGEST_CACHE_LIMIT:
            _digests.clear()
        _digests[(path, size, mtime_ns, ino, ctime_ns)] = digest
    return FileState(path, size, mtime_ns, ino, ctime_ns, digest, racy)


# (path, size, mtime_ns, ino, ctime_ns) -> digest, for stats that were not racy
_digests: dict[tuple[str, int, int, int, int], str] = {}


def _hash_file(path: str, expected: _Identity) -> str | None:
    """xxh3-128 of a regular file's bytes, or None if it is not the file ``expected``."""
    with _untracked():
        try:
            descriptor = os.open(path, _HASH_FLAGS)
        except OSError:
            return None
        with open(descriptor, "rb", buffering=0) as file:
            try:
                info = os.fstat(descriptor)
            except OSError:
                return None
            if not stat.S_ISREG(info.st_mode) or _identity_from(info) != expected:
                return None
            h = xxhash.xxh3_128()
            buffer = bytearray(min(_CHUNK, max(info.st_size, 1)))
            view = memoryview(buffer)
            try:
                if hasattr(os, "posix_fadvise"):  # a hint: read ahead further
                    os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_SEQUENTIAL)
                while count := file.readinto(buffer):
                    h.update(view[:count])
            except OSError:
                return None
    return h.hexdigest()


def _identity(path: str) -> _Identity | None:
    """Stat identity of a regular file, ``_NO_FILE`` if nothing is there, None otherwise."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return _NO_FILE
    except (OSError, ValueError):
        return None
    return _identity_from(info) if stat.S_ISREG(info.st_mode) else None


def _identity_from(info: os.stat_result) -> _Identity:
    return (info.st_size, info.st_mtime_ns, info.st_ino, info.st_ctime_ns)


def _identity_of(state: FileState) -> _Identity:
    return (state.size, state.mtime_ns, state.ino, state.ctime_ns)


def _absolute(raw: object) -> str | None:
    """An audit event's path argument as an absolute path (None for descriptors)."""
    if isinstance(raw, int):
        return None
    try:
        return os.path.abspath(os.fsdecode(raw))  # type: ignore[arg-type]
    except (TypeError, ValueError, OSError):  # NB. OSError: the cwd was deleted
        return None


# -- declared files: globs and directories, counted before the run


def declared_states(patterns: Iterable[str]) -> tuple[list[FileState], list[str]]:
    """Files matching ``patterns`` now (relative to the cwd; directories by their files).

    Returns:
        The states, sorted by path, and the files that could not be hashed.
    """
    paths: set[str] = set()
    for pattern in patterns:
        for match in glob.glob(pattern, recursive=True):
            if os.path.isdir(match):
                paths.update(_files_under(match))
            elif os.path.isfile(match):  # not sockets or FIFOs
                paths.add(os.path.abspath(match))
    return states_of(sorted(paths))


def states_of(paths: Iterable[str]) -> tuple[list[FileState], list[str]]:
    """States of ``paths`` now, and the paths that could not be hashed."""
    states, failed = [], []
    for path in paths:
        state = state_of(path)
        if state is None:
            failed.append(path)
        else:
            states.append(state)
    return states, failed


def _files_under(directory: str) -> Iterator[str]:
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.abspath(os.path.join(root, name))
            if os.path.isfile(path):
                yield path


# -- how files show in manifests and explanations


def display_path(path: str) -> str:
    """``path`` relative to the cwd when it is below it, else as is."""
    try:
        cwd = os.path.join(os.getcwd(), "")
    except OSError:  # the cwd was deleted
        return path
    return path[len(cwd) :] if path.startswith(cwd) else path


_LABEL_PREFIX = "file `"


def file_label(path: str) -> str:
    """How manifests and explanations name a file: ``file `data/sales.csv```."""
    return f"{_LABEL_PREFIX}{display_path(path)}`"


def is_file_label(label: str) -> bool:
    """Whether a manifest label names a file (see :func:`file_label`)."""
    return label.startswith(_LABEL_PREFIX)


def shown_size(state: FileState) -> str:
    """``2.1 MB``: what an explanation shows about a file's content."""
    if state.digest == ABSENT:
        return "absent"
    if state.size < 1000:
        return f"{state.size} B"
    size = state.size / 1000
    for unit in ("kB", "MB"):
        if size < 1000:
            return f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"
