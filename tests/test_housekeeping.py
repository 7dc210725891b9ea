"""``%funcache explain`` (next run), ``info`` and ``prune`` through a real InteractiveShell."""

from __future__ import annotations

import gc
import html.parser
import weakref
from pathlib import Path

from IPython.core.interactiveshell import InteractiveShell

from funcache_ipy import file_sets
from funcache_ipy.store import open_store
from tests.cell_helpers import restart, runs
from tests.conftest import run_cell

SCALED = """
import funcache_ipy
SCALE = 2
@funcache_ipy.cache
def scaled(v):
    return v * SCALE
"""


def said(ip: InteractiveShell, capsys, line: str) -> str:
    capsys.readouterr()
    run_cell(ip, line)
    return capsys.readouterr().out


def test_explain_says_whether_the_next_call_hits_as_globals_are_now(
    ip: InteractiveShell, capsys
) -> None:
    run_cell(ip, SCALED)
    run_cell(ip, "scaled(5)")
    out = said(ip, capsys, "%funcache explain scaled")
    assert out.startswith("next run of __main__.scaled: would hit (stored "), out
    assert "ago, original run " in out, out
    run_cell(ip, "SCALE = 3")
    out = said(ip, capsys, "%funcache explain scaled")
    expected = "next run of __main__.scaled: would recompute: global `SCALE` changed: 2 → 3\n"
    assert out == expected, f"expected a miss naming SCALE, got {out!r}"
    run_cell(ip, "SCALE = 2")
    assert "would hit" in said(ip, capsys, "%funcache explain scaled"), "reverted: a hit"
    run_cell(ip, "SCALE = 3")
    assert run_cell(ip, "scaled(5)") == 15, "expected 15 (stale cache)"
    run_cell(ip, "SCALE = 2")
    out = said(ip, capsys, "%funcache explain --last scaled")
    assert out.startswith("__main__.scaled: miss") and "2 → 3" in out, out


def test_explain_next_keeps_no_big_argument_alive(ip: InteractiveShell, capsys) -> None:
    run_cell(ip, SCALED)
    run_cell(ip, "import numpy as np\nbig = np.arange(100_000)\ntotal = scaled(big).sum()")
    alive = weakref.ref(ip.user_ns["big"])
    run_cell(ip, "del big")
    for name in ("_", "__", "___"):
        ip.user_ns.pop(name, None)
    gc.collect()
    assert alive() is None, "the last call's argument is still referenced"
    assert "would hit" in said(ip, capsys, "%funcache explain scaled")


def test_explain_a_cell_next_run_against_the_namespace_now(ip: InteractiveShell, capsys) -> None:
    run_cell(ip, "WINDOW = 7")
    cell = "%%funcache --name features\ntick()\nfeatures = list(range(WINDOW))\n"
    run_cell(ip, cell)
    run_cell(ip, "WINDOW = 14")
    out = said(ip, capsys, "%funcache explain features")
    assert out == "next run of features: would recompute: global `WINDOW` changed: 7 → 14\n", out
    run_cell(ip, "WINDOW = 7")
    assert "next run of features: would hit (stored" in said(
        ip, capsys, "%funcache explain features"
    )
    restart(ip)  # the code comes from the stored entry now
    run_cell(ip, "WINDOW = 7")
    assert "would hit" in said(ip, capsys, "%funcache explain features")
    run_cell(ip, "WINDOW = 8")
    assert "WINDOW` changed: 7 → 8" in said(ip, capsys, "%funcache explain features")
    run_cell(ip, "WINDOW = 7")
    run_cell(ip, cell)
    assert runs() == 1, "explain said hit, so the run should have been restored"


def test_explain_shows_a_diff_of_the_cell_code(ip: InteractiveShell, capsys) -> None:
    run_cell(ip, "%%funcache --name prep\na = 1\nb = a + 1\nc = 3\n")
    result = ip.run_cell("%%funcache --name prep\na = 1\nb = a + 2\nc = 3\nraise ValueError\n")
    assert result.error_in_exec is not None
    out = said(ip, capsys, "%funcache explain prep")
    assert out.startswith("next run of prep: would recompute:\n"), out
    assert "  - cell code changed:\n    -b = a + 1\n    +b = a + 2\n    +raise ValueError\n" in out


