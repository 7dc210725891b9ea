"""The store under crashes, damage, full disks, read-only directories and crowds.

Everything here happens for real: a storing process is killed with SIGKILL, the database
file is truncated, a small tmpfs is filled up, a directory is made read-only by a bind
mount (as root) or by its permissions, and sixteen processes store and clear at once.
Tests that need root for a mount skip with the reason when run without it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from funcache_ipy.orphans import ORPHAN_GRACE, SWEEP_INTERVAL, Orphans
from funcache_ipy.store import MISSING, Store, open_store
from tests.store_helpers import meta, reopen

from .conftest import run_cell

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX faults")

FILE_ARRAY = np.arange(20_000, dtype=np.float64)  # 160 kB: stored in a value file
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@contextlib.contextmanager
def recorded() -> Iterator[list[str]]:
    """Every warning raised inside, as message strings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        messages: list[str] = []
        yield messages
    messages.extend(str(w.message) for w in caught)


def age(*paths: Path, seconds: float) -> None:
    """Set the modification time of ``paths`` ``seconds`` into the past."""
    then = time.time() - seconds
    for path in paths:
        os.utime(path, (then, then))


def store_fifteen(directory: Path) -> dict[str, object]:
    """Fifteen entries, in SQLite and in value files; returns what was stored."""
    values: dict[str, object] = {f"k{i}": np.arange(i * 3000.0) for i in range(15)}
    store = reopen(directory)
    for key, value in values.items():
        assert store.set(key, value, meta())
    store.close()
    return values


def hits(store: Store, values: dict[str, object]) -> int:
    count = 0
    for key, value in values.items():
        got = store.get(key)
        if got is not MISSING:
            assert np.array_equal(got, value), f"{key}: wrong value served"
            count += 1
    return count


# -- kill -9 while storing ---------------------------------------------------------------

STORE_FOREVER = """
    import itertools, sys
    import numpy as np
    from funcache_ipy.store import EntryMeta, open_store

    store = open_store()
    big = np.ones(2**23)  # 64 MB: the kill lands in the middle of writing it
    for index in itertools.count():
        store.set(f"big{index}", big, EntryMeta("nb.big", 0.0, 0.0, 0, {}))
    """


def kill_while_storing(directory: Path) -> None:
    """Run a process that stores big values, and SIGKILL it while a value file is unreferenced.

    NB. Only once the file has its full size (it is preallocated right after it is
    created): a kill in between leaves an empty orphan, which tells less.
    """
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(STORE_FOREVER)])
    try:
        while process.poll() is None:
            with contextlib.suppress(sqlite3.Error, FileNotFoundError):
                unreferenced = value_files(directory) - referenced(directory)
                if any((directory / name).stat().st_size >= 2**26 for name in unreferenced):
                    break
            time.sleep(0.002)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL


def value_files(directory: Path) -> set[str]:
    return {str(path.relative_to(directory)) for path in directory.glob("*/*/*.val")}


def referenced(directory: Path) -> set[str]:
    uri = f"file:{directory / 'cache.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        rows = db.execute("SELECT filename FROM Cache WHERE filename IS NOT NULL")
        return {filename for (filename,) in rows}


def orphan_paths(directory: Path) -> list[Path]:
    return [directory / name for name in value_files(directory) - referenced(directory)]


@pytest.fixture
def orphaned(isolated_cache: Path) -> list[Path]:
    """A cache directory a storing process was killed in, with its orphaned value files."""
    for _ in range(5):  # NB. the kill can land just after the row went in; try again then
        kill_while_storing(isolated_cache)
        if orphan_paths(isolated_cache):
            return orphan_paths(isolated_cache)
    pytest.fail("could not kill a storing process in the middle of a write")


def test_killed_store_leaves_orphans_that_are_counted(
    isolated_cache: Path, orphaned: list[Path]
) -> None:
    store = reopen(isolated_cache)
    expected = Orphans(len(orphaned), sum(path.stat().st_size for path in orphaned))
    assert store.orphans() == expected, f"expected {expected}, got {store.orphans()}"
    assert expected.bytes >= 2**26, "the orphan should be the full-size value file"
    assert all(path.exists() for path in orphaned), "a young orphan may be a write in progress"


def test_clear_collects_orphans_past_the_grace_period(
    isolated_cache: Path, orphaned: list[Path]
) -> None:
    age(*orphaned, seconds=ORPHAN_GRACE + 60)
    store = reopen(isolated_cache)
    store.clear()
    assert [path for path in orphaned if path.exists()] == [], "orphans survived clear()"
    assert store.orphans() == Orphans(0, 0)


