"""How an envelope lives on disk: a SQLite row when small, a value file when large.

diskcache's ``Disk`` decides where a value goes and reads it back. :class:`EnvelopeDisk`
is funcache_ipy's only such seam: it stores envelopes it is given and nothing else, never
unpickles, and reaches value files only through the cache directory's
:class:`~funcache_ipy.safedir.SafeDir`, under names diskcache could have made, so a
forged row cannot make it read, overwrite or delete a file elsewhere. Kept apart from
:mod:`funcache_ipy.store`, which decides what to store and what a fault means.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import stat
import sys
from typing import NamedTuple

import diskcache
from diskcache.core import MODE_BINARY, MODE_PICKLE, MODE_RAW, UNKNOWN

from funcache_ipy.envelope import Envelope
from funcache_ipy.safedir import SafeDir

__all__ = ["VALUE_FILE", "CorruptEntry", "EnvelopeDisk", "ValueFile", "VanishedValue", "disk_for"]

_LARGE = 2**21  # value files from one huge page up are preallocated
# NB. Reserving a file's blocks before writing makes ext4/xfs writes about a third faster
# (numpy's tofile does the same) and fails a too-large write before it starts. Linux only:
# elsewhere posix_fallocate may be emulated by writing a byte into every block.
_PREALLOCATE = sys.platform == "linux"
# The names diskcache gives value files: a row naming anything else was forged
VALUE_FILE = re.compile(r"[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{28}\.val")


class CorruptEntry(Exception):
    """A cache row that funcache_ipy did not write, or cannot read (message: why)."""


class VanishedValue(CorruptEntry):
    """The row's value file is gone: tampering, or a concurrent overwrite or delete."""


class EnvelopeDisk(diskcache.Disk):
    """A ``Disk`` that stores only envelopes and never unpickles anything.

    Value files are reached through :attr:`root` only, one link-free component at a time,
    and only under names diskcache could have generated: a forged row, or a symlinked
    sub-directory, could otherwise make it read, overwrite or delete ``~/.bashrc``.
    """

    root: SafeDir  # set on the per-store subclass made by :func:`disk_for`

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
    ) -> bytes | ValueFile | None:
        """Return an envelope's bytes, or its open value file (read while verifying it).

        ``read=True`` means "the tag only" (``None``).

        Raises:
            CorruptEntry: the row is in a mode funcache_ipy never writes (diskcache's
                pickle mode above all), or its value file is missing or unreadable.
        """
        if read:
            return None
        if mode == MODE_RAW and type(value) is bytes:
            return value
        if mode == MODE_BINARY and value is None and filename is not None:
            if not VALUE_FILE.fullmatch(filename):
                raise CorruptEntry(f"value file name {filename!r} was not made by diskcache")
            return _open_value_file(self.root, filename)
        if mode == MODE_PICKLE:
            raise CorruptEntry("diskcache pickle written by someone else; not unpickled")
        raise CorruptEntry(f"not a funcache_ipy entry (diskcache mode {mode})")

    def remove(self, file_path: str) -> None:
        """Delete a value file (and the directories it empties), if diskcache named it."""
        if VALUE_FILE.fullmatch(file_path):
            with contextlib.suppress(OSError):  # gone already, or a link on the way: left alone
                self.root.remove_file(file_path)


def disk_for(root: SafeDir) -> type[EnvelopeDisk]:
    """An :class:`EnvelopeDisk` class bound to ``root`` (diskcache builds its Disk itself)."""
    return type("EnvelopeDisk", (EnvelopeDisk,), {"root": root})


def _write_file(root: SafeDir, filename: str, envelope: Envelope) -> None:
    """Write ``envelope`` to a new value file, straight from the value's own buffers.

    NB. A process killed here leaves a file no row refers to;
    :meth:`funcache_ipy.store.Store.orphans` counts such files and the store collects
    them (see :data:`funcache_ipy.orphans.ORPHAN_GRACE`).
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


class ValueFile(NamedTuple):
    """An open value file, to be read (and verified) by :meth:`funcache_ipy.store.Store.get`,
    then closed."""

    descriptor: int
    size: int


def _open_value_file(root: SafeDir, filename: str) -> ValueFile:
    """Open a value file for reading, refusing links on the way and anything not regular.

    The regular-file check (after a non-blocking, link-refusing open) keeps a planted
    FIFO or device from hanging or feeding the read.
    """
    try:
        descriptor = root.open_file(filename)
    except FileNotFoundError:
        raise VanishedValue(f"value file {root.path / filename} is missing") from None
    except OSError as exc:
        raise CorruptEntry(f"cannot open value file: {exc}") from None
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode):
        os.close(descriptor)
        raise CorruptEntry(f"value file {root.path / filename} is not a regular file")
    return ValueFile(descriptor, info.st_size)
