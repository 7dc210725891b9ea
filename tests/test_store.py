"""Store behaviour on real files: round trips, freshness, tampering, faults, processes.

Fault tests damage the files under the cache directory (SQLite rows, value files,
permissions) the way a crash, a full disk or an attacker would, and check that the
store answers with a miss or ``False`` plus a :class:`FuncacheWarning` -- never an
exception, never a stale or foreign value, never code execution.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import stat
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import diskcache
import numpy as np
import pandas as pd
import pytest

from funcache_ipy.envelope import CorruptEnvelope, Sealer, load_secret, secret_path
from funcache_ipy.store import MISSING, FuncacheWarning, Store, open_store
from tests.store_helpers import database, meta, reopen, value_file

KEY = "0123456789abcdef0123456789abcdef"
SMALL_ARRAY = np.arange(100, dtype=np.float64)  # envelope kept in SQLite
FILE_ARRAY = np.arange(20_000, dtype=np.float64)  # 160 kB: value file, still in memory layer
BIG_ARRAY = np.arange(300_000, dtype=np.float64)  # 2.4 MB: value file only


def same(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, pd.DataFrame):
        return isinstance(b, pd.DataFrame) and a.equals(b) and list(a.dtypes) == list(b.dtypes)
    return type(a) is type(b) and a == b


@contextlib.contextmanager
def no_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def expect_fault(store: Store, key: str = KEY, name: str = "nb.f") -> pytest.WarningsRecorder:
    """Assert ``get`` is a miss that warns naming the entry and the directory."""
    with pytest.warns(FuncacheWarning) as record:
        assert store.get(key) is MISSING
    message = str(record[0].message)
    assert name in message and key in message and str(store.directory) in message, message
    return record


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result


# -- round trips and freshness ------------------------------------------------------


VALUES = {
    "none": None,
    "int": 12345678901234567890,
    "float": -0.0,
    "str": "héllo",
    "dict": {"a": [1, 2.5, None], "b": (True, b"raw"), "c": {3, 4}},
    "small array": SMALL_ARRAY,
    "file array": FILE_ARRAY,
    "big array": BIG_ARRAY,
    "fortran array": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    "dataframe": pd.DataFrame({"x": np.arange(5), "y": list("abcde"), "z": np.linspace(0, 1, 5)}),
    "datetime frame": pd.DataFrame(
        {
            "naive": pd.date_range("2024-01-01", periods=5, freq="h"),
            "aware": pd.date_range("2024-01-01", periods=5, freq="D", tz="Europe/Paris"),
            "delta": pd.to_timedelta(np.arange(5), unit="s"),
        }
    ),
    "big-endian datetime array": np.arange(6).reshape(2, 3).astype(">M8[s]"),
    "strided datetime array": np.arange(10).astype("M8[ms]")[::2],
}


@pytest.mark.parametrize("value", VALUES.values(), ids=VALUES.keys())
def test_round_trip_in_memory_and_from_disk(value: object, isolated_cache: Path) -> None:
    store = open_store()
    assert store.set(KEY, value, meta()) is True
    assert same(value, store.get(KEY)), "memory layer returned a different value"
    assert same(value, reopen(isolated_cache).get(KEY)), "disk returned a different value"


def test_datetime_data_travels_out_of_band(isolated_cache: Path) -> None:
    """Timestamps must not inflate the pickle stream, which is HMAC'd at SHA-256 speed."""
    stamps = np.arange(2**20).astype("datetime64[ns]")
    envelope = Sealer(load_secret(secret_path())).seal(stamps, KEY)
    assert len(envelope.stream) < 1024 and sum(b.nbytes for b in envelope.buffers) == stamps.nbytes
    open_store().set(KEY, stamps, meta())
    loaded = reopen(isolated_cache).get(KEY)
    assert isinstance(loaded, np.ndarray) and loaded.dtype == stamps.dtype
    assert loaded.flags.writeable and np.array_equal(loaded, stamps)


def test_absent_key_is_missing_and_none_is_a_value() -> None:
    store = open_store()
    assert store.get(KEY) is MISSING
    store.set(KEY, None, meta())
    assert store.get(KEY) is None


