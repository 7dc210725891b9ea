"""What a notebook user reads from funcache_ipy, in a real kernel.

Messages are notices, not warning blocks: one line naming the culprit, with no temporary
file path, no echo of the cell's source, no ``FuncacheWarning:`` prefix. Errors show the
user's frames only (funcache_ipy's are hidden) and name the right cell. After a cell, a
cached function that hit says what it saved, one that recomputed says why.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from funcache_ipy.demo import KernelSession
from tests.kernel_helpers import execute

pytestmark = pytest.mark.kernel

SETUP = """
%load_ext funcache_ipy
import funcache_ipy, threading, time
lock = threading.Lock()

def scale():
    return 2

@funcache_ipy.cache
def slow(x):
    time.sleep(0.2)
    return x * scale()
"""


@pytest.fixture
def kernel(kernel: KernelSession) -> KernelSession:
    """The shared kernel, with SETUP run in it."""
    execute(kernel, SETUP)
    return kernel


def assert_plain(text: str) -> None:
    for noise in ("ipykernel_", "run_cell_magic", "FuncacheWarning", "funcache: funcache:"):
        assert noise not in text, f"{noise!r} in {text!r}"


def test_a_cell_not_cached_says_so_in_one_plain_line(kernel: KernelSession) -> None:
    run = execute(
        kernel,
        "%%funcache --name scratch\ny = 2\nlog = open('f.txt', 'w')\nrows = iter(range(3))\n",
    )
    assert_plain(run.stdout + run.stderr)
    assert run.stderr == "", run.stderr
    assert run.stdout.startswith(
        "funcache: cell scratch was not cached: `log` (file) cannot be pickled; close"
    ), run.stdout
    assert run.stdout.count("\n") == 1, run.stdout
    run = execute(kernel, "%%funcache\nz = lock\n")
    assert_plain(run.stdout + run.stderr)
    assert "input `lock` (_thread lock) cannot be hashed" in run.stdout, run.stdout


def test_errors_show_the_users_frames_and_the_right_cell(kernel: KernelSession) -> None:
    run = kernel.run("slow(lock)")
    assert run.error is not None and "UnhashableError: cannot hash argument 'x'" in run.error
    assert "funcache_ipy/" not in run.error, run.error
    run = kernel.run("%%funcache\nx = 1\n1 / 0\n")
    assert run.error is not None and "ZeroDivisionError" in run.error
    numbers = re.findall(r"Cell In\[(\d+)\], line (\d)", run.error)
    assert len(numbers) == 2 and numbers[0][0] == numbers[1][0], f"one cell number: {numbers}"
    run = kernel.run("%%funcache\nx = 1\ny = (\n")
    assert run.error is not None and "'(' was never closed" in run.error, run.error
    for frame in ("funcache_ipy/", "run_cell_magic", "interactiveshell.py"):
        assert frame not in run.error, f"a syntax error shows {frame!r}: {run.error}"
    assert re.search(r"Cell In\[\d+\], line 2\n\s+y = \(", run.error), run.error


def test_functions_that_hit_or_recompute_say_so_after_the_cell(kernel: KernelSession) -> None:
    assert execute(kernel, "a = slow(1)").stdout == "", "a first call is no news"
    run = execute(kernel, "a, b = slow(1), slow(1)")
    assert re.fullmatch(r"funcache: slow hit x2 \(saved (4\d\d ms|[\d.]+ s)\)\n", run.stdout), (
        run.stdout
    )
    execute(kernel, "def scale():\n    return 3\n")
    run = execute(kernel, "a = slow(1)")
    assert run.stdout == "funcache: slow recomputed: function `scale` changed\n", run.stdout

    kernel.restart()
    execute(kernel, SETUP.replace("return 2", "return 3"))
    run = execute(kernel, "a = slow(1)")
    assert re.fullmatch(r"funcache: slow hit \(saved (2\d\d ms|[\d.]+ s)\)\n", run.stdout), (
        run.stdout
    )
    execute(kernel, "%config FuncacheMagics.quiet = True")
    assert execute(kernel, "a = slow(1)").stdout == "", "quiet turns it off"


SLOW_MODULE = """
import time


def rebuild(size):
    time.sleep(1.5)  # an unpickling that takes a while, as a big model's does
    return Model(size)


class Model:
    def __init__(self, size):
        self.size = size

    def __reduce__(self):
        return rebuild, (self.size,)
"""


def test_a_slow_restore_says_what_it_is_doing_while_it_works(kernel: KernelSession) -> None:
    Path("slowmodel.py").write_text(SLOW_MODULE)
    cell = "%%funcache --name fit\nimport slowmodel\nmodel = slowmodel.Model(3)\n"
    execute(kernel, "import sys; sys.path.insert(0, '.')")
    execute(kernel, cell)
    kernel.restart()
    execute(kernel, "%load_ext funcache_ipy\nimport sys; sys.path.insert(0, '.')")
    run = execute(kernel, cell)
    shown = [c for kind, c in run.messages if kind == "display_data"]
    assert len(shown) == 1, run.messages
    assert shown[0]["data"]["text/plain"] == "funcache: restoring model ...", shown  # tiny
    display_id = shown[0]["transient"]["display_id"]
    cleared = [c for kind, c in run.messages if kind == "update_display_data"]
    assert [c["transient"]["display_id"] for c in cleared] == [display_id]
    assert cleared[0]["data"]["text/plain"] == "", "the line goes once the restore is done"
    assert run.stdout.startswith("funcache: restored model (re-ran 1 import/def) from cache in 1.")
