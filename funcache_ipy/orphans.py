"""Value files no row refers to: finding them, and collecting them safely.

A value file is written before its row, so a store killed in between leaves a file that
nothing refers to and nothing would ever delete. These helpers find such orphans and
delete the ones old enough not to be another process's write in progress.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Iterator
from typing import Final, NamedTuple

import diskcache

from funcache_ipy.database import referenced_files
from funcache_ipy.safedir import SafeDir
from funcache_ipy.value_files import VALUE_FILE

__all__ = [
    "ORPHAN_GRACE",
    "SWEEP_INTERVAL",
    "Orphans",
    "collect_orphans",
    "orphan_files",
    "sweep_due",
]

# A value file is written before its row, so one without a row may be a write in progress
# (mtime is its last write): only files older than this count as a killed store's orphans.
ORPHAN_GRACE: Final = 10 * 60.0
# Looking for orphans walks the whole tree, so a store opening does it at most this often
# (stamped in _SWEEP_STAMP's mtime); clear() always does.
SWEEP_INTERVAL: Final = 6 * 3600.0
_SWEEP_STAMP: Final = "orphans-swept"


class Orphans(NamedTuple):
    """Value files that no database row refers to: a store killed mid-write leaves one."""

    files: int
    bytes: int


def orphan_files(root: SafeDir, cache: diskcache.Cache) -> Iterator[tuple[str, os.stat_result]]:
    """Value files (by diskcache's naming) under ``root`` that no row of ``cache`` refers to."""
    referenced = referenced_files(cache)
    for filename, info in root.files(depth=2):
        if VALUE_FILE.fullmatch(filename) and filename not in referenced:
            yield filename, info


def collect_orphans(root: SafeDir, cache: diskcache.Cache) -> Orphans:
    """Delete orphaned value files older than :data:`ORPHAN_GRACE`; return what went."""
    cutoff = time.time() - ORPHAN_GRACE
    files = size = 0
    for filename, info in list(orphan_files(root, cache)):
        if info.st_mtime < cutoff:
            with contextlib.suppress(OSError):  # gone already: someone else collected it
                root.remove_file(filename)
                files, size = files + 1, size + info.st_size
    return Orphans(files, size)


def sweep_due(root: SafeDir) -> bool:
    """Whether orphans were last looked for over :data:`SWEEP_INTERVAL` ago; if so, stamp now.

    NB. Stamped before sweeping, so kernels starting together do not all walk the tree.
    """
    info = root.lstat(_SWEEP_STAMP)
    if (
        info is not None
        and stat.S_ISREG(info.st_mode)
        and info.st_mtime > time.time() - SWEEP_INTERVAL
    ):
        return False
    with contextlib.suppress(OSError):
        if info is not None and not stat.S_ISREG(info.st_mode):
            root.remove_file(_SWEEP_STAMP)
        root.touch(_SWEEP_STAMP)
    return True