@pytest.mark.parametrize("array", [SMALL_ARRAY, FILE_ARRAY, BIG_ARRAY], ids=["sql", "file", "big"])
@pytest.mark.parametrize("fresh", [False, True], ids=["memory", "disk"])
def test_mutating_a_result_never_changes_the_next_get(
    array: np.ndarray, fresh: bool, isolated_cache: Path
) -> None:
    open_store().set(KEY, {"list": [1, 2], "array": array.copy()}, meta())
    store = reopen(isolated_cache) if fresh else open_store()
    first = store.get(KEY)
    assert isinstance(first, dict) and first["array"].flags.writeable
    first["list"].append(3)
    first["array"][:] = -1
    second = store.get(KEY)
    assert isinstance(second, dict)
    assert second["list"] == [1, 2], f"expected [1, 2], got {second['list']} (shared object)"
    assert np.array_equal(second["array"], array), "array changed by mutating an earlier result"


def test_mutating_the_original_after_set_does_not_change_the_entry() -> None:
    store = open_store()
    original = FILE_ARRAY.copy()
    store.set(KEY, original, meta())
    original[:] = 0
    assert np.array_equal(store.get(KEY), FILE_ARRAY)


def test_large_array_comes_back_writable_and_equal(isolated_cache: Path) -> None:
    array = np.random.default_rng(0).random(8 * 2**20)  # 64 MB
    assert open_store().set(KEY, array, meta()) is True
    loaded = reopen(isolated_cache).get(KEY)
    assert isinstance(loaded, np.ndarray)
    assert loaded.flags.writeable and loaded.flags.aligned
    assert np.array_equal(loaded, array)


def test_non_string_key_is_a_programming_error() -> None:
    store = open_store()
    with pytest.raises(TypeError, match="str"):
        store.set(1, "x", meta())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="str"):
        store.get(1)  # type: ignore[arg-type]


# -- metadata, listing, clearing ---------------------------------------------------


def test_meta_entries_clear_and_volume(isolated_cache: Path) -> None:
    store = open_store()
    empty = store.volume()
    store.set("a1", 1, meta("nb.a"))
    store.set("a2", FILE_ARRAY, meta("nb.a"))
    store.set("b1", 2, meta("nb.b"))
    assert store.volume() > empty + FILE_ARRAY.nbytes
    a2 = store.meta("a2")
    assert a2 is not None and a2.name == "nb.a" and a2.size > FILE_ARRAY.nbytes
    assert a2.manifest == {"x": ["00ff", "3"]}
    assert store.meta("nope") is None
    assert [key for key, _ in store.entries("nb.a")] == ["a1", "a2"]
    assert {key for key, _ in store.entries()} == {"a1", "a2", "b1"}

    assert store.clear("nb.a") == 2
    assert store.get("a1") is MISSING and store.get("a2") is MISSING, "cleared entry served"
    assert not list(isolated_cache.glob("*/*/*.val")), "value file left behind"
    assert store.get("b1") == 2
    assert store.clear() == 1
    assert store.get("b1") is MISSING and store.entries() == []


def test_evicted_entries_vanish_with_their_metadata(isolated_cache: Path) -> None:
    store = open_store()
    store.size_limit = 1_000_000
    for index in range(30):
        store.set(f"k{index:02}", np.full(20_000, index, dtype=np.float64), meta())
    fresh = reopen(isolated_cache)
    kept = {key for key, _ in fresh.entries()}
    assert "k29" in kept and "k00" not in kept, "least recently stored should go first"
    with no_warnings():
        assert fresh.get("k00") is MISSING
        assert fresh.meta("k00") is None
    assert fresh.volume() < 1_500_000
    assert len(list(isolated_cache.glob("*/*/*.val"))) == len(kept)


