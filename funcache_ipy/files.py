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

Files the run creates or replaces (opened with truncation, created, renamed onto) are its
*outputs*: :meth:`FileReads.settle` keeps their content (up to a size), so that a hit can
put back an output that is missing or differs (:func:`write_back`). A file the run only
appends to or changes in place is neither input nor output: its content before the run
is not the run's to restore (a log would lose the lines written since).

Files are hashed by reading them into a reusable buffer rather than through ``mmap``:
a mapped file truncated by another process while it is being hashed kills the process
with SIGBUS, and a crashed kernel is worse than a slower hash.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import glob
import io
import os
import pathlib
import stat
import sys
import tempfile
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


class Output(NamedTuple):
    """A file a run created or replaced, as the run left it.

    ``data`` is its content, or None when it was larger than the limit to keep: a hit
    can then only check that the file is still as the run left it.
    """

    state: FileState
    data: bytes | None


class Settled(NamedTuple):
    """What a tracked run read and wrote, checked once it finished.

    ``inputs``: files read and not written, as they are now (the run saw this content).
    ``outputs``: files the run created or replaced and left in place, in path order.
    ``unstable``: files read that changed while the run was going, or that could not be
    hashed: the result may mix old and new content and must not be stored.
    """

    inputs: tuple[FileState, ...]
    outputs: tuple[Output, ...]
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
        self._replaced: set[str] = set()  # written from scratch: outputs
        self._keyed: dict[str, FileState] = {}

    def expect(self, states: Iterable[FileState]) -> None:
        """Files already part of the key: not inputs again, but they must not change."""
        for state in states:
            self._keyed[state.path] = state

    def note(self, paths: Iterable[str]) -> None:
        """Count files as read without an ``open`` (a nested cached call that hit)."""
        for path in paths:
            self._read(path)

    def note_replaced(self, paths: Iterable[str]) -> None:
        """Count files as created by the run (a nested cached call put them back)."""
        paths = set(paths)
        self._written.update(paths)
        self._replaced.update(paths)

    def settle(self, keep_limit: int) -> Settled:
        """Hash what was read and written, now that the run is over. Never raises.

        Args:
            keep_limit: outputs up to this many bytes are kept (read into memory).
        """
        inputs: list[FileState] = []
        unstable: list[str] = []
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
        outputs = []
        for path in sorted(self._replaced):
            if self._is_excluded(path) or _is_hidden(path):
                continue
            identity = _identity(path)
            if identity is None or identity == _NO_FILE:  # removed again: a temporary file
                continue
            output = _output(path, identity, keep_limit)
            if output is None:
                unstable.append(path)
            else:
                outputs.append(output)
        return Settled(tuple(inputs), tuple(outputs), tuple(unstable))

    def _event(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path, _, flags = args
            if flags & os.O_ACCMODE != os.O_WRONLY and not flags & (os.O_TRUNC | os.O_APPEND):
                self._read(path)
            if flags & _WRITE_FLAGS:
                self._write(path, _replaces(path, flags))
        else:
            for index in _CHANGE_EVENTS[event]:
                self._write(args[index], event == "os.rename" and index == 1)

    def _read(self, raw: object) -> None:
        path = _absolute(raw)
        if path is None or path in self._opened or self._is_excluded(path):
            return
        identity = _identity(path)
        self._opened[path] = identity

    def _write(self, raw: object, replaces: object) -> None:
        path = _absolute(raw)
        if path is not None:
            self._written.add(path)
            if replaces:
                self._replaced.add(path)

    def _merge_into(self, parent: FileReads) -> None:
        for path, identity in self._opened.items():
            parent._opened.setdefault(path, identity)
        for path, state in self._keyed.items():
            if path not in parent._opened:
                parent._opened[path] = _identity_of(state)
        parent._written |= self._written
        parent._replaced |= self._replaced

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


def note_replaced(paths: Iterable[str]) -> None:
    """Tell an enclosing :func:`track` (if any) that these files were created."""
    reads = _active.get()
    if reads is not None:
        reads.note_replaced(paths)


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
    cached = _digests.get((path, *before))
    if cached is not None:
        return FileState(path, *before, cached, False)
    started = time.time_ns()
    digest = _hash_file(path, before)
    if digest is None or _identity(path) != before:
        return None
    return _recorded(path, before, digest, started)


def _output(path: str, identity: _Identity, keep_limit: int) -> Output | None:
    """A file the run wrote, with its content if it is small enough to keep; None if it
    changes while being read."""
    if identity[0] > keep_limit:
        state = _state_if_stable(path, identity)
        return None if state is None else Output(state, None)
    started = time.time_ns()
    data = _read_file(path, identity)
    if data is None or _identity(path) != identity:
        return None
    return Output(_recorded(path, identity, xxhash.xxh3_128_hexdigest(data), started), data)


def _recorded(path: str, identity: _Identity, digest: str, started: int) -> FileState:
    """The state of a file hashed from ``started`` on, remembered if its stat can be trusted."""
    size, mtime_ns, ino, ctime_ns = identity
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
    with _opened(path, expected) as file:
        if file is None:
            return None
        h = xxhash.xxh3_128()
        buffer = bytearray(min(_CHUNK, max(expected[0], 1)))
        view = memoryview(buffer)
        try:
            if hasattr(os, "posix_fadvise"):  # a hint: read ahead further
                os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            while count := file.readinto(buffer):
                h.update(view[:count])
        except OSError:
            return None
    return h.hexdigest()


def _read_file(path: str, expected: _Identity) -> bytes | None:
    """A regular file's bytes, or None if it is not the file ``expected``."""
    with _opened(path, expected) as file:
        if file is None:
            return None
        try:
            return file.read()
        except OSError:
            return None


@contextlib.contextmanager
def _opened(path: str, expected: _Identity) -> Iterator[io.FileIO | None]:
    """``path`` open for reading (untracked) if it is still the regular file ``expected``."""
    with _untracked():
        try:
            descriptor = os.open(path, _HASH_FLAGS)
        except OSError:
            yield None
            return
        with open(descriptor, "rb", buffering=0) as file:
            try:
                info = os.fstat(descriptor)
            except OSError:
                yield None
                return
            same = stat.S_ISREG(info.st_mode) and _identity_from(info) == expected
            yield file if same else None


def write_back(path: str, data: bytes | memoryview) -> None:
    """Put ``data`` in ``path`` as a run writing it would: whole or not at all.

    Written to a temporary file beside it, then renamed over it, so a reader (or a kill)
    never sees half a file. A symbolic link is written through, as ``open`` would; an
    existing file keeps its permissions, a new one gets the umask's.

    Raises:
        OSError: the file or its directory cannot be written.
    """
    path = os.path.realpath(path)
    directory, name = os.path.split(path)
    with _untracked():
        os.makedirs(directory, exist_ok=True)
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        descriptor, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
        try:
            with open(descriptor, "wb") as file:
                os.fchmod(file.fileno(), mode)
                file.write(data)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


def _umask() -> int:
    # NB. The only way to read the umask is to set it; set it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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


def _replaces(path: str, flags: int) -> bool:
    """Whether opening ``path`` with ``flags`` starts its content afresh: truncating it,
    or creating it other than for appending (a log created by one run is appended to by
    the next: putting back the first run's copy would lose the lines written since)."""
    if flags & os.O_TRUNC:
        return True
    return bool(flags & os.O_CREAT) and not flags & os.O_APPEND and not os.path.lexists(path)


def _is_hidden(path: str) -> bool:
    """Whether ``path`` lies in a hidden directory or is a hidden file, counted from the
    cwd or the home directory when below them: tools' caches (``~/.cache``, ``.ipynb_
    checkpoints``) are not a run's outputs, a project kept under a hidden folder is."""
    roots = [os.path.expanduser("~")]
    with contextlib.suppress(OSError):  # NB. the cwd was deleted
        roots.insert(0, os.getcwd())
    for root in roots:
        root = os.path.join(root, "")
        if path.startswith(root):
            path = path[len(root) :]
            break
    return any(part.startswith(".") for part in path.split(os.sep))


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


def named_files(values: Iterable[object]) -> list[str]:
    """Absolute paths of the ``pathlib`` paths among ``values`` that name a regular file
    now: those count by content (a C reader given one is invisible to the hook)."""
    return [
        os.path.abspath(value)
        for value in values
        if isinstance(value, pathlib.PurePath) and os.path.isfile(value)
    ]


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


def labelled_path(label: str) -> str | None:
    """The path a :func:`file_label` names (relative to the cwd if it was below it), or
    None for a label of something else."""
    if not (is_file_label(label) and label.endswith("`")):
        return None
    return label[len(_LABEL_PREFIX) : -1]


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