def test_opening_collects_orphans_at_most_once_per_interval(
    isolated_cache: Path, orphaned: list[Path]
) -> None:
    age(*orphaned, seconds=ORPHAN_GRACE + 60)
    reopen(isolated_cache)
    assert all(path.exists() for path in orphaned), "swept again within the interval"
    age(isolated_cache / "orphans-swept", seconds=SWEEP_INTERVAL + 60)
    reopen(isolated_cache)
    assert [path for path in orphaned if path.exists()] == [], "orphans survived reopening"


def test_entries_survive_the_kill_and_orphan_collection(
    isolated_cache: Path, orphaned: list[Path]
) -> None:
    store = reopen(isolated_cache)
    kept = {key: meta for key, meta in store.entries()}
    age(*orphaned, seconds=ORPHAN_GRACE + 60)
    age(*[isolated_cache / name for name in referenced(isolated_cache)], seconds=2 * ORPHAN_GRACE)
    age(isolated_cache / "orphans-swept", seconds=SWEEP_INTERVAL + 60)
    store = reopen(isolated_cache)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for key in kept:
            value = store.get(key)
            assert isinstance(value, np.ndarray) and value.shape == (2**23,), key


# -- a damaged database ------------------------------------------------------------------

DAMAGE = {
    "truncated to 100 bytes": lambda data: data[:100],
    "truncated mid-file": lambda data: data[: len(data) // 2],
    "header overwritten": lambda data: b"\x00" * 100 + data[100:],
    "pages overwritten": lambda data: data[:4096] + b"\xff" * (len(data) - 4096),
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_corrupt_database_is_moved_aside_and_replaced(damage, isolated_cache: Path) -> None:  # type: ignore[no-untyped-def]
    values = store_fifteen(isolated_cache)
    database = isolated_cache / "cache.db"
    broken = damage(database.read_bytes())
    database.write_bytes(broken)
    with recorded() as messages:
        store = reopen(isolated_cache)
        hits(store, values)  # damage the header check missed surfaces here
        assert store.set("after", 42, meta()) is True, "the cache should work again"
        assert store.get("after") == 42
    corrupt = [message for message in messages if "corrupt" in message]
    assert len(corrupt) == 1, messages
    aside = sorted(isolated_cache.glob("cache.db.corrupt-*"))
    assert aside, f"the broken database was not kept: {sorted(isolated_cache.iterdir())}"
    assert str(aside[0]) in corrupt[0], corrupt[0]
    assert aside[0].read_bytes() == broken, "the kept copy should be the broken file as found"
    assert "FUNCACHE_IPY_DIR" not in corrupt[0], "misleading advice"


def test_database_corrupted_while_open_is_replaced(isolated_cache: Path) -> None:
    values = store_fifteen(isolated_cache)
    store = reopen(isolated_cache)
    assert hits(store, values) == 15
    store.close()
    database = isolated_cache / "cache.db"
    data = database.read_bytes()
    database.write_bytes(data[:4096] + b"\xff" * (len(data) - 4096))
    with recorded() as messages:
        for _ in range(3):
            hits(store, values)
        assert store.set("after", 42, meta()) is True
    assert len([m for m in messages if "corrupt" in m]) == 1, messages
    assert list(isolated_cache.glob("cache.db.corrupt-*")), "the broken database was not kept"


# -- full disk, read-only directory -------------------------------------------------------


def mount(*arguments: str) -> None:
    result = subprocess.run(["mount", *arguments], capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f"cannot mount ({result.stderr.strip()})")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs (root only), unmounted afterwards."""
    if not IS_ROOT:
        pytest.skip("mounting a small tmpfs needs root")
    point = tmp_path / "disk"
    point.mkdir()
    mount("-t", "tmpfs", "-o", "size=4m,mode=700", "tmpfs", str(point))
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=True)


def fill(directory: Path) -> Path:
    """Write a file until the disk holding ``directory`` is full."""
    filler = directory / "filler"
    with open(filler, "wb") as file, contextlib.suppress(OSError):
        while True:
            file.write(b"\0" * 65536)
            file.flush()
    return filler


def test_full_disk_still_serves_hits_and_warns_once(small_disk: Path) -> None:
    cache = small_disk / "cache"
    values = store_fifteen(cache)
    filler = fill(small_disk)
    with recorded() as messages:
        store = reopen(cache)
        served = hits(store, values)
        for index in range(5):
            assert store.set(f"new{index}", FILE_ARRAY, meta()) is False
            assert store.set(f"small{index}", index, meta()) is False
            served += hits(store, values)
    assert served == 90, f"expected 90 hits on a full disk, got {served}"
    assert len(messages) == 1 and str(cache) in messages[0], messages
    assert "disk is full" in messages[0], messages[0]
    filler.unlink()
    assert store.set("later", FILE_ARRAY, meta()) is True, (
        "writes should resume once space is freed"
    )
    assert np.array_equal(reopen(cache).get("later"), FILE_ARRAY)


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """Make ``directory`` read-only for real: a read-only bind mount as root, else chmod."""
    if IS_ROOT:
        mount("--bind", str(directory), str(directory))
        try:
            mount("-o", "remount,ro,bind", str(directory))
            yield
        finally:
            subprocess.run(["umount", "-l", str(directory)], check=True)
        return
    modes = {path: path.stat().st_mode for path in [directory, *directory.rglob("*")]}
    for path in modes:
        path.chmod(modes[path] & ~0o222)
    try:
        yield
    finally:
        for path, mode in modes.items():
            path.chmod(mode)


def test_read_only_directory_still_serves_hits_and_warns_once(isolated_cache: Path) -> None:
    values = store_fifteen(isolated_cache)
    with read_only(isolated_cache), recorded() as messages:
        store = reopen(isolated_cache)
        served = hits(store, values)
        assert store.set("new", FILE_ARRAY, meta()) is False
        assert store.set("new2", 1, meta()) is False
        served += hits(store, values)
        assert store.clear() == 0
        served += hits(store, values)
    assert served == 45, f"expected 45 hits from a read-only directory, got {served}"
    assert not store.writable
    assert len(messages) <= 2, messages  # NB. read-only, and nothing cleared
    assert "cannot write" in messages[0] and "served" in messages[0], messages
    reason = "read-only file system" if IS_ROOT else "not writable for you"
    assert reason in messages[0], messages[0]


# -- crowds ------------------------------------------------------------------------------

CROWD = """
    import sys, time, warnings
    from funcache_ipy.store import EntryMeta, open_store

    me, start = int(sys.argv[1]), float(sys.argv[2])
    warnings.simplefilter("error")
    store = open_store()
    time.sleep(max(0.0, start - time.time()))
    meta = EntryMeta("nb.crowd", 0.0, 0.0, 0, {})
    for index in range(40):
        if me % 4 == 0 and index % 5 == 0:
            store.clear()
        else:
            assert store.set(f"{me}-{index}", bytes([me]) * 40_000, meta), index
    """


def test_sixteen_processes_storing_and_clearing_never_fail() -> None:
    start = time.time() + 2.0
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(CROWD), str(me), str(start)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for me in range(16)
    ]
    errors = [process.communicate(timeout=120)[1] for process in processes]
    failed = [error for process, error in zip(processes, errors, strict=True) if process.returncode]
    assert failed == [], failed[0][-1000:]


# -- one store, one limit, per directory --------------------------------------------------


def test_size_limit_set_by_the_magics_governs_decorated_functions(
    shell, isolated_cache: Path
) -> None:  # type: ignore[no-untyped-def]
    shell.extension_manager.load_extension("funcache_ipy")
    try:
        run_cell(shell, "%config FuncacheMagics.size_limit = 1_000_000")
        run_cell(shell, "%%funcache\nx = 1\n")
        run_cell(
            shell,
            "import numpy as np, funcache_ipy\n"
            "@funcache_ipy.cache\n"
            "def block(i):\n"
            "    return np.full(20_000, i, dtype=np.float64)\n"
            "for i in range(30):\n"
            "    block(i)\n",
        )
    finally:
        shell.extension_manager.unload_extension("funcache_ipy")
        shell.config.pop("FuncacheMagics", None)
    volume = open_store().volume()
    assert volume < 1_500_000, f"expected under 1.5 MB, got {volume} (limit ignored)"


def test_one_store_per_real_directory(isolated_cache: Path, tmp_path: Path) -> None:
    store = open_store()
    (tmp_path / "link").symlink_to(isolated_cache)
    assert open_store(tmp_path / "link") is store
    assert open_store(str(isolated_cache / ".." / "cache")) is store
    store.size_limit = 12345
    assert open_store(tmp_path / "link").size_limit == 12345