# -- tampering ----------------------------------------------------------------------


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_flipped_byte_in_sqlite_value_is_a_warned_miss_and_deleted(isolated_cache: Path) -> None:
    open_store().set(KEY, {"a": 1}, meta())
    with database(isolated_cache) as db:
        (value,) = db.execute("SELECT value FROM Cache WHERE key = ?", (KEY,)).fetchone()
        tampered = bytearray(value)
        tampered[-1] ^= 0x01
        db.execute("UPDATE Cache SET value = ? WHERE key = ?", (bytes(tampered), KEY))
    store = reopen(isolated_cache)
    record = expect_fault(store)
    assert "authentication failed" in str(record[0].message)
    assert store.meta(KEY) is None, "bad entry was not deleted"
    with no_warnings():
        assert store.get(KEY) is MISSING


@pytest.mark.parametrize(
    ("offset", "reason"),
    [(0, "not a funcache_ipy envelope"), (60, "authentication"), (100, "authentication")]
    + [(-1, "checksum mismatch"), (-(2**20), "checksum mismatch")],
    ids=["magic", "tag", "pickle", "last buffer byte", "mid buffer"],
)
def test_flipped_byte_in_value_file_is_a_warned_miss(
    offset: int, reason: str, isolated_cache: Path
) -> None:
    open_store().set(KEY, BIG_ARRAY, meta())
    path = value_file(isolated_cache, KEY)
    flip(path, offset)
    record = expect_fault(reopen(isolated_cache))
    assert reason in str(record[0].message)
    assert not path.exists(), "bad value file was not deleted"


@pytest.mark.parametrize("damage", ["truncate", "extend", "delete", "empty"])
def test_damaged_value_file_is_a_warned_miss(damage: str, isolated_cache: Path) -> None:
    open_store().set(KEY, FILE_ARRAY, meta())
    path = value_file(isolated_cache, KEY)
    data = path.read_bytes()
    if damage == "delete":
        path.unlink()
    else:
        path.write_bytes({"truncate": data[:-100], "extend": data + b"\0", "empty": b""}[damage])
    expect_fault(reopen(isolated_cache))
    assert reopen(isolated_cache).meta(KEY) is None


class Exploit:
    """Unpickling this creates ``marker``: proof that a foreign pickle was executed."""

    def __init__(self, marker: Path, padding: int) -> None:
        self.marker = marker
        self.padding = b"x" * padding

    def __reduce__(self) -> tuple[Callable[..., object], tuple[object, ...]]:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("padding", [0, 100_000], ids=["sqlite", "file"])
def test_diskcache_native_pickle_is_never_unpickled(
    padding: int, isolated_cache: Path, tmp_path: Path
) -> None:
    open_store().set(KEY, "honest", meta())
    marker = tmp_path / "pwned"
    with contextlib.closing(diskcache.Cache(str(isolated_cache))) as plain:
        plain.set(KEY, Exploit(marker, padding))
        plain.set(("tuple", "key"), Exploit(marker, 0))  # a pickled key, for iterkeys()
    store = reopen(isolated_cache)
    record = expect_fault(store, name="<unknown>")
    assert "pickle" in str(record[0].message)
    assert store.entries() == []
    assert store.clear() == 1, "the pickled-key row should be cleared"
    assert not marker.exists(), "a diskcache pickle was executed"


def test_forged_value_file_name_never_reads_or_deletes_outside_the_cache(
    isolated_cache: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    store = open_store()
    store.set(KEY, FILE_ARRAY, meta())
    store.set("other", FILE_ARRAY, meta())
    with database(isolated_cache) as db:
        db.execute("UPDATE Cache SET filename = ?", (str(victim),))
    fresh = reopen(isolated_cache)
    record = expect_fault(fresh)
    assert "not made by diskcache" in str(record[0].message)
    fresh.clear()
    assert victim.read_text() == "precious", "a forged file name deleted a file"


def test_envelope_moved_to_another_key_is_refused(isolated_cache: Path) -> None:
    store = open_store()
    store.set("good", "right answer", meta())
    store.set(KEY, "wrong answer", meta())
    with database(isolated_cache) as db:
        (value,) = db.execute("SELECT value FROM Cache WHERE key = 'good'").fetchone()
        db.execute("UPDATE Cache SET value = ? WHERE key = ?", (value, KEY))
    expect_fault(reopen(isolated_cache))


def test_entry_sealed_under_another_secret_key_is_a_miss(
    isolated_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_store().set(KEY, [1, 2, 3], meta())
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "other-user"))
    record = expect_fault(reopen(isolated_cache))
    assert "authentication failed" in str(record[0].message)


