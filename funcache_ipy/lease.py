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

from funcache_ipy.safedir import SafeDir

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LEASE_FOLDER", "WAIT_LIMIT", "announce_wait", "lease"]

LEASE_FOLDER = "leases"
WAIT_LIMIT = 30 * 60.0  # seconds a waiter waits before computing anyway
_POLL_FIRST, _POLL_MAX = 0.02, 0.5  # seconds between attempts, doubling up to the max


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
    name = f"{LEASE_FOLDER}/{key}.lock"
    root = _open_root(directory)
    if root is None:
        yield False
        return
    try:
        fd, waited = _acquire(root, name, timeout, on_wait)
        try:
            yield waited
        finally:
            if fd is not None:
                _release(root, name, fd)
    finally:
        root.close()


def announce_wait(doing: str) -> Callable[[int | None], None]:
    """An ``on_wait`` that says on stderr whom the user waits for, and why.

    A notice, not a warning: nothing is wrong. ``doing`` completes "which is ...":
    ``computing nb.load``, ``running cell features``.
    """

    def waiting(holder: int | None) -> None:
        by = f"process {holder}" if holder else "another process"
        print(f"funcache: waiting for {by}, which is {doing}", file=sys.stderr, flush=True)

    return waiting


def _open_root(directory: Path) -> SafeDir | None:
    """The cache directory, for lease files that stay inside it (as every file the cache
    touches: a planted ``leases -> ~/project`` is refused); None: go on without a lease."""
    if fcntl is None:
        return None
    try:
        return SafeDir(directory, create=False)
    except OSError:
        return None


def _acquire(
    root: SafeDir, name: str, timeout: float, on_wait: Callable[[int | None], None] | None
) -> tuple[int | None, bool]:
    """The locked file's descriptor (None: no lease), and whether another holder was met."""
    deadline = time.monotonic() + timeout
    pause = _POLL_FIRST
    waited = False
    while True:
        try:
            fd = root.open_lock(name)
        except OSError:  # a read-only or unusable cache: go on without a lease
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
        if _is_current(root, name, fd):
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            return fd, waited
        os.close(fd)


def _is_current(root: SafeDir, name: str, fd: int) -> bool:
    try:
        linked = root.lstat(name)
    except OSError:
        return False
    if linked is None:
        return False
    opened = os.fstat(fd)
    return (linked.st_dev, linked.st_ino) == (opened.st_dev, opened.st_ino)


def _holder(fd: int) -> int | None:
    """The process id the holder wrote into the lease file, if it is there yet."""
    try:
        return int(os.pread(fd, 20, 0))
    except (OSError, ValueError):
        return None


def _release(root: SafeDir, name: str, fd: int) -> None:
    """Remove the file while still holding it (so no one locks a stale file), then unlock."""
    with contextlib.suppress(OSError):
        if _is_current(root, name, fd):
            root.remove_file(name)
    os.close(fd)
