"""Opening a cache directory: made safely, checked for who may write it, settings pinned.

The store keeps entries; this is how it gets a directory and a database to keep them in,
on first use and again whenever the old ones were deleted, read-only or corrupt. Every
failure to open becomes one ``OSError`` that names the directory and what to do.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Final

from funcache_ipy.database import STORAGE_ERRORS, Database, open_database
from funcache_ipy.safedir import SafeDir, UnsafePath
from funcache_ipy.value_files import disk_for

__all__ = ["DEFAULT_DIRECTORY", "ENV_VAR", "open_directory"]

ENV_VAR: Final = "FUNCACHE_IPY_DIR"
DEFAULT_DIRECTORY: Final = ".funcache"
_FILE_THRESHOLD = 2**15  # envelopes from 32 KiB up live in value files, smaller in SQLite
_TIMEOUT = 10.0  # seconds to wait for SQLite's write lock before giving up on a write

Report = Callable[[tuple[str, str], str], None]
"""Warn with a message unless its ``(what, why)`` was reported already (the store's)."""


def open_directory(directory: Path, size_limit: int, report: Report) -> tuple[SafeDir, Database]:
    """Open the directory (creating it 0o700, with a ``.gitignore`` of ``*``) and database.

    Every setting that matters is passed explicitly, so values planted in the
    database's Settings table cannot change how entries are stored or evicted.

    Raises:
        OSError: the directory or its database cannot be opened, not even for reading;
            the message names the path and what to do.
    """
    settings = {
        "size_limit": size_limit,
        "eviction_policy": "least-recently-stored",
        "cull_limit": 10,
        "statistics": 0,
        "tag_index": 0,
        "disk_min_file_size": _FILE_THRESHOLD,
    }
    root: SafeDir | None = None
    try:
        root = SafeDir(directory, create=True)
        _check_ownership(root, directory, report)
        with contextlib.suppress(OSError):  # a read-only directory is still served
            root.write_new(".gitignore", b"*\n")
        database = open_database(root, disk_for(root), settings, _TIMEOUT)
    except STORAGE_ERRORS as exc:
        if root is not None:
            root.close()
        advice = f"set {ENV_VAR} (or pass directory=...) to a writable location"
        raise OSError(
            f"cannot open the funcache_ipy cache directory {directory}: "
            + (str(exc) if isinstance(exc, UnsafePath) else f"{exc}; {advice}")
        ) from exc
    return root, database


def _check_ownership(root: SafeDir, directory: Path, report: Report) -> None:
    """Warn (once) when others may write the directory: they could tamper with it.

    A group-shared directory (setgid, group-writable, not world-writable) was shared
    with a team on purpose, whoever owns it: no warning. Teammates can delete entries
    there, never make one load (each user's are authenticated under their own secret).
    """
    info = root.stat()
    if os.name != "posix" or root.shared:
        return
    if not (info.st_mode & 0o022 or info.st_uid != os.geteuid()):
        return
    owner = "owned by another user" if info.st_uid != os.geteuid() else "writable by others"
    report(
        ("ownership", owner),
        f"funcache_ipy cache directory {directory} is {owner} "
        f"(mode {stat.filemode(info.st_mode)}, uid {info.st_uid}): they can delete or "
        f"plant entries; use a directory of your own, mode 700 (chmod 700 "
        f"{directory}), or to share it with your group: chmod 2770",
    )