def test_faults_warn_once_per_key(isolated_cache: Path) -> None:
    store = reopen(isolated_cache)
    for attempt in range(2):
        open_store().set(KEY, FILE_ARRAY, meta())
        value_file(isolated_cache, KEY).write_bytes(b"garbage")
        if attempt == 0:
            expect_fault(store)
        else:
            with no_warnings():
                assert store.get(KEY) is MISSING


def test_forged_metadata_is_ignored(isolated_cache: Path) -> None:
    store = open_store()
    store.set(KEY, 1, meta())
    with database(isolated_cache) as db:
        db.execute("UPDATE Cache SET tag = ?", ('{"name": 1, "__class__": "x"}',))
    assert store.meta(KEY) is None
    assert store.entries() == []
    assert store.get(KEY) == 1


# -- values that cannot be stored, writes that fail -----------------------------------


def make_generator() -> object:
    yield 1


def make_local_instance() -> object:
    class Local:
        pass

    return Local()


UNPICKLABLE = {
    "lambda": (lambda: lambda x: x, "function"),
    "lock": (threading.Lock, "_thread.lock"),
    "generator": (make_generator, "generator"),
    "local class": (make_local_instance, "make_local_instance.<locals>.Local"),
}


@pytest.mark.parametrize(("make", "type_name"), UNPICKLABLE.values(), ids=UNPICKLABLE.keys())
def test_unpicklable_result_is_not_stored_and_warns_naming_its_type(
    make: Callable[[], object], type_name: str
) -> None:
    store = open_store()
    with pytest.warns(FuncacheWarning, match="cannot store result of type") as record:
        assert store.set(KEY, make(), meta()) is False
    message = str(record[0].message)
    assert type_name in message and "returned but not cached" in message, message
    assert record[0].filename == __file__, "warning should point at the caller"
    assert store.get(KEY) is MISSING and store.entries() == []


def test_unwritable_value_directories_make_set_fail_with_a_warning(isolated_cache: Path) -> None:
    store = open_store()
    for index in range(256):  # every first-level value directory is a file instead
        (isolated_cache / f"{index:02x}").touch()
    with pytest.warns(FuncacheWarning, match="cannot write cache entry 'nb.f'") as record:
        assert store.set(KEY, FILE_ARRAY, meta()) is False
    assert str(isolated_cache) in str(record[0].message)
    assert store.get(KEY) is MISSING
    assert store.set("small", 1, meta()) is True, "SQLite entries should still work"


@pytest.mark.skipif(sys.platform == "win32", reason="needs RLIMIT_FSIZE")
def test_disk_full_makes_set_fail_with_a_warning() -> None:
    """A file-size limit fails writes even as root, like a full disk (EFBIG)."""
    run_python(
        """
        import resource, signal, time, warnings
        import numpy as np
        from funcache_ipy.store import MISSING, EntryMeta, FuncacheWarning, open_store

        store = open_store()
        meta = EntryMeta("nb.f", time.time(), 1.0, 0, {})
        assert store.set("before", 1, meta)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
        for key, value in [("file", np.zeros(2**18)), ("sqlite", b"x" * 30_000)]:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                assert store.set(key, value, meta) is False, key
            assert [w.category for w in caught] == [FuncacheWarning], caught
            assert "cannot write cache entry 'nb.f'" in str(caught[0].message)
            assert store.get(key) is MISSING
        assert store.get("before") == 1
        """
    )


# -- directory, secret key, resolution -------------------------------------------------


def test_directory_is_private_and_git_ignored(isolated_cache: Path) -> None:
    store = open_store()
    assert store.directory == isolated_cache
    assert stat.S_IMODE(isolated_cache.stat().st_mode) == 0o700
    assert (isolated_cache / ".gitignore").read_text() == "*\n"
    key = secret_path()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert len(key.read_bytes()) == 32


