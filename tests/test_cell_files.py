"""Files a ``%%funcache`` cell reads are inputs, as for ``@cache`` functions.

Cells run in a real ``InteractiveShell`` (the ``ip`` fixture of ``test_magics``); the body
calls ``tick()``, which appends to ``runs.log``, so a hit and a run are told apart without
trusting the cache's own notice, and the values the cell binds are checked for staleness.
Files live in the test's own cwd. Real kernels and restarts: ``test_kernel_cell_files``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from funcache_ipy.store import FuncacheWarning
from tests.cell_helpers import restart, runs
from tests.conftest import run_cell
from tests.test_files import c_read
from tests.test_magics import error_of

TOTAL = """%%funcache --name total
tick()
with open("data.csv") as f:
    total = sum(int(v) for v in f.read().split()[1:])
"""


def explained(ip: InteractiveShell, name: str, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    run_cell(ip, f"%funcache explain --last {name}")
    return capsys.readouterr().out


def total(ip: InteractiveShell) -> int:
    run_cell(ip, TOTAL)
    return int(ip.user_ns["total"])


def test_file_read_with_open_is_an_input_of_the_cell(
    ip: InteractiveShell,
    capsys: pytest.CaptureFixture[str],
) -> None:
    Path("data.csv").write_text("x\n1\n2\n")
    assert total(ip) == 3
    assert total(ip) == 3
    assert runs() == 1, "an unchanged file must hit"

    Path("data.csv").write_text("x\n1\n2\n3\n")
    assert total(ip) == 6, "expected 6 (stale cache)"
    assert runs() == 2
    assert "file `data.csv` changed: 6 B → 8 B" in explained(ip, "total", capsys)

    Path("data.csv").write_text("x\n1\n2\n3\n")  # the same bytes again: a new mtime
    os.utime("data.csv")  # and touched
    assert total(ip) == 6
    assert runs() == 2, "touching or rewriting the same bytes must still hit"
    assert explained(ip, "total", capsys) == "total: hit\n"

    Path("data.csv").write_text("x\n1\n2\n")  # reverted
    restart(ip)
    assert total(ip) == 3, "expected 3 (stale cache)"
    assert runs() == 2, "reverting the file must hit its earlier run"


def test_read_csv_with_the_path_in_a_global(ip: InteractiveShell) -> None:
    pd.DataFrame({"a": range(100)}).to_csv("sales.csv", index=False)
    run_cell(ip, "import pandas as pd\nPATH = 'sales.csv'")
    cell = "%%funcache\ntick()\nsales = pd.read_csv(PATH)\nlen(sales)\n"
    assert run_cell(ip, cell) == 100
    assert run_cell(ip, cell) == 100
    assert runs() == 1
    pd.DataFrame({"a": range(10)}).to_csv("sales.csv", index=False)
    assert run_cell(ip, cell) == 10, "expected 10 rows (stale cache)"
    assert len(ip.user_ns["sales"]) == 10, "expected 10 rows in sales (stale cache)"
    assert runs() == 2


def test_declared_files_for_a_reader_that_bypasses_open(ip: InteractiveShell) -> None:
    Path("data").mkdir()
    Path("data/a.bin").write_bytes(b"1")
    Path("data/b.bin").write_bytes(b"22")
    Path("config.bin").write_bytes(b"333")
    ip.user_ns["c_read"] = c_read
    body = "tick()\nsize = sum(len(c_read(p)) for p in sorted(glob.glob('data/*.bin')))\n"
    run_cell(ip, "import glob")
    declared = f"%%funcache --files data/*.bin --files 'config.bin'\n{body}"
    undeclared = f"%%funcache\n{body}"
    run_cell(ip, declared)
    run_cell(ip, undeclared)
    assert runs() == 2

    Path("data/b.bin").write_bytes(b"4444")
    run_cell(ip, undeclared)
    assert ip.user_ns["size"] == 3, "the C reader should bypass the audit hook (test is moot)"
    run_cell(ip, declared)
    assert ip.user_ns["size"] == 5, f"expected 5, got {ip.user_ns['size']} (stale cache)"
    Path("data/c.bin").write_bytes(b"55555")  # a new match counts too
    run_cell(ip, declared)
    assert ip.user_ns["size"] == 10, f"expected 10, got {ip.user_ns['size']} (stale cache)"
    Path("config.bin").write_bytes(b"")  # declared in quotes
    run_cell(ip, declared)
    run_cell(ip, declared)
    assert runs() == 5, "expected a run per change of a declared file and a hit after"


def test_path_global_counts_by_content_for_a_reader_that_bypasses_open(
    ip: InteractiveShell,
) -> None:
    Path("input.bin").write_bytes(b"abc")
    ip.user_ns.update(c_read=c_read, SOURCE=Path("input.bin"))
    cell = "%%funcache\ntick()\nsize = len(c_read(SOURCE))\n"
    run_cell(ip, cell)
    run_cell(ip, cell)
    assert runs() == 1
    Path("input.bin").write_bytes(b"abcdef")
    run_cell(ip, cell)
    assert ip.user_ns["size"] == 6, f"expected 6, got {ip.user_ns['size']} (stale cache)"


def test_files_option_needs_a_pattern(ip: InteractiveShell) -> None:
    error = error_of(ip, "%%funcache --files\nv = 1\n")
    assert isinstance(error, UsageError) and "--files" in str(error), error


def test_a_log_the_cell_appends_to_and_reads_is_an_output(ip: InteractiveShell) -> None:
    Path("run.log").write_text("")
    cell = """%%funcache
