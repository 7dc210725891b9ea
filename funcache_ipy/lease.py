"""Per-key leases: one process computes a missing entry while the others wait, then hit.

N kernels or workers that miss the same key at once would otherwise all compute it. A
lease is an exclusive ``flock`` on a small file named after the key, in the cache
directory's ``leases`` folder. The operating system drops the lock when its holder exits,
however it exits (``kill -9`` included), so a crash never blocks anyone; a waiter that
runs out of patience computes anyway. Correctness never depends on a lease: keys are
content-addressed, so two processes that both compute store the same thing; the lease
only saves the duplicate work.

Where ``flock`` does not exist (Windows) or the folder cannot be written (a read-only
cache), there is no lease and every process computes, as before.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LEASE_FOLDER", "WAIT_LIMIT", "announce_wait", "lease"]

LEASE_FOLDER = "leases"
WAIT_LIMIT = 30 * 60.0  # seconds a waiter waits before computing anyway
_POLL_FIRST, _POLL_MAX = 0.02, 0.5  # seconds between attempts, doubling up to the max
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_FLAGS = os.O_RDWR | os.O_CREAT | _NOFOLLOW
_DIRECTORY = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW


@contextlib.contextmanager
def lease(
    directory: Path,
    key: str,
    *,
    timeout: float = WAIT_LIMIT,
    on_wait: Callable[[int | None], None] | None = None,
) -> Iterator[bool]:
    """Hold the lease on ``key`` while the body computes its value.

    Args:
        directory: the cache directory.
        key: the entry's key (hex digits: safe as a file name).
        timeout: seconds to wait for another holder before going ahead without the lease.
        on_wait: called once, with the holder's process id if known, when another
            process holds the lease (to tell the user why nothing seems to happen).

    Yields:
        True when another process held the lease first: its value may be stored by
        now, so look it up again before computing.
    """
    name = f"{key}.lock"
    folder = _open_folder(directory)
    if folder is None:
        yield False
        return
    try:
        fd, waited = _acquire(folder, name, timeout, on_wait)
        try:
            yield waited
        finally:
            if fd is not None:
                _release(folder, name, fd)
    finally:
        os.close(folder)


def announce_wait(doing: str) -> Callable[[int | None], None]:
    """An ``on_wait`` that says on stderr whom the user waits for, and why.

    A notice, not a warning: nothing is wrong. ``doing`` completes "which is ...":
    ``computing nb.load``, ``running cell features``.
    """

    def waiting(holder: int | None) -> None:
        by = f"process {holder}" if holder else "another process"
        print(f"funcache: waiting for {by}, which is {doing}", file=sys.stderr, flush=True)

    return waiting


def _open_folder(directory: Path) -> int | None:
    """A descriptor of ``directory/leases``, reached without following symbolic links.

    NB. Like every file the cache touches, lease files stay inside the real cache
    directory whatever its tree says (a planted ``leases -> ~/project`` is refused).
    """
    if fcntl is None:
        return None
    try:
        parent = os.open(directory, _DIRECTORY)
    except OSError:
        return None
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(LEASE_FOLDER, 0o700, dir_fd=parent)
        return os.open(LEASE_FOLDER, _DIRECTORY, dir_fd=parent)
    except OSError:  # a read-only or unusable cache: go on without a lease
        return None
    finally:
        os.close(parent)


def _acquire(
    folder: int, name: str, timeout: float, on_wait: Callable[[int | None], None] | None
) -> tuple[int | None, bool]:
    """The locked file's descriptor (None: no lease), and whether another holder was met."""
    deadline = time.monotonic() + timeout
    pause = _POLL_FIRST
    waited = False
    while True:
        try:
            fd = os.open(name, _FLAGS, 0o600, dir_fd=folder)
        except OSError:
            return None, waited
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not waited and on_wait is not None:
                on_wait(_holder(fd))
            waited = True
            os.close(fd)
            if time.monotonic() >= deadline:
                return None, True
            time.sleep(pause)
            pause = min(2 * pause, _POLL_MAX)
            continue
        except OSError:
            os.close(fd)
            return None, waited
        # NB. The previous holder unlinks the file as it lets go: a lock taken on the
        # unlinked file guards nothing, so start over on the file now at that name.
        if _is_current(folder, name, fd):
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            return fd, waited
        os.close(fd)


def _is_current(folder: int, name: str, fd: int) -> bool:
    try:
        linked = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except OSError:
        return False
    opened = os.fstat(fd)
    return (linked.st_dev, linked.st_ino) == (opened.st_dev, opened.st_ino)


def _holder(fd: int) -> int | None:
    """The process id the holder wrote into the lease file, if it is there yet."""
    try:
        return int(os.pread(fd, 20, 0))
    except (OSError, ValueError):
        return None


def _release(folder: int, name: str, fd: int) -> None:
    """Remove the file while still holding it (so no one locks a stale file), then unlock."""
    with contextlib.suppress(OSError):
        if _is_current(folder, name, fd):
            os.unlink(name, dir_fd=folder)
    os.close(fd)
