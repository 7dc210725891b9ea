"""Files a cached function reads are inputs: a changed file recomputes, the same bytes hit.

Each body prints when it runs; the printed lines are the witness of a hit or a miss, and
the returned value is checked for staleness. Files live in the test's own cwd.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import funcache_ipy
from funcache_ipy.store import FuncacheWarning
from tests.conftest import run_cell


def c_read(path: str | os.PathLike[str]) -> bytes:
    """Read a file through libc's open/read: Python's ``open`` audit event never fires."""
    libc = ctypes.CDLL(None, use_errno=True)  # NB. not a global: cached bodies reach it
    descriptor = libc.open(os.fsencode(path), os.O_RDONLY)
    assert descriptor >= 0, f"libc open({path}) failed: errno {ctypes.get_errno()}"
    buffer = ctypes.create_string_buffer(1 << 16)
    count = libc.read(descriptor, buffer, len(buffer))
    libc.close(descriptor)
    return buffer.raw[:count]


def runs(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Lines printed by function bodies since the last call."""
    return capsys.readouterr().out.split()


def test_file_read_with_open_is_an_input(capsys) -> None:
    Path("data.csv").write_text("x\n1\n2\n")

    @funcache_ipy.cache
    def total(path):
        print("ran")
        with open(path) as f:
            return sum(int(line) for line in f.read().split()[1:])

    assert total("data.csv") == 3
    assert total("data.csv") == 3
    assert runs(capsys) == ["ran"], "an unchanged file must hit"

    Path("data.csv").write_text("x\n1\n2\n3\n")
    assert total("data.csv") == 6, "expected 6 (stale cache)"
    assert runs(capsys) == ["ran"]
    explanation = str(total.explain_last())
    assert "file `data.csv` changed: 6 B → 8 B" in explanation, explanation

    Path("data.csv").write_text("x\n1\n2\n3\n")  # the same bytes again: a new mtime
    os.utime("data.csv")  # touched
    assert total("data.csv") == 6
    assert runs(capsys) == [], "touching or rewriting the same bytes must still hit"

    Path("data.csv").write_text("x\n1\n2\n")  # reverted
    assert total("data.csv") == 3, "expected 3 (stale cache)"
    assert runs(capsys) == [], "reverting the file must hit its earlier entry"
    assert str(total.explain("data.csv")).endswith(": hit")


def test_read_csv_with_the_path_in_a_global(shell, capsys) -> None:
    pd.DataFrame({"a": range(100)}).to_csv("sales.csv", index=False)
    run_cell(
        shell,
        """
import funcache_ipy, pandas as pd
PATH = "sales.csv"

@funcache_ipy.cache
def rows():
    print("ran")
    return len(pd.read_csv(PATH))
""",
    )
    assert rows(shell) == 100
    assert rows(shell) == 100
    assert runs(capsys) == ["ran"]
    pd.DataFrame({"a": range(10)}).to_csv("sales.csv", index=False)
    assert rows(shell) == 10, "expected 10 rows (stale cache)"
    assert runs(capsys) == ["ran"]


def rows(shell) -> int:
    run_cell(shell, "n = rows()")
    return int(shell.user_ns["n"])


