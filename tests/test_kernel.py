"""funcache_ipy inside real Jupyter kernels, across restarts.

The unit tests drive the decorator and the magics in-process; these check the promise a
user actually relies on: after *Restart Kernel* the cache is still there (the function's
body or the cell does not run again), and an edit made the way notebooks are edited
(re-executing a ``def``, rebinding a global, editing a local module) is noticed. A print
inside each cached body is the witness of whether it ran.

Each test has its own kernel, working directory and environment (see ``kernel_helpers``):
starting an ipykernel takes about half a second, cheaper than any sharing scheme that
would have to prove the tests cannot see each other's state.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from funcache_ipy.demo import HIT_NOTICE, KernelSession
from tests.kernel_helpers import execute, value

pytestmark = pytest.mark.kernel


def restart(kernel: KernelSession, *cells: str) -> None:
    """Restart the kernel and re-run ``cells``, like *Restart & Run All* up to a point."""
    kernel.restart()
    for cell in cells:
        execute(kernel, cell)


SQUARE = """
import funcache_ipy

@funcache_ipy.cache
def square(x):
    print(f"computing square({x})")
    return x * x
"""


def test_decorator_hit_survives_restart(kernel: KernelSession) -> None:
    execute(kernel, SQUARE)
    first = execute(kernel, "square(12)")
    assert "computing square(12)" in first.stdout
    assert first.mime("text/plain") == ["144"]

    restart(kernel, SQUARE)
    again = execute(kernel, "square(12)")
    assert again.stdout == "", f"the body ran again after a restart: {again.stdout!r}"
    assert again.mime("text/plain") == ["144"], f"expected 144, got {again.mime('text/plain')}"
    assert value(kernel, "tuple(square.cache_info())[:3]") == "(1, 0, 1)"


HELPER = """
def scale(x):
    return x * {factor}
"""
SCALED_SUM = """
import funcache_ipy

@funcache_ipy.cache
def scaled_sum(values):
    print("computing scaled_sum")
    return sum(scale(v) for v in values)
"""


def test_editing_a_helper_misses_and_old_version_still_hits(kernel: KernelSession) -> None:
    execute(kernel, HELPER.format(factor=2))
    execute(kernel, SCALED_SUM)
    assert value(kernel, "scaled_sum([1, 2, 3])") == "12"

    execute(kernel, HELPER.format(factor=10))  # the user edits and re-runs the helper's cell
    why = execute(kernel, "print(scaled_sum.explain([1, 2, 3]))").stdout
    assert "miss" in why and "scale" in why, f"explain does not name the edited helper: {why}"
    edited = execute(kernel, "scaled_sum([1, 2, 3])")
    assert "computing scaled_sum" in edited.stdout, "the edited helper did not recompute"
    assert edited.mime("text/plain") == ["60"], f"expected 60, got {edited.mime('text/plain')}"

    restart(kernel, HELPER.format(factor=2), SCALED_SUM)  # back to the first version
    reverted = execute(kernel, "scaled_sum([1, 2, 3])")
    assert reverted.stdout == "", "reverting the helper should hit the first entry"
    assert reverted.mime("text/plain") == ["12"], f"expected 12, got {reverted.mime('text/plain')}"


SCALED = """
import funcache_ipy

@funcache_ipy.cache
def scaled(x):
    print("computing scaled")
    return x * sum(FACTORS)
"""


@pytest.mark.parametrize(
    ("original", "edit"),
    [
        ("FACTORS = [1, 1]", "FACTORS = [1, 2]"),
        ("FACTORS = [1, 1]", "FACTORS.append(1)"),
    ],
    ids=["rebind", "mutate-in-place"],
)
def test_global_change_misses_and_reverting_hits(
    kernel: KernelSession, original: str, edit: str
) -> None:
    execute(kernel, original)
    execute(kernel, SCALED)
    assert value(kernel, "scaled(5)") == "10"

    execute(kernel, edit)
    changed = execute(kernel, "scaled(5)")
    assert "computing scaled" in changed.stdout, f"{edit!r} did not invalidate"
    assert changed.mime("text/plain") == ["15"], f"expected 15, got {changed.mime('text/plain')}"

    execute(kernel, original)
    reverted = execute(kernel, "scaled(5)")
    assert reverted.stdout == "", f"reverting to {original!r} should hit"
    assert reverted.mime("text/plain") == ["10"]

    restart(kernel, original, edit, SCALED)
    after_restart = execute(kernel, "scaled(5)")
    assert after_restart.stdout == "", "the edited version's entry should survive a restart"
    assert after_restart.mime("text/plain") == ["15"]


CELL_SETUP = """
%load_ext funcache_ipy
from IPython.display import HTML, display

