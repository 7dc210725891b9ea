"""``%%funcache`` cells in real Jupyter kernels: files they read, across restarts; a
kernel and another process running one slow cell at once.

Data files are rewritten between kernel restarts, the way they change while a notebook is
closed: the next session must run the cell again, and a revert must hit the earlier run.
Each cell body appends its name to ``runs.log`` when it runs: the witness of a run that
no replay can imitate (printed lines are replayed on a hit).
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from funcache_ipy.demo import HIT_NOTICE, KernelSession
from tests.kernel_helpers import execute, value
from tests.test_files import c_read

pytestmark = pytest.mark.kernel


# NB. The C reader's source, not an import: the kernel may not see the tests package.
SETUP = f"""
%load_ext funcache_ipy
import ctypes, os
import pandas as pd
{inspect.getsource(c_read)}
PATH = "sales.csv"

def ran(name):
    with open("runs.log", "a") as log:
        log.write(name + "\\n")
"""
ROWS = """%%funcache --name rows
ran("rows")
rows = len(pd.read_csv(PATH))
rows
"""
FIRST = """%%funcache --name first
ran("first")
with open(PATH) as f:
    first = f.read().splitlines()[1]
first
"""
SIZE = """%%funcache --name size --files "blobs/*.bin"
ran("size")
size = sum(len(c_read(f"blobs/{name}")) for name in sorted(os.listdir("blobs")))
size
"""


def write_csv(count: int) -> None:
    Path("sales.csv").write_text("a\n" + "".join(f"{i}\n" for i in range(count)))


def run_cells(kernel: KernelSession) -> dict[str, tuple[bool, str]]:
    """Per cell: whether its body ran, and the value it shows."""
    found = {}
    log = Path("runs.log")
    for name, cell in (("rows", ROWS), ("first", FIRST), ("size", SIZE)):
        log.write_text("")
        run = execute(kernel, cell)
        ran = log.read_text() == f"{name}\n"
        assert ran != run.stdout.startswith(HIT_NOTICE), f"{name}: {run.stdout!r}"
        found[name] = (ran, run.mime("text/plain")[0])
    return found


def restart(kernel: KernelSession) -> dict[str, tuple[bool, str]]:
    kernel.restart()
    execute(kernel, SETUP)
    return run_cells(kernel)


def test_files_cells_read_are_inputs_across_restarts(kernel: KernelSession) -> None:
    write_csv(100)
    Path("blobs").mkdir()
    Path("blobs/a.bin").write_bytes(b"abc")
    execute(kernel, SETUP)
    assert run_cells(kernel) == {
        "rows": (True, "100"),
        "first": (True, "'0'"),
        "size": (True, "3"),
    }
    assert restart(kernel) == {
        "rows": (False, "100"),
        "first": (False, "'0'"),
        "size": (False, "3"),
    }, "unchanged files: expected hits after a restart"

    write_csv(100)  # the same bytes, a new mtime
    os.utime("blobs/a.bin")  # touched
    assert restart(kernel) == {
        "rows": (False, "100"),
        "first": (False, "'0'"),
        "size": (False, "3"),
    }, "rewritten with the same bytes or touched: expected hits"

    Path("sales.csv").write_text("a\n7\n")
    Path("blobs/a.bin").write_bytes(b"abcdef")  # read by C code: only --files sees it
    assert restart(kernel) == {
        "rows": (True, "1"),
        "first": (True, "'7'"),
        "size": (True, "6"),
    }, "changed files: expected every cell to run again (stale cache)"
    explained = execute(kernel, "%funcache explain --last rows").stdout
    assert "file `sales.csv` changed: " in explained, explained

    write_csv(100)  # reverted
    Path("blobs/a.bin").write_bytes(b"abc")
    assert restart(kernel) == {
        "rows": (False, "100"),
        "first": (False, "'0'"),
        "size": (False, "3"),
    }, "reverted files: expected the earlier runs to hit"


WRITER = """%%funcache --name writer
ran("writer")
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
summary = pd.DataFrame({"n": range(200), "sq": [i * i for i in range(200)]})
summary.to_csv("out.csv", index=False)
fig, ax = plt.subplots()
ax.plot(summary["n"], summary["sq"])
fig.savefig("plot.png")
plt.close(fig)
"""


def test_files_a_cell_writes_are_put_back_by_a_hit_after_a_restart(
    kernel: KernelSession,
) -> None:
    execute(kernel, SETUP)
    execute(kernel, WRITER)
    written = {name: Path(name).read_bytes() for name in ("out.csv", "plot.png")}
    assert Path("runs.log").read_text() == "writer\n"
    Path("out.csv").unlink()
    Path("plot.png").write_bytes(b"not a png")

    kernel.restart()
    execute(kernel, SETUP)
    run = execute(kernel, WRITER)
    assert Path("runs.log").read_text() == "writer\n", "the cell must hit after the restart"
    assert "wrote back out.csv, plot.png" in run.stdout, run.stdout
    for name, data in written.items():
        assert Path(name).read_bytes() == data, f"{name} must be put back with the same bytes"
    assert value(kernel, "len(summary)") == "200"


SLOW_SETUP = """
%load_ext funcache_ipy
import os, time

def wait_for(path):
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
"""
# NB. The first run lasts until the kernel has started the same cell (and then 1.5 s,
# for it to reach the lease): without the lease, the kernel runs the body too.
SLOW = """%%funcache --name slow
with open("starts.txt", "a") as starts:
    starts.write(f"{os.getpid()}\\n")
wait_for("kernel-started")
time.sleep(1.5)
answer = 42
"""
# The other process: an IPython shell running the same cells, as a second kernel would.
SHELL = f"""
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
for cell in ({SLOW_SETUP!r}, {SLOW!r}):
    shell.run_cell(cell).raise_error()
"""


def test_a_kernel_and_another_process_running_one_slow_cell_run_it_once(
    kernel: KernelSession,
) -> None:
    execute(kernel, SLOW_SETUP)
    starts = Path("starts.txt")
    with subprocess.Popen([sys.executable, "-c", SHELL], stderr=subprocess.PIPE) as other:
        deadline = time.monotonic() + 60
        while not starts.exists() and time.monotonic() < deadline and other.poll() is None:
            time.sleep(0.05)
        assert starts.exists(), "the other process never started the cell"
        Path("kernel-started").touch()
        run = execute(kernel, SLOW)
        _, errors = other.communicate(timeout=120)
    assert other.returncode == 0, errors.decode()
    pids = starts.read_text().split()
    assert len(pids) == 1, f"two processes running one cell ran it {len(pids)} times, not once"
    assert f"waiting for process {pids[0]}" in run.stderr, run.stderr
    assert run.stdout.startswith(HIT_NOTICE), run.stdout
    assert value(kernel, "answer") == "42"