def test_directory_deleted_under_the_store_is_recreated(isolated_cache: Path) -> None:
    store = open_store()
    store.set("a", 1, meta())
    for path in sorted(isolated_cache.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    isolated_cache.rmdir()
    assert store.set(KEY, FILE_ARRAY, meta()) is True
    assert (isolated_cache / ".gitignore").exists()
    assert np.array_equal(reopen(isolated_cache).get(KEY), FILE_ARRAY)


def test_secret_key_readable_by_others_warns() -> None:
    open_store()
    secret_path().chmod(0o644)
    with pytest.warns(FuncacheWarning, match="chmod 600"):
        Store("elsewhere")


def test_secret_key_of_wrong_length_is_a_clear_error() -> None:
    path = secret_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"short")
    with pytest.raises(OSError, match="holds 5 bytes.*delete it"):
        open_store()


def test_cache_dir_read_from_environment_at_call_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = open_store()
    monkeypatch.setenv("FUNCACHE_IPY_DIR", str(tmp_path / "second"))
    second = open_store()
    assert second.directory == tmp_path / "second" and second is not first
    assert open_store() is second, "one store per directory"
    monkeypatch.setenv("FUNCACHE_IPY_DIR", "relative")
    assert open_store().directory == Path.cwd() / "relative"
    monkeypatch.delenv("FUNCACHE_IPY_DIR")
    assert open_store().directory == Path.cwd() / ".funcache"
    assert open_store(tmp_path / "second") is second


def test_uncreatable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.touch()
    with pytest.raises(OSError, match=re.escape(str(blocker / "cache")) + ".*FUNCACHE_IPY_DIR"):
        open_store(blocker / "cache")


def test_unopenable_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "broken" / "cache.db").mkdir(parents=True)
    with pytest.raises(OSError, match="cannot open the funcache_ipy cache directory"):
        open_store(tmp_path / "broken")


# -- other processes --------------------------------------------------------------------


def test_another_process_with_another_hash_seed_reads_the_value() -> None:
    value = {"words": {"alpha", "beta", "gamma"}, "n": [1, 2.0, None], "t": ("x", b"y")}
    open_store().set(KEY, value, meta())
    result = run_python(
        f"""
        from funcache_ipy.store import open_store
        assert open_store().get({KEY!r}) == {value!r}
        print("ok")
        """,
        PYTHONHASHSEED="12345",
    )
    assert result.stdout.strip() == "ok"


def test_processes_starting_together_share_one_secret_key(tmp_path: Path) -> None:
    start = time.time() + 1.0
    code = f"""
        import time
        from funcache_ipy.envelope import CorruptEnvelope, Sealer, load_secret, secret_path
        time.sleep(max(0.0, {start} - time.time()))
        print(load_secret(secret_path()).hex())
        """
    processes = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE)
        for _ in range(6)
    ]
    keys = set()
    for process in processes:
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0
        keys.add(out.strip())
    assert keys == {load_secret(secret_path()).hex().encode()}
    assert [p.name for p in secret_path().parent.iterdir()] == ["secret.key"]


def test_two_processes_writing_concurrently_do_not_corrupt(isolated_cache: Path) -> None:
    code = """
        import sys, time
        import numpy as np
        from funcache_ipy.store import EntryMeta, open_store

        me = int(sys.argv[1])
        store = open_store()
        sizes = [10, 20_000, 300_000]
        for j in range(30):
            shared = np.full(sizes[j % 3], j, dtype=np.float64)
            own = np.full(sizes[(j + me) % 3], me * 1000 + j, dtype=np.float64)
            meta = EntryMeta("nb.w", time.time(), 0.0, 0, {})
            assert store.set(f"shared-{j}", shared, meta)
            assert store.set(f"own-{me}-{j}", own, meta)
            assert np.array_equal(store.get(f"own-{me}-{j}"), own)
        """
    processes = [
        subprocess.Popen([sys.executable, "-W", "error", "-c", textwrap.dedent(code), str(me)])
        for me in (1, 2)
    ]
    assert [process.wait(timeout=120) for process in processes] == [0, 0]
    store = reopen(isolated_cache)
    sizes = [10, 20_000, 300_000]
    with no_warnings():
        for j in range(30):
            assert np.array_equal(store.get(f"shared-{j}"), np.full(sizes[j % 3], j, float))
            for me in (1, 2):
                expected = np.full(sizes[(j + me) % 3], me * 1000 + j, dtype=np.float64)
                assert np.array_equal(store.get(f"own-{me}-{j}"), expected)
    assert len(store.entries("nb.w")) == 90