def test_np_load_and_same_size_content_change(capsys) -> None:
    np.save("weights.npy", np.arange(5.0))

    @funcache_ipy.cache
    def weight_sum():
        print("ran")
        return float(np.load("weights.npy").sum())

    assert weight_sum() == 10.0
    stat = os.stat("weights.npy")
    np.save("weights.npy", np.arange(5.0) * 2)  # same size
    os.utime("weights.npy", ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the old mtime
    assert weight_sum() == 20.0, "expected 20.0 (stale cache: size and mtime were preserved)"
    assert weight_sum() == 20.0
    assert runs(capsys) == ["ran", "ran"]


def test_path_argument_counts_by_content_even_for_readers_open_misses(capsys) -> None:
    Path("input.bin").write_bytes(b"abc")

    @funcache_ipy.cache
    def size(path: Path) -> int:
        print("ran")
        return len(c_read(path))

    assert size(Path("input.bin")) == 3
    assert size(Path("input.bin")) == 3
    Path("input.bin").write_bytes(b"abcdef")
    assert size(Path("input.bin")) == 6, "expected 6 (stale cache)"
    assert runs(capsys) == ["ran", "ran"]
    assert "file `input.bin` changed: 3 B → 6 B" in str(size.explain_last())


GLOBAL_INPUT = Path("global_input.bin")  # relative: resolved in the cwd of each call


def test_path_global_counts_by_content_even_for_readers_open_misses(capsys) -> None:
    GLOBAL_INPUT.write_bytes(b"abc")

    def read() -> bytes:
        return c_read(GLOBAL_INPUT)

    @funcache_ipy.cache
    def size() -> int:
        print("ran")
        return len(read())  # reached through a helper

    assert size() == 3
    assert size() == 3
    GLOBAL_INPUT.write_bytes(b"abcdef")
    assert size() == 6, "expected 6 (stale cache)"
    assert runs(capsys) == ["ran", "ran"]


def test_declared_files_for_readers_that_bypass_open(capsys) -> None:
    Path("data").mkdir()
    Path("data/a.parquet").write_bytes(b"1")
    Path("data/b.parquet").write_bytes(b"22")

    def load():
        print("ran")
        return sum(len(c_read(path)) for path in sorted(Path("data").glob("*.parquet")))

    declared = funcache_ipy.cache(files=["data/*.parquet"])(load)
    undeclared = funcache_ipy.cache(version="undeclared")(load)
    assert declared() == 3
    assert undeclared() == 3
    assert runs(capsys) == ["ran", "ran"]

    Path("data/b.parquet").write_bytes(b"333")
    assert undeclared() == 3, "the C reader should bypass the audit hook (test is moot)"
    assert declared() == 4, "expected 4 (stale cache)"
    Path("data/c.parquet").write_bytes(b"4444")  # a new match counts too
    assert declared() == 8, "expected 8 (stale cache)"
    assert declared() == 8
    assert runs(capsys) == ["ran", "ran"]


def test_declared_directory_counts_by_its_files_recursively(capsys) -> None:
    Path("tables/2024").mkdir(parents=True)
    Path("tables/2024/jan.bin").write_bytes(b"1")

    @funcache_ipy.cache(files="tables")
    def count():
        print("ran")
        return sum(len(c_read(p)) for p in Path("tables").rglob("*.bin"))

    assert count() == 1
    Path("tables/2024/jan.bin").write_bytes(b"12")
    assert count() == 2, "expected 2 (stale cache)"
    assert count() == 2
    assert runs(capsys) == ["ran", "ran"]


def test_a_log_the_function_appends_to_is_an_output(capsys) -> None:
    Path("run.log").write_text("")

    @funcache_ipy.cache
    def logged(x):
        print("ran")
        with open("run.log", "a") as log:
            log.write(f"logged({x})\n")
        with open("run.log") as log:  # reading it back does not make it an input
            log.read()
        return x * 2

    assert logged(2) == 4
    assert logged(2) == 4
    assert logged(2) == 4
    assert runs(capsys) == ["ran"], "a file the function writes must not make it miss"


def test_file_changed_during_the_run_is_not_stored(capsys) -> None:
    Path("data.txt").write_text("old")

    @funcache_ipy.cache
    def read_then_other_process_writes():
        print("ran")
        text = Path("data.txt").read_text()
        # Another process rewrites the file while the function is running.
        code = "import pathlib; pathlib.Path('data.txt').write_text('newer')"
        subprocess.run([sys.executable, "-c", code], check=True)
        return text

    with pytest.warns(FuncacheWarning, match=r"file data.txt changed while it ran"):
        assert read_then_other_process_writes() == "old"
    with pytest.warns(FuncacheWarning, match=r"returned but not cached"):
        assert read_then_other_process_writes() == "newer", "a mixed result was stored"
    assert runs(capsys) == ["ran", "ran"]


def test_nested_cached_call_that_hits_still_counts_its_files(capsys) -> None:
    Path("data.txt").write_text("one")

    @funcache_ipy.cache
    def inner():
        print("inner")
        return Path("data.txt").read_text()

    @funcache_ipy.cache
    def outer():
        print("outer")
        return inner().upper()

    assert inner() == "one"
    assert outer() == "ONE"  # inner hits: it opens no file, yet outer depends on it
    assert runs(capsys) == ["inner", "outer"]
    Path("data.txt").write_text("two")
    assert outer() == "TWO", "expected TWO (stale cache)"
    assert runs(capsys) == ["outer", "inner"]


def test_missing_file_that_appears_later_recomputes(capsys) -> None:
    @funcache_ipy.cache
    def settings():
        print("ran")
        try:
            return Path("settings.txt").read_text()
        except FileNotFoundError:
            return "defaults"

    assert settings() == "defaults"
    assert settings() == "defaults"
    Path("settings.txt").write_text("custom")
    assert settings() == "custom", "expected custom (stale cache)"
    assert runs(capsys) == ["ran", "ran"]


def test_files_of_the_cache_and_libraries_are_not_inputs(capsys) -> None:
    @funcache_ipy.cache
    def uses_library():
        print("ran")
        import json.tool  # noqa: F401 - reads stdlib source on first import

        return 1

    uses_library()
    assert uses_library() == 1
    assert runs(capsys) == ["ran"]
    manifest = [m.manifest for _, m in funcache_ipy.store.open_store().entries()]
    assert not any(label.startswith("file ") for m in manifest for label in m), manifest
