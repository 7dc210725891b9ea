"""The example notebooks and the demo command, executed for real.

The examples are documentation, so they are run here (twice, with a kernel restart in
between, sharing one cache directory) to keep them from rotting: the first run must
compute, the second must hit every cached step without running its body. The demo command
is run end to end in a subprocess, from an unrelated directory, as a newcomer would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from funcache_ipy.demo import HIT_NOTICE, read_code_cells, run_notebook
from tests.kernel_helpers import EXAMPLES, open_kernel

NOTEBOOKS = ["quickstart.ipynb", "data_workflow.ipynb"]

#: A line printed inside a cached function's body: present only when the body ran.
BODY_MARKERS = {
    "quickstart.ipynb": "computing word_stats",
    "data_workflow.ipynb": "loading and cleaning",
}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_valid_and_committed_without_outputs(name: str) -> None:
    notebook = nbformat.read(EXAMPLES / name, as_version=4)
    nbformat.validate(notebook)
    dirty = [
        cell.source.splitlines()[0]
        for cell in notebook.cells
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, f"{name} is committed with outputs in cells {dirty}; clear them"


@pytest.mark.kernel
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_second_run_hits_the_cache(name: str, tmp_path: Path) -> None:
    cells = read_code_cells((EXAMPLES / name).read_text(encoding="utf-8"))
    with open_kernel(tmp_path) as kernel:
        first = run_notebook(kernel, cells)
        kernel.restart()
        second = run_notebook(kernel, cells)

    for label, runs in (("first", first), ("second", second)):
        for run in runs:
            assert run.error is None, f"{name}, {label} run:\n{run.source}\n{run.error}"
    cached = [(one, two) for one, two in zip(first, second, strict=True) if one.cache or two.cache]
    assert any(one.cache == "miss" for one, _ in cached), f"{name}: nothing computed on run 1"
    missed = [two.source for _, two in cached if two.cache != "hit"]
    assert not missed, f"{name}: these cells missed on the second run: {missed}"

    marker = BODY_MARKERS[name]
    assert marker in "".join(run.stdout for run in first)
    assert marker not in "".join(run.stdout for run in second), "a cached body ran again"
    for one, two in cached:
        if one.source.startswith("%%funcache"):
            assert HIT_NOTICE not in one.text and HIT_NOTICE in two.text, one.source

    computing = sum(one.seconds for one, _ in cached)
    restoring = sum(two.seconds for _, two in cached)
    assert restoring < computing / 3, (
        f"{name}: cached cells took {restoring:.2f} s on the second run vs {computing:.2f} s"
    )


@pytest.mark.kernel
def test_demo_command_runs_from_any_directory_and_leaves_nothing(
    isolated_cache: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    scratch = tmp_path / "scratch"
    elsewhere.mkdir()
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "IPYTHONDIR": str(tmp_path / "ipython")}

    result = subprocess.run(
        [sys.executable, "-m", "funcache_ipy", "demo"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert any("miss -> hit" in row for row in rows), result.stdout
    assert "%%funcache" in result.stdout, result.stdout
    assert "word_stats: miss - function `normalize` changed" in result.stdout, result.stdout
    assert "funcache: restored lengths, report from cache in " in result.stdout, result.stdout
    assert list(elsewhere.iterdir()) == [], "the demo wrote into the current directory"
    assert list(scratch.iterdir()) == [], "the demo left temporary files behind"
    assert not isolated_cache.exists(), "the demo used the caller's cache directory"


def test_help_documents_the_demo() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "funcache_ipy", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "demo" in result.stdout and "quickstart" in result.stdout
