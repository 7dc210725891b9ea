"""The store never reads, writes or deletes a file outside its real cache directory.

Whoever can write the cache directory (another user, or a tarball of someone's
``.funcache``) chooses its sub-directories and database rows. These tests plant real
symbolic links and forged rows and check the files they point at are never served,
overwritten or removed, and that a directory others may write is reported.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from funcache_ipy.store import MISSING, FuncacheWarning, open_store
from tests.store_helpers import database, meta, reopen, value_file

pytestmark = pytest.mark.skipif(os.name != "posix", reason="symlink attacks on POSIX")

KEY = "0123456789abcdef0123456789abcdef"
FILE_ARRAY = np.arange(20_000, dtype=np.float64)  # 160 kB: stored in a value file
HEX28 = "0123456789abcdef0123456789ab"


def files_under(directory: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in directory.rglob("*") if path.is_file()}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the cache whose files must never be touched."""
    path = tmp_path / "outside"
    path.mkdir()
    return path


def test_value_directory_swapped_for_a_symlink_is_not_read_through(
    isolated_cache: Path, outside: Path
) -> None:
    """Even a genuine envelope is refused when a directory on its way is a link."""
    open_store().set(KEY, FILE_ARRAY, meta())
    first = value_file(isolated_cache, KEY).relative_to(isolated_cache).parts[0]
    shutil.move(isolated_cache / first, outside / first)
    (isolated_cache / first).symlink_to(outside / first)
    before = files_under(outside)
    with pytest.warns(FuncacheWarning, match="symbolic link") as record:
        value = reopen(isolated_cache).get(KEY)
    assert value is MISSING, "a value was read through a symlinked directory"
    assert str(isolated_cache / first) in str(record[0].message), record[0].message
    assert files_under(outside) == before, "a file outside the cache was deleted"


def test_forged_rows_through_a_symlink_never_delete_outside_files(
    isolated_cache: Path, outside: Path
) -> None:
    victim = outside / "cd" / f"{HEX28}.val"
    stray = outside / "cd" / f"{HEX28[::-1]}.val"  # referenced by no row: an "orphan"
    victim.parent.mkdir()
    victim.write_text("precious")
    stray.write_text("also precious")
    old = 1_000_000_000  # 2001: far past any grace period for orphans
    os.utime(stray, (old, old))
    store = open_store()
    store.set(KEY, FILE_ARRAY, meta())
    (isolated_cache / "ab").symlink_to(outside)
    with database(isolated_cache) as db:
        db.execute("UPDATE Cache SET filename = ?", (f"ab/cd/{HEX28}.val",))
    fresh = reopen(isolated_cache)
    with pytest.warns(FuncacheWarning, match="symbolic link"):
        assert fresh.get(KEY) is MISSING
    fresh.set("other", FILE_ARRAY, meta())
    with database(isolated_cache) as db:
        db.execute("UPDATE Cache SET filename = ?", (f"ab/cd/{HEX28}.val",))
    fresh.clear()
    assert victim.read_text() == "precious", "clear() deleted a file outside the cache"
    assert stray.read_text() == "also precious", "orphan collection followed a symlink"


def test_symlinked_value_directories_never_receive_writes(
    isolated_cache: Path, outside: Path
) -> None:
    store = open_store()
    for index in range(256):  # wherever diskcache's random file name lands
        (isolated_cache / f"{index:02x}").symlink_to(outside)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stored = [store.set(f"k{index}", FILE_ARRAY + index, meta()) for index in range(5)]
    assert stored == [False] * 5, "a value was written through a symlinked directory"
    assert list(outside.rglob("*")) == [], "files were created outside the cache"
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "symbolic link" in messages[0], messages
    assert store.set("small", 1, meta()) is True, "SQLite entries should still work"


@pytest.mark.parametrize("name", ["cache.db", "cache.db-wal"])
def test_symlinked_database_files_are_refused(
    name: str, isolated_cache: Path, outside: Path
) -> None:
    open_store(outside / "cache").set(KEY, 1, meta())  # a real database, elsewhere
    open_store(outside / "cache").close()
    target = outside / "cache" / "cache.db"
    before = target.read_bytes()
    isolated_cache.mkdir()
    if name == "cache.db-wal":
        shutil.copy(target, isolated_cache / "cache.db")
    (isolated_cache / name).symlink_to(target)
    with pytest.raises(OSError, match=f"{name}.*symbolic link"):
        open_store()
    assert target.read_bytes() == before, "a database outside the cache was written"


def test_directory_writable_by_others_warns_once(isolated_cache: Path) -> None:
    isolated_cache.mkdir(mode=0o700)
    isolated_cache.chmod(0o777)
    with pytest.warns(FuncacheWarning, match="writable by others.*chmod 700") as record:
        store = open_store()
    assert str(isolated_cache) in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store.set(KEY, FILE_ARRAY, meta())
        assert open_store().get(KEY) is not MISSING


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown needs root")
def test_directory_owned_by_another_user_warns(isolated_cache: Path) -> None:
    isolated_cache.mkdir(mode=0o700)
    os.chown(isolated_cache, 65534, 65534)
    with pytest.warns(FuncacheWarning, match="owned by another user"):
        open_store()