tick()
with open("run.log") as log:
    before = len(log.read().splitlines())
with open("run.log", "a") as log:
    log.write("ran\\n")
"""
    for _ in range(3):
        run_cell(ip, cell)
    assert runs() == 1, f"a file the cell writes made it miss: {runs()} runs, expected 1"


def test_file_changed_while_the_cell_ran_is_not_stored(ip: InteractiveShell) -> None:
    Path("data.txt").write_text("old")
    cell = """%%funcache --name reader
tick()
text = Path("data.txt").read_text()
subprocess.run([sys.executable, "-c", WRITE], check=True)
"""
    run_cell(ip, "import subprocess, sys\nfrom pathlib import Path")
    run_cell(ip, "WRITE = \"import pathlib; pathlib.Path('data.txt').write_text('newer')\"")
    with pytest.warns(FuncacheWarning, match=r"not cached: file data\.txt changed while it ran"):
        run_cell(ip, cell)
    assert ip.user_ns["text"] == "old"
    with pytest.warns(FuncacheWarning, match=r"not cached: file data\.txt changed while it ran"):
        run_cell(ip, cell)
    assert ip.user_ns["text"] == "newer", "a result mixing old and new content was stored"
    assert runs() == 2


def test_info_counts_results_not_file_set_records_and_shows_tracked_files(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str], isolated_cache: Path
) -> None:
    Path("a.txt").write_text("1")
    Path("b.txt").write_text("2")
    run_cell(ip, "from pathlib import Path")
    cell = "%%funcache --name pair\npair = Path('a.txt').read_text() + Path('b.txt').read_text()\n"
    run_cell(ip, cell)
    Path("b.txt").write_text("3")
    run_cell(ip, cell)
    run_cell(ip, "%%funcache --name plain\nv = 1\n")
    orphan = isolated_cache / "ab" / "cd" / f"{'0' * 28}.val"  # as a killed write leaves it
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"x" * 100)
    capsys.readouterr()
    run_cell(ip, "%funcache info")
    text = capsys.readouterr().out
    assert "3 entries, " in text, f"expected 3 results (2 of pair, 1 of plain):\n{text}"
    assert " + 1 orphan file (100 B, left by interrupted writes); " in text, text
    rows = {line.split()[0]: line.split() for line in text.splitlines()[3:]}
    assert rows["pair"][1:4] == ["cell", "2", "2"], f"expected 2 entries of 2 files:\n{text}"
    assert rows["plain"][1:4] == ["cell", "1", "0"], text
