"""Files as inputs in a real Jupyter kernel, across restarts.

A CSV read by a cached function is rewritten between kernel restarts, the way a data
file changes while a notebook is closed: the next session must recompute, and a revert
must hit the earlier entry. The body prints when it runs.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest

from funcache_ipy.demo import KernelSession
from tests.kernel_helpers import execute
from tests.test_files import c_read

pytestmark = pytest.mark.kernel

ROWS = """
import funcache_ipy, pandas as pd
from pathlib import Path
PATH = "sales.csv"

@funcache_ipy.cache
def rows():
    print("computing rows")
    return len(pd.read_csv(PATH))

@funcache_ipy.cache
def first_line(path):
    print("computing first_line")
    return path.read_text().splitlines()[1]
"""


def write_csv(count: int) -> None:
    Path("sales.csv").write_text("a\n" + "".join(f"{i}\n" for i in range(count)))


def call(kernel: KernelSession, expression: str) -> tuple[str, list[str]]:
    run = execute(kernel, expression)
    return run.stdout, run.mime("text/plain")


def test_changed_csv_between_restarts_recomputes_and_revert_hits(kernel: KernelSession) -> None:
    write_csv(100)
    execute(kernel, ROWS)
    assert call(kernel, "rows()") == ("computing rows\n", ["100"])
    assert call(kernel, "first_line(Path(PATH))") == ("computing first_line\n", ["'0'"])
    Path("sales.csv").write_text("a\n5\n6\n")  # changed within the session
    assert call(kernel, "rows()") == ("computing rows\n", ["2"]), "stale within the session"
    assert call(kernel, "first_line(Path(PATH))") == ("computing first_line\n", ["'5'"])
    write_csv(100)  # reverted within the session: the first entries again
    assert call(kernel, "rows()") == ("", ["100"]), "reverted: expected a hit"

    kernel.restart()
    execute(kernel, ROWS)
    assert call(kernel, "rows()") == ("", ["100"]), "unchanged file: expected a hit"

    Path("sales.csv").write_text("a\n7\n")
    kernel.restart()
    execute(kernel, ROWS)
    stdout, shown = call(kernel, "rows()")
    assert shown == ["1"], f"expected 1 row, got {shown} (stale cache)"
    assert stdout == "computing rows\n"
    stdout, shown = call(kernel, "first_line(Path(PATH))")
    assert shown == ["'7'"], f"expected '7', got {shown} (stale cache)"
    explained = execute(kernel, "print(rows.explain_last())").stdout
    assert "file `sales.csv` changed: " in explained, explained

    write_csv(100)  # reverted
    kernel.restart()
    execute(kernel, ROWS)
    assert call(kernel, "rows()") == ("", ["100"]), "reverted file: expected the old entry"


ARRAYS = f"""
import ctypes, os
import funcache_ipy, numpy as np
{inspect.getsource(c_read)}

@funcache_ipy.cache
def total():
    print("computing total")
    return int(np.load("values.npy").sum())

@funcache_ipy.cache
def header():
    print("computing header")
    with open("notes.txt") as f:
        return f.readline().strip()

@funcache_ipy.cache(files=["blobs/*.bin"])
def blob_bytes():
    print("computing blob_bytes")
    return sum(len(c_read(f"blobs/{{name}}")) for name in sorted(os.listdir("blobs")))
"""
CALLS = ("total()", "header()", "blob_bytes()")


def calls(kernel: KernelSession) -> list[tuple[bool, str]]:
    """Per call: whether its body ran, and the value it shows."""
    found = []
    for expression in CALLS:
        stdout, shown = call(kernel, expression)
        found.append((stdout.startswith("computing"), shown[0]))
    return found


def test_np_load_open_and_declared_files_within_a_session_and_across_restarts(
    kernel: KernelSession,
) -> None:
    import numpy as np

    np.save("values.npy", np.arange(10))
    Path("notes.txt").write_text("first\nrest\n")
    Path("blobs").mkdir()
    Path("blobs/a.bin").write_bytes(b"abc")
    execute(kernel, ARRAYS)
    assert calls(kernel) == [(True, "45"), (True, "'first'"), (True, "3")]
    assert calls(kernel) == [(False, "45"), (False, "'first'"), (False, "3")]

    np.save("values.npy", np.arange(5))  # changed within the session
    Path("notes.txt").write_text("second\n")
    Path("blobs/a.bin").write_bytes(b"abcdef")  # read by C code: only files= sees it
    assert calls(kernel) == [(True, "10"), (True, "'second'"), (True, "6")], "stale cache"

    np.save("values.npy", np.arange(5))  # the same bytes again, and touched
    os.utime("notes.txt")
    kernel.restart()
    execute(kernel, ARRAYS)
    assert calls(kernel) == [(False, "10"), (False, "'second'"), (False, "6")]

    np.save("values.npy", np.arange(10))  # reverted while the kernel was down
    Path("notes.txt").write_text("first\nrest\n")
    Path("blobs/a.bin").write_bytes(b"abc")
    kernel.restart()
    execute(kernel, ARRAYS)
    assert calls(kernel) == [(False, "45"), (False, "'first'"), (False, "3")], "revert must hit"
