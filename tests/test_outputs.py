"""Files a run creates or replaces are outputs: a hit leaves the disk as the run did.

Cells run in a real ``InteractiveShell`` (the ``ip`` fixture); ``tick()`` appends to
``runs.log`` so that a hit and a run are told apart without trusting the cache's notice.
A real kernel with a restart: ``test_kernel_cell_files``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from IPython.core.interactiveshell import InteractiveShell

import funcache_ipy
from tests.cell_helpers import restart, runs
from tests.conftest import run_cell

WRITE = """%%funcache --name report
tick()
import pandas as pd
frame = pd.DataFrame({"n": range(rows), "sq": [i * i for i in range(rows)]})
frame.to_csv("out.csv", index=False)
"""


def report(ip: InteractiveShell, capsys: pytest.CaptureFixture[str] | None = None) -> str:
    if capsys is not None:
        capsys.readouterr()
    run_cell(ip, WRITE)
    return capsys.readouterr().out if capsys is not None else ""


def test_a_hit_puts_back_a_deleted_or_changed_output(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.user_ns["rows"] = 50
    report(ip)
    written = Path("out.csv").read_bytes()
    Path("out.csv").unlink()
    restart(ip)
    ip.user_ns["rows"] = 50
    notice = report(ip, capsys)
    assert runs() == 1, "the cell must hit"
    assert Path("out.csv").read_bytes() == written, "the hit must put out.csv back as written"
    assert "wrote back out.csv" in notice, f"the notice must say so: {notice!r}"

    Path("out.csv").write_text("edited by hand\n")
    report(ip)
    assert runs() == 1
    assert Path("out.csv").read_bytes() == written, "a run would overwrite the edit; so must a hit"

    notice = report(ip, capsys)
    assert "wrote back" not in notice, "an output as the run left it is not written again"

    ip.user_ns["rows"] = 7  # another run, another content
    report(ip)
    assert runs() == 2
    assert Path("out.csv").read_text().count("\n") == 8, "expected 7 rows and a header"


def test_output_too_big_to_keep_must_be_left_as_written(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    run_cell(ip, "%config FuncacheMagics.output_limit = 100")
    ip.user_ns["rows"] = 50  # about 400 bytes
    report(ip)
    report(ip)
    assert runs() == 1, "an output left as written does not stop a hit"

    Path("out.csv").unlink()
    report(ip)
    assert runs() == 2, "the output was not kept: the cell must run to write it again"
    assert Path("out.csv").exists()
    capsys.readouterr()
    run_cell(ip, "%funcache explain --last report")
    assert "out.csv` is missing and was too big to keep a copy of" in capsys.readouterr().out


def test_appended_log_is_not_an_output(ip: InteractiveShell) -> None:
    cell = """%%funcache
tick()
with open("events.log", "a") as log:
    log.write("ran\\n")
"""
    run_cell(ip, cell)
    with open("events.log", "a") as log:
        log.write("later\n")
    run_cell(ip, cell)
    assert runs() == 1
    assert Path("events.log").read_text() == "ran\nlater\n", "a hit must not undo later appends"


def test_temporary_and_renamed_files(ip: InteractiveShell) -> None:
    """The atomic-write idiom: a temporary file renamed onto the output."""
    cell = """%%funcache
tick()
import os, tempfile
handle, temporary = tempfile.mkstemp(dir=".")
with os.fdopen(handle, "w") as f:
    f.write("atomic\\n")
os.replace(temporary, "result.txt")
with open("scratch.txt", "w") as f:
    f.write("gone")
os.remove("scratch.txt")
"""
    run_cell(ip, cell)
    Path("result.txt").unlink()
    run_cell(ip, cell)
    assert runs() == 1
    assert Path("result.txt").read_text() == "atomic\n"
    assert not Path("scratch.txt").exists(), "a file the run removed is not put back"
    assert sorted(p.name for p in Path().iterdir() if p.name.startswith("tmp")) == []


def test_hidden_tool_files_are_not_outputs(ip: InteractiveShell) -> None:
    cell = """%%funcache
tick()
import os
os.makedirs(".toolcache", exist_ok=True)
with open(".toolcache/index", "w") as f:
    f.write("tool state")
"""
    run_cell(ip, cell)
    Path(".toolcache/index").unlink()
    run_cell(ip, cell)
    assert runs() == 1
    assert not Path(".toolcache/index").exists(), "hidden files are tools' state, not outputs"


def test_function_output_put_back(capsys: pytest.CaptureFixture[str]) -> None:
    @funcache_ipy.cache
    def save_squares(n, path):
        print("ran")
        np.save(path, np.arange(n) ** 2)
        return n

    assert save_squares(5, "squares.npy") == 5
    os.remove("squares.npy")
    assert save_squares(5, "squares.npy") == 5
    assert capsys.readouterr().out.split() == ["ran"], "the second call must hit"
    assert np.array_equal(np.load("squares.npy"), np.arange(5) ** 2)
    assert save_squares.explain(5, "squares.npy").hit


def test_nested_call_outputs_are_the_callers_too(capsys: pytest.CaptureFixture[str]) -> None:
    @funcache_ipy.cache
    def inner(text):
        print("inner")
        Path("inner.txt").write_text(text)

    @funcache_ipy.cache
    def outer(text):
        print("outer")
        inner(text)
        return text.upper()

    inner("a")  # stored by itself first: outer's run hits it
    outer("a")
    Path("inner.txt").unlink()
    assert outer("a") == "A"
    assert capsys.readouterr().out.split() == ["inner", "outer"]
    assert Path("inner.txt").read_text() == "a", "the outer hit must put back what inner wrote"


def test_module_the_cell_writes_is_back_before_its_import(ip: InteractiveShell) -> None:
    cell = "%%funcache\ntick()\nfrom pathlib import Path\nPath('fc_made.py').write_text('X = 3')\nimport fc_made\nx = fc_made.X\n"
    sys.path.insert(0, os.getcwd())
    try:
        run_cell(ip, cell)
        restart(ip)
        Path("fc_made.py").unlink()
        del sys.modules["fc_made"]
        run_cell(ip, cell)
    finally:
        sys.path.remove(os.getcwd())
        sys.modules.pop("fc_made", None)
    assert runs() == 1, "the hit must write the module back, then import it"
    assert ip.user_ns["x"] == 3