# -- format stability ----------------------------------------------------------------

GOLDEN_SECRET = bytes(range(32))  # a test key, not a secret: it only signs the fixture


def test_envelope_written_by_format_1_still_loads() -> None:
    """A format change must bump the envelope version (old entries then become misses)."""
    data = bytearray((Path(__file__).parent / "data" / "envelope_v1.bin").read_bytes())
    stream, buffers = Sealer(GOLDEN_SECRET).unseal(data, "golden-key")
    value = pickle.loads(stream, buffers=buffers)
    assert value["rows"] == [1, 2.5, None, "x"]
    assert np.array_equal(value["array"], np.arange(6, dtype=np.int32).reshape(2, 3))
    assert np.array_equal(value["stamps"], np.arange(3).astype("M8[s]"))
    with pytest.raises(CorruptEnvelope, match="authentication failed"):
        Sealer(GOLDEN_SECRET).unseal(data, "another-key")


def _install_old_cache(name: str, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Copy ``data/<name>_cache`` into place under ``GOLDEN_SECRET``; import its module."""
    import shutil

    data = Path(__file__).parent / "data"
    shutil.copytree(data / f"{name}_cache", cache)
    key_path = secret_path()
    key_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.write_bytes(GOLDEN_SECRET)
    key_path.chmod(0o600)
    monkeypatch.syspath_prepend(str(data))
    monkeypatch.delitem(sys.modules, f"{name}_fixture_module", raising=False)


def test_entry_stored_under_key_schema_1_is_recomputed_not_served(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Schema 2 changed what entries hold and how keys are made (keys.SCHEMA_VERSION).

    ``data/schema1_cache`` was written by the last schema-1 commit (308f053) calling
    ``schema1_fixture_module.double(21)`` under ``GOLDEN_SECRET``: the same call now
    finds nothing to serve, runs, and stores beside the old entry.
    """
    _install_old_cache("schema1", isolated_cache, monkeypatch)
    from schema1_fixture_module import double  # type: ignore[import-not-found]

    assert len(open_store().entries("schema1_fixture_module.double")) == 1, "the old entry"
    with warnings.catch_warnings():
        warnings.simplefilter("error", FuncacheWarning)  # not served, and not corrupt either
        assert double(21) == 42
    hits, misses, entries, _ = double.cache_info()
    assert (hits, misses, entries) == (0, 1, 2), "a schema-1 entry must not be served"


def test_entry_stored_under_key_schema_2_is_recomputed_not_served(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Schema 3 changed how lists, tuples, dicts and sets of scalars are hashed.

    ``data/schema2_cache`` was written by the last schema-2 commit (0bbc272) calling
    ``schema2_fixture_module.total(list(range(100)))`` under ``GOLDEN_SECRET``: the same
    call now finds nothing to serve, runs, and stores beside the old entry.
    """
    _install_old_cache("schema2", isolated_cache, monkeypatch)
    from schema2_fixture_module import total  # type: ignore[import-not-found]

    assert len(open_store().entries("schema2_fixture_module.total")) == 1, "the old entry"
    with warnings.catch_warnings():
        warnings.simplefilter("error", FuncacheWarning)  # not served, and not corrupt either
        assert total(list(range(100))) == 4950
    hits, misses, entries, _ = total.cache_info()
    assert (hits, misses, entries) == (0, 1, 2), "a schema-2 entry must not be served"
