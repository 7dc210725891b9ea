"""File operations that cannot leave one directory, whatever its tree or its database says.

The cache directory's sub-directories, and the value-file names in its database, are data
that whoever can write the directory chooses. Opening ``root/ab/cd/x.val`` by path follows
a symlinked ``ab`` anywhere (``O_NOFOLLOW`` guards only the last component), so a planted
``ab -> ~/project`` plus a forged row would let the cache read, overwrite or delete files
there. :class:`SafeDir` instead holds a descriptor of the real directory and walks every
path from it one component at a time (``openat`` with ``O_NOFOLLOW | O_DIRECTORY``): a
symbolic link anywhere along the way is refused, never followed, and a directory renamed
or replaced under us is noticed rather than silently swapped in. POSIX only (``dir_fd``).

A directory is normally its owner's alone (0o700, files 0o600). One that is *group-shared*
-- setgid, group-writable, not world-writable (``chmod 2770``, the usual way to give a
team one folder) -- was shared on purpose: what is created in it is group-writable
(directories 0o2770, files 0o660, whatever the umask), so teammates can write there too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Final

__all__ = ["SafeDir", "UnsafePath", "is_group_shared"]

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


def is_group_shared(info: os.stat_result) -> bool:
    """Whether a directory was shared with its group on purpose: setgid, group-writable,
    and not writable by everyone (a world-writable one is never "shared", just open)."""
    mode = info.st_mode
    return bool(mode & stat.S_ISGID and mode & stat.S_IWGRP and not mode & stat.S_IWOTH)


class UnsafePath(OSError):
    """A path inside the directory that is refused: a symbolic link on the way, or ``..``."""

    def __str__(self) -> str:
        return f"{self.filename} {self.strerror}"


class SafeDir:
    """An open directory; every path given to its methods is relative to it and stays in it.

    Paths use ``/`` and may not contain empty, ``.`` or ``..`` components.
    """

    path: Path
    shared: bool  # group-shared (see the module's docstring): create group-writable things

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
        self.shared = is_group_shared(os.fstat(self._descriptor))
        self._file_mode = 0o660 if self.shared else 0o600
        self._directory_mode = 0o2770 if self.shared else 0o700

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
        """A write descriptor of a new file ``relative`` (0o600, or 0o660 if shared), making
        its directories.

        Raises:
            FileExistsError: the file exists already.
            UnsafePath: a component is a symbolic link.
            OSError: the file or a directory cannot be created (full disk, permissions).
        """
        return self._create(relative, _CREATE_FLAGS)

    def open_lock(self, relative: str) -> int:
        """A read-write descriptor of ``relative`` (0o600, or 0o660 if shared), created with
        its directories if missing: a lock file, which other processes open too.

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
                    return self._open_new(parent, name, flags, self.path / relative)
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
        descriptor = self._open_new(self._descriptor, name, _TOUCH_FLAGS, self.path / name)
        try:
            os.utime(descriptor)
        finally:
            os.close(descriptor)

    def write_new(self, name: str, data: bytes) -> None:
        """Create the file ``name`` of this directory with ``data``, unless it exists."""
        try:
            descriptor = self._open_new(self._descriptor, name, _CREATE_FLAGS, self.path / name)
        except FileExistsError:
            return
        with open(descriptor, "wb") as file:
            file.write(data)

    def share_file(self, name: str) -> None:
        """In a shared directory, make the file ``name`` of it group-writable (creating it
        empty if missing); elsewhere do nothing.

        For files others open by name (SQLite's database): they need it writable.

        Raises:
            UnsafePath: ``name`` is a symbolic link.
            OSError: it cannot be created.
        """
        if not self.shared:
            return
        flags = os.O_RDONLY | os.O_CREAT | _NOFOLLOW | _NONBLOCK | _CLOEXEC
        descriptor = self._open_new(self._descriptor, name, flags, self.path / name)
        try:
            info = os.fstat(descriptor)
            # NB. Only its owner may chmod a file; a teammate's is as its owner left it.
            if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) & 0o060 != 0o060:
                os.fchmod(descriptor, stat.S_IMODE(info.st_mode) | 0o060)
        finally:
            os.close(descriptor)

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
                made = False
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(directory, self._directory_mode, dir_fd=descriptor)
                        made = True
                child = _open_at(descriptor, directory, _DIRECTORY_FLAGS, shown)
                if made and self.shared:
                    os.fchmod(child, self._directory_mode)  # NB. the umask took group write
                os.close(descriptor)
                descriptor = child
        except BaseException:
            os.close(descriptor)
            raise
        return descriptor

    def _open_new(self, parent: int, name: str, flags: int, shown: Path) -> int:
        """``_open_at`` for a file that may be created: 0o600, or 0o660 in a shared directory.

        NB. The umask (commonly 022) would take the group's write bit: a file this call
        created gets its mode set explicitly (told by its size 0 and our ownership).
        """
        descriptor = _open_at(parent, name, flags, shown, self._file_mode)
        if self.shared:
            info = os.fstat(descriptor)
            if (
                info.st_size == 0
                and info.st_uid == os.geteuid()
                and stat.S_IMODE(info.st_mode) != self._file_mode
            ):
                with contextlib.suppress(OSError):
                    os.fchmod(descriptor, self._file_mode)
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