class _Table(html.parser.HTMLParser):
    """The cells of an HTML table, with the ``style`` of each."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[tuple[str, str]]] = []
        self._style: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._style = dict(attrs).get("style") or ""
            self.rows[-1].append((self._style, ""))

    def handle_data(self, data: str) -> None:
        if self._style is not None:
            style, text = self.rows[-1][-1]
            self.rows[-1][-1] = (style, text + data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self._style = None


def test_info_html_names_cells_by_their_first_line_and_shows_ages(
    ip: InteractiveShell, capsys
) -> None:
    run_cell(ip, "%%funcache\n# load it\nrows = [1, 2] if 1 < 2 else []\n")
    run_cell(ip, SCALED)
    run_cell(ip, "scaled(1)")
    report = ip.magics_manager.registry["FuncacheMagics"].report()
    table = _Table()
    table.feed(report._repr_html_())
    header = [text for _, text in table.rows[0]]
    assert header == [
        "name",
        "kind",
        "entries",
        "files",
        "size",
        "stored",
        "run",
        "hits",
        "misses",
    ], header
    rows = {row[0][1].split()[0]: row for row in table.rows[1:]}
    cell = next(row for name, row in rows.items() if name.startswith("cell:"))
    assert cell[0][1].endswith(" rows = [1, 2] if 1 < 2 else []"), cell[0]
    assert "text-align:left" in cell[0][0] and "text-align:right" in cell[2][0]
    assert cell[5][1].endswith(" ago") and cell[6][1] != "-", cell
    assert rows["__main__.scaled"][1][1] == "function"
    text = said(ip, capsys, "%funcache info")
    assert "rows = [1, 2] if 1 &lt;" not in text and "rows = [1, 2] if 1 < 2" in text, text


WRITER = """
import funcache_ipy
from pathlib import Path
SCALE = 2
@funcache_ipy.cache
def written(v):
    Path(f"out{v}.txt").write_text(str(v * SCALE))
    return v * SCALE
"""


def names_and_kinds(directory: Path) -> list[tuple[str, str]]:
    return sorted(
        (meta.name, "record" if file_sets.is_record(meta) else "result")
        for _, meta in open_store(directory).entries()
    )


def test_prune_removes_older_versions_with_their_records(
    ip: InteractiveShell, capsys, isolated_cache: Path
) -> None:
    run_cell(ip, WRITER)
    run_cell(ip, "written(1); written(2)")
    run_cell(ip, "SCALE = 3")
    run_cell(ip, "written(1)")
    before = names_and_kinds(isolated_cache)
    # 3 results, each with a file-set record and a copy of the file it wrote
    assert before.count(("__main__.written", "result")) == 3, before
    out = said(ip, capsys, "%funcache prune")
    assert out.startswith("funcache: removed 6 entries ("), out
    after = names_and_kinds(isolated_cache)
    assert after == [("__main__.written", "record")] * 2 + [("__main__.written", "result")], after
    Path("out1.txt").unlink()
    assert run_cell(ip, "written(1)") == 3, "expected 3 (stale cache)"
    assert Path("out1.txt").read_text() == "3", "the newest version's output copy must stay"
    assert said(ip, capsys, "%funcache prune").startswith("funcache: removed 0 entries (0 B)")


def test_prune_older_keeps_the_newest_version(ip: InteractiveShell, capsys) -> None:
    for window in (1, 2, 3):
        run_cell(ip, f"WINDOW = {window}")
        run_cell(ip, "%%funcache --name w\ntick()\nw = WINDOW * 2\n")
    out = said(ip, capsys, "%funcache prune w --keep 3")
    assert out.startswith("funcache: removed 0 entries"), out
    out = said(ip, capsys, "%funcache prune --older 0m")
    assert out.startswith("funcache: removed 2 entries"), out
    run_cell(ip, "%%funcache --name w\ntick()\nw = WINDOW * 2\n")
    run_cell(ip, "WINDOW = 1")
    run_cell(ip, "%%funcache --name w\ntick()\nw = WINDOW * 2\n")
    assert runs() == 4, f"expected the newest version to hit and WINDOW = 1 to rerun, {runs()}"
