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
import time
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LEASE_FOLDER", "WAIT_LIMIT", "lease"]

LEASE_FOLDER = "leases"
WAIT_LIMIT = 30 * 60.0  # seconds a waiter waits before computing anyway
_POLL_FIRST, _POLL_MAX = 0.02, 0.5  # seconds between attempts, doubling up to the max
_FLAGS = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


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
    path = directory / LEASE_FOLDER / f"{key}.lock"
    fd, waited = _acquire(path, timeout, on_wait)
    try:
        yield waited
    finally:
        if fd is not None:
            _release(path, fd)


def _acquire(
    path: Path, timeout: float, on_wait: Callable[[int | None], None] | None
) -> tuple[int | None, bool]:
    """The locked file's descriptor (None: no lease), and whether another holder was met."""
    if fcntl is None:
        return None, False
    deadline = time.monotonic() + timeout
    pause = _POLL_FIRST
    waited = False
    while True:
        try:
            path.parent.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(path, _FLAGS, 0o600)
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
        # unlinked file guards nothing, so start over on the file now at that path.
        if _is_current(fd, path):
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            return fd, waited
        os.close(fd)


def _is_current(fd: int, path: Path) -> bool:
    try:
        linked = os.stat(path, follow_symlinks=False)
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


def _release(path: Path, fd: int) -> None:
    """Remove the file while still holding it (so no one locks a stale file), then unlock."""
    with contextlib.suppress(OSError):
        if _is_current(fd, path):
            path.unlink()
    os.close(fd)