def note_run():
    with open("runs.log", "a") as log:
        log.write("ran\\n")
"""
SQUARES_CELL = """%%funcache
note_run()
print("squaring five numbers")
squares = [i * i for i in range(5)]
display(HTML("<b>five squares</b>"))
total = sum(squares)
total
"""


def test_cell_magic_restores_variables_and_replays_outputs_after_restart(
    kernel: KernelSession,
) -> None:
    execute(kernel, CELL_SETUP)
    first = execute(kernel, SQUARES_CELL)
    assert HIT_NOTICE not in first.text
    assert "squaring five numbers" in first.stdout
    assert first.mime("text/html") == ["<b>five squares</b>"]

    restart(kernel, CELL_SETUP)
    hit = execute(kernel, SQUARES_CELL)
    assert HIT_NOTICE in hit.text, f"no restore notice in {hit.text!r}"
    assert Path("runs.log").read_text() == "ran\n", "the cell body ran again"
    assert "squaring five numbers" in hit.stdout, "stdout was not replayed"
    assert hit.mime("text/html") == ["<b>five squares</b>"], "the HTML display was not replayed"
    results = [out["data"] for out in hit.outputs if out["output_type"] == "execute_result"]
    assert results == [{"text/plain": "30"}], f"the last value was not returned: {results}"
    assert value(kernel, "squares, total") == "([0, 1, 4, 9, 16], 30)"


def test_info_and_explain_are_readable(kernel: KernelSession) -> None:
    powers = "%%funcache --name powers\npowers = [2**i for i in range(N)]"
    execute(kernel, "%load_ext funcache_ipy\nN = 3")
    execute(kernel, SQUARE)
    execute(kernel, "square(4)")
    execute(kernel, powers)

    info = execute(kernel, "%funcache info").text
    assert "square" in info and "powers" in info, f"info lacks the entries:\n{info}"

    execute(kernel, "N = 4")
    execute(kernel, powers)
    why = execute(kernel, "%funcache explain --last powers").text
    assert "miss" in why and "`N` changed: 3 → 4" in why, f"explain does not say N changed:\n{why}"
    assert "Traceback" not in info + why


FRAME_SETUP = """
%load_ext funcache_ipy
import numpy as np
import pandas as pd
"""
FRAME_CELL = """%%funcache
rng = np.random.default_rng(7)
frame = pd.DataFrame(
    {
        "id": np.arange(1_000_000),
        "value": rng.random(1_000_000),
        "group": pd.Categorical(rng.choice(["a", "b", "c"], 1_000_000)),
    }
)
"""
FRAME_CHECKSUM = "frame.shape, int(pd.util.hash_pandas_object(frame).sum())"


def test_million_row_dataframe_restored_after_restart(kernel: KernelSession) -> None:
    execute(kernel, FRAME_SETUP)
    execute(kernel, FRAME_CELL)
    checksum = value(kernel, FRAME_CHECKSUM)

    restart(kernel, FRAME_SETUP)
    hit = execute(kernel, FRAME_CELL)
    assert HIT_NOTICE in hit.text, f"no restore notice in {hit.text!r}"
    restored = value(kernel, FRAME_CHECKSUM)
    assert restored == checksum, f"restored frame differs: {restored} != {checksum}"


MODULE = """
def f(x):
    return x * {factor}
"""
VIA_MODULE = """
import funcache_ipy
import mymod

@funcache_ipy.cache
def via_module(x):
    print("computing via_module")
    return mymod.f(x)
"""


def test_local_module_edit_misses_and_unchanged_hits(kernel: KernelSession) -> None:
    module = Path("mymod.py")  # the kernel's cwd is this test's cwd
    module.write_text(MODULE.format(factor=2))
    execute(kernel, VIA_MODULE)
    assert value(kernel, "via_module(21)") == "42"

    module.write_text(MODULE.format(factor=100))
    restart(kernel, VIA_MODULE)
    edited = execute(kernel, "via_module(21)")
    assert "computing via_module" in edited.stdout, "editing mymod.py did not recompute"
    assert edited.mime("text/plain") == ["2100"], (
        f"expected 2100, got {edited.mime('text/plain')} (stale cache)"
    )

    restart(kernel, VIA_MODULE)
    unchanged = execute(kernel, "via_module(21)")
    assert unchanged.stdout == "", "an unchanged local module should hit"
    assert unchanged.mime("text/plain") == ["2100"]
