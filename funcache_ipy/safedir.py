"""File operations that cannot leave one directory, whatever its tree or its database says.

The cache directory's sub-directories, and the value-file names in its database, are data
that whoever can write the directory chooses. Opening ``root/ab/cd/x.val`` by path follows
a symlinked ``ab`` anywhere (``O_NOFOLLOW`` guards only the last component), so a planted
``ab -> ~/project`` plus a forged row would let the cache read, overwrite or delete files
there. :class:`SafeDir` instead holds a descriptor of the real directory and walks every
path from it one component at a time (``openat`` with ``O_NOFOLLOW | O_DIRECTORY``): a
symbolic link anywhere along the way is refused, never followed, and a directory renamed
or replaced under us is noticed rather than silently swapped in. POSIX only (``dir_fd``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Final

__all__ = ["SafeDir", "UnsafePath"]

# NB. getattr: these flags do not exist on Windows, where SafeDir refuses to open instead.
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK: Final = getattr(os, "O_NONBLOCK", 0)
_DIRECTORY_FLAGS: Final = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC
# NB. O_NONBLOCK: opening a planted FIFO must not hang the kernel (the caller checks S_ISREG).
_READ_FLAGS: Final = os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC
_CREATE_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
_LOCK_FLAGS: Final = os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC
_TOUCH_FLAGS: Final = os.O_WRONLY | os.O_CREAT | _NOFOLLOW | _NONBLOCK | _CLOEXEC
# Another process prunes a directory as soon as its last file goes (diskcache does, and so
# do we), possibly between our mkdir and our create; each retry walks the path afresh.
_CREATE_ATTEMPTS: Final = 100


class UnsafePath(OSError):
    """A path inside the directory that is refused: a symbolic link on the way, or ``..``."""

    def __str__(self) -> str:
        return f"{self.filename} {self.strerror}"


class SafeDir:
    """An open directory; every path given to its methods is relative to it and stays in it.

    Paths use ``/`` and may not contain empty, ``.`` or ``..`` components.
    """

    path: Path

    def __init__(self, path: Path, *, create: bool) -> None:
        """Open ``path`` (already resolved), creating it (0o700) first if ``create``.

        Raises:
            OSError: it cannot be created or opened, or is not a directory, or this
                system cannot open files relative to a directory (Windows).
        """
        if os.open not in os.supports_dir_fd:
            raise OSError(errno.ENOSYS, "the funcache_ipy cache needs a POSIX system (openat)")
        if create:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = path
        self._descriptor = os.open(path, _DIRECTORY_FLAGS)

    def __repr__(self) -> str:
        return f"SafeDir({str(self.path)!r})"

    def close(self) -> None:
        if self._descriptor >= 0:
            os.close(self._descriptor)
            self._descriptor = -1

    def __del__(self) -> None:
        with contextlib.suppress(AttributeError, OSError):  # __init__ may have failed
            self.close()

    def stat(self) -> os.stat_result:
        """The directory's own status (mode, owner), from the descriptor."""
        return os.fstat(self._descriptor)

    def is_current(self) -> bool:
        """Whether ``path`` still names this directory (not deleted, moved or replaced)."""
        try:
            return os.path.samestat(os.stat(self.path), os.fstat(self._descriptor))
        except OSError:
            return False

    def lstat(self, relative: str) -> os.stat_result | None:
        """The status of ``relative`` itself (a link is not followed), or ``None`` if absent."""
        *directories, name = _components(relative)
        try:
            parent = self._open_directory(directories, create=False)
        except FileNotFoundError:
            return None
        try:
            return os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return None
        finally:
            os.close(parent)

    def open_file(self, relative: str) -> int:
        """A new read-only descriptor of ``relative`` (non-blocking, so a FIFO cannot hang).

        Raises:
            FileNotFoundError: it, or a directory on the way, does not exist.
            UnsafePath: a component is a symbolic link.
        """
        *directories, name = _components(relative)
        parent = self._open_directory(directories, create=False)
        try:
            return _open_at(parent, name, _READ_FLAGS, self.path / relative)
        finally:
            os.close(parent)

    def create_file(self, relative: str) -> int:
        """A write descriptor of a new file ``relative`` (0o600), making its directories.

        Raises:
            FileExistsError: the file exists already.
            UnsafePath: a component is a symbolic link.
            OSError: the file or a directory cannot be created (full disk, permissions).
        """
        return self._create(relative, _CREATE_FLAGS)

    def open_lock(self, relative: str) -> int:
        """A read-write descriptor of ``relative`` (0o600), created with its directories if
        missing: a lock file, which other processes open too.

        Raises:
            UnsafePath: a component is a symbolic link.
            OSError: the file or a directory cannot be created (read-only, permissions).
        """
        return self._create(relative, _LOCK_FLAGS)

    def _create(self, relative: str, flags: int) -> int:
        *directories, name = _components(relative)
        attempts = 0
        while True:
            try:
                parent = self._open_directory(directories, create=True)
                try:
                    return _open_at(parent, name, flags, self.path / relative, 0o600)
                finally:
                    os.close(parent)
            except FileNotFoundError:  # a directory on the way was pruned meanwhile
                attempts += 1
                if attempts == _CREATE_ATTEMPTS:
                    raise

    def remove_file(self, relative: str) -> None:
        """Delete the file ``relative``, then the directories it leaves empty (not the root).

        Raises:
            FileNotFoundError: it is already gone.
            UnsafePath: a component is a symbolic link.
        """
        *directories, name = _components(relative)
        chain = [os.dup(self._descriptor)]
        shown = self.path
        try:
            for directory in directories:
                shown /= directory
                chain.append(_open_at(chain[-1], directory, _DIRECTORY_FLAGS, shown))
            os.unlink(name, dir_fd=chain[-1])
            for parent, directory in zip(reversed(chain[:-1]), reversed(directories), strict=True):
                try:
                    os.rmdir(directory, dir_fd=parent)
                except OSError:  # not empty (the common case), or pruned by someone else
                    break
        finally:
            for descriptor in chain:
                os.close(descriptor)

    def rename(self, name: str, new_name: str) -> None:
        """Rename the entry ``name`` of this directory (a link itself, never its target)."""
        os.rename(name, new_name, src_dir_fd=self._descriptor, dst_dir_fd=self._descriptor)

    def touch(self, name: str) -> None:
        """Create the regular file ``name`` of this directory if needed; set its mtime to now.

        Raises:
            UnsafePath: ``name`` is a symbolic link.
        """
        descriptor = _open_at(self._descriptor, name, _TOUCH_FLAGS, self.path / name, 0o600)
        try:
            os.utime(descriptor)
        finally:
            os.close(descriptor)

    def write_new(self, name: str, data: bytes) -> None:
        """Create the file ``name`` of this directory with ``data``, unless it exists."""
        try:
            descriptor = _open_at(self._descriptor, name, _CREATE_FLAGS, self.path / name, 0o600)
        except FileExistsError:
            return
        with open(descriptor, "wb") as file:
            file.write(data)

    def files(self, depth: int) -> Iterator[tuple[str, os.stat_result]]:
        """``(relative path, status)`` of the regular files exactly ``depth`` directories down.

        Symbolic links, at any level, are skipped rather than followed; entries that vanish
        while being listed are skipped too.
        """
        yield from self._files(self._descriptor, "", depth)

    def _files(
        self, descriptor: int, prefix: str, depth: int
    ) -> Iterator[tuple[str, os.stat_result]]:
        with os.scandir(descriptor) as entries:
            listed = list(entries)
        for entry in listed:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if depth == 0:
                if stat.S_ISREG(info.st_mode):
                    yield prefix + entry.name, info
            elif stat.S_ISDIR(info.st_mode):
                try:
                    child = os.open(entry.name, _DIRECTORY_FLAGS, dir_fd=descriptor)
                except OSError:
                    continue
                try:
                    yield from self._files(child, f"{prefix}{entry.name}/", depth - 1)
                finally:
                    os.close(child)

    def _open_directory(self, directories: list[str], *, create: bool) -> int:
        """A new descriptor of the sub-directory ``directories``, walked link-free from the root."""
        descriptor = os.dup(self._descriptor)
        shown = self.path
        try:
            for directory in directories:
                shown /= directory
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(directory, 0o700, dir_fd=descriptor)
                child = _open_at(descriptor, directory, _DIRECTORY_FLAGS, shown)
                os.close(descriptor)
                descriptor = child
        except BaseException:
            os.close(descriptor)
            raise
        return descriptor


def _components(relative: str) -> list[str]:
    """``relative`` split on ``/``; an absolute path or an empty/``.``/``..`` part is refused."""
    parts = relative.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise UnsafePath(errno.EINVAL, "leaves the cache directory", relative)
    return parts


def _open_at(parent: int, name: str, flags: int, shown: Path, mode: int = 0o777) -> int:
    """``openat(parent, name)`` (``shown`` is its path, for messages); a link raises UnsafePath."""
    try:
        return os.open(name, flags, mode, dir_fd=parent)
    except OSError as exc:
        # NB. O_NOFOLLOW on a link fails with ELOOP on Linux and macOS, EMLINK on FreeBSD.
        if exc.errno in (errno.ELOOP, errno.EMLINK) or (
            exc.errno == errno.ENOTDIR and _is_link(parent, name)
        ):
            raise UnsafePath(
                exc.errno,
                "is a symbolic link, which funcache_ipy never follows inside its cache "
                "directory; remove it",
                str(shown),
            ) from None
        raise


def _is_link(parent: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
    except OSError:
        return False
