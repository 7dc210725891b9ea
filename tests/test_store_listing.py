"""Listing entries: an index by name, one scan for everything, never a stale listing.

``data/store_0bbc272_cache`` was written by the store of commit 0bbc272, before rows were
indexed by name, under ``GOLDEN_SECRET``: three entries of ``nb.f`` (values ``{"i": i}``,
in SQLite), one of ``nb.g`` (``np.arange(6000.0)``, in a value file) and one of
``cell:abcd1234`` (``"cell"``).
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from IPython.core.interactiveshell import InteractiveShell

from funcache_ipy.envelope import secret_path
from funcache_ipy.store import MISSING, EntryMeta, FuncacheWarning, Store, open_store
from tests.conftest import run_cell
from tests.store_helpers import database, meta, reopen
from tests.test_store_faults import read_only

GOLDEN_SECRET = bytes(range(32))  # a test key, not a secret: it only signs the fixture
OLD_KEYS = {"nb.f": ["f0", "f1", "f2"], "nb.g": ["g0"], "cell:abcd1234": ["h0"]}


def old_directory(cache: Path) -> None:
    """Put the directory written by the old store, and the secret it was written under, in place."""
    shutil.copytree(Path(__file__).parent / "data" / "store_0bbc272_cache", cache)
    key_path = secret_path()
    key_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.write_bytes(GOLDEN_SECRET)
    key_path.chmod(0o600)


def keys_by_name(store: Store) -> dict[str, list[str]]:
    listed: dict[str, list[str]] = {}
    for key, entry in store.entries():
        listed.setdefault(entry.name, []).append(key[:2])
    return listed


def check_old_entries(store: Store) -> None:
    assert keys_by_name(store) == OLD_KEYS, "the old directory lists other entries"
    for name, keys in OLD_KEYS.items():
        listed = [key[:2] for key, _ in store.entries(name)]
        assert listed == keys, f"{name}: expected {keys} (oldest first), got {listed}"
    assert store.get("f1" + "0" * 30) == {"i": 1}, "an old SQLite entry no longer reads"
    array = store.get("g0" + "0" * 30)
    assert isinstance(array, np.ndarray) and np.array_equal(array, np.arange(6000.0)), (
        "an old value file no longer reads"
    )


def test_a_directory_written_before_the_index_lists_and_reads(isolated_cache: Path) -> None:
    old_directory(isolated_cache)
    check_old_entries(open_store())
    check_old_entries(reopen(isolated_cache))  # and once the index exists


def test_a_read_only_old_directory_lists_without_the_index(isolated_cache: Path) -> None:
    old_directory(isolated_cache)
    with read_only(isolated_cache), pytest.warns(FuncacheWarning, match="cannot write"):
        store = reopen(isolated_cache)
        check_old_entries(store)


def test_info_of_an_old_directory(
    isolated_cache: Path, ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    old_directory(isolated_cache)
    run_cell(ip, "%funcache info")
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[3:]}
    assert rows["nb.f"][1:3] == ["function", "3"], rows
    assert rows["nb.g"][1:3] == ["function", "1"], rows
    assert "cell:abcd1234" in rows, rows


def test_forged_rows_break_neither_the_index_nor_listing_nor_writes(isolated_cache: Path) -> None:
    """Rows are data anyone who can write the directory chooses: tags that are no JSON,
    or whose name is no string, are left out, before and after the index exists."""
    old_directory(isolated_cache)
    forged = [
        ("x1", b'{"name": "nb.f"}'),  # a BLOB
        ("x2", '{"name": "nb.f", '),  # malformed JSON
        ("x3", '{"name": {"nb.f": 1}}'),
        ("x4", '["nb.f"]'),
    ]
    with database(isolated_cache) as db:
        db.executemany("INSERT INTO Cache (key, raw, tag) VALUES (?, 1, ?)", forged)
    store = open_store()
    check_old_entries(store)
    assert store.set("f3" + "0" * 30, {"i": 3}, EntryMeta("nb.f", 2e9, 0.0, 0, {})) is True
    with database(isolated_cache) as db:
        db.executemany(
            "INSERT INTO Cache (key, raw, tag) VALUES (?, 1, ?)",
            [(key + "b", tag) for key, tag in forged],
        )
    for listing in (store, reopen(isolated_cache)):
        keys = [key[:2] for key, _ in listing.entries("nb.f")]
        assert keys == ["f0", "f1", "f2", "f3"], f"expected f0-f3, got {keys}"
        assert len(listing.entries()) == 6


def test_listing_sees_every_write_and_delete(isolated_cache: Path) -> None:
    """A listing is kept between calls: anything written since, by anyone, must show."""
    store = open_store()

    def names() -> list[str]:
        return sorted(key for key, _ in store.entries())

    def of_f() -> list[str]:
        return sorted(key for key, _ in store.entries("nb.f"))

    store.set("a", 1, meta())
    assert names() == ["a"] and of_f() == ["a"]
    store.set("b", 2, meta())  # this connection
    assert names() == ["a", "b"] and of_f() == ["a", "b"]
    reopen(isolated_cache).set("c", 3, meta())  # another process's connection
    assert names() == ["a", "b", "c"] and of_f() == ["a", "b", "c"]
    worker = threading.Thread(target=lambda: store.set("d", 4, meta("nb.g")))
    worker.start()  # another thread: another connection of the same store
    worker.join()
    assert names() == ["a", "b", "c", "d"] and of_f() == ["a", "b", "c"]
    assert store.clear("nb.g") == 1
    assert names() == ["a", "b", "c"], "a cleared entry is still listed"
    reopen(isolated_cache).clear("nb.f")
    assert names() == [] and of_f() == [], "entries cleared elsewhere are still listed"
    store.set("e", 5, meta())
    with database(isolated_cache) as db:
        db.execute("UPDATE Cache SET value = ? WHERE key = 'e'", (b"tampered",))
    store.close()  # NB. drops the memory layer, so the next get reads the row
    with pytest.warns(FuncacheWarning, match="unusable"):
        assert store.get("e") is MISSING
    assert names() == [], "an entry deleted as corrupt is still listed"
