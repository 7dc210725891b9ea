"""A ``%%funcache`` hit leaves the namespace as a run would: views, files, warnings.

Each test runs a few cells, "restarts" (an empty namespace, as in ``test_magics.py``),
runs them again so they hit, and compares what the user can observe with the first
run. Cell bodies count their real runs with ``tick()`` (a file no fingerprint sees).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

from funcache_ipy.store import FuncacheWarning
from tests.cell_helpers import restart, runs
from tests.conftest import run_cell

np = pytest.importorskip("numpy")


def run_all(ip: InteractiveShell, cells: list[str]) -> list[object]:
    """Run cells in order, as *Run All* does; return each cell's value."""
    return [run_cell(ip, cell) for cell in cells]


# ------------------------------------------------------------------ views of arrays

HANDBOOK_VIEWS = [
    "%%funcache\nimport numpy as np\n",
    "%%funcache\ntick()\nx2 = np.random.RandomState(0).randint(10, size=(3, 4))\n",
    "%%funcache\ntick()\nx2_sub = x2[:2, :2]\n",
    "%%funcache\ntick()\nx2_sub[0, 0] = 99\n",
    "%%funcache\ntick()\nfirst = int(x2[0, 0])\nfirst\n",
]


def test_view_bound_by_a_cell_stays_a_view_of_its_base_after_a_hit(ip: InteractiveShell) -> None:
    """The Data Science Handbook's "subarrays are views" cells, run then hit."""
    ran = run_all(ip, HANDBOOK_VIEWS)
    assert ran[-1] == 99
    restart(ip)
    hit = run_all(ip, HANDBOOK_VIEWS)
    assert runs() == 4, f"expected every cell to hit on the second pass, {runs() - 4} ran again"
    assert hit[-1] == 99, f"expected x2[0, 0] == 99 through the view, got {hit[-1]} (stale view)"
    assert np.shares_memory(ip.user_ns["x2"], ip.user_ns["x2_sub"]), "x2_sub is not a view of x2"
    ip.user_ns["x2_sub"][1, 1] = -5
    assert ip.user_ns["x2"][1, 1] == -5, "a write through the restored view missed its base"


def test_views_between_arrays_bound_in_one_cell_stay_views(ip: InteractiveShell) -> None:
    cell = (
        "%%funcache\ntick()\nimport numpy as np\n"
        "grid = np.arange(12.0).reshape(3, 4)\nrow = grid[1]\ncolumn = grid[:, 2]\n"
        "flat = grid.ravel()\n"
    )
    run_cell(ip, cell)
    restart(ip)
    run_cell(ip, cell)
    assert runs() == 1, "the second run should hit"
    ns = ip.user_ns
    ns["row"][2] = 100.0
    assert ns["grid"][1, 2] == 100.0, "row is no longer a view of grid"
    assert ns["column"][1] == 100.0, "column is no longer a view of grid"
    assert ns["flat"][6] == 100.0, "flat is no longer a view of grid"


def test_view_of_an_input_written_through_updates_the_live_base(ip: InteractiveShell) -> None:
    cells = [
        "%%funcache\nimport numpy as np\ndata = np.zeros(6)\n",
        "%%funcache\ntick()\nhead = data[:3]\nhead[:] = 7.0\n",
        "%%funcache\ntick()\ntotal = float(data.sum())\ntotal\n",
    ]
    ran = run_all(ip, cells)
    restart(ip)
    hit = run_all(ip, cells)
    assert runs() == 2, "the second pass should hit"
    assert hit[-1] == ran[-1] == 21.0, f"expected 21.0, got {hit[-1]} (stale base)"
    ip.user_ns["head"][0] = 1.0
    assert ip.user_ns["data"][0] == 1.0, "head is not a view of the live data"


def test_read_only_and_temporary_views_are_cached(ip: InteractiveShell) -> None:
    """A view of a temporary (``np.arange(12).reshape``) shares memory with nothing else."""
    cell = "%%funcache\ntick()\nimport numpy as np\nm = np.arange(12).reshape(3, 4)\n"
    run_cell(ip, cell)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FuncacheWarning)
        run_cell(ip, cell)
    assert runs() == 1, "a view of a temporary array should be cached"
    assert ip.user_ns["m"].tolist() == np.arange(12).reshape(3, 4).tolist()


def test_view_of_an_array_the_cell_cannot_restore_runs_with_a_notice(
    ip: InteractiveShell,
) -> None:
    run_cell(ip, "import numpy as np\nclass Box:\n    pass\nbox = Box()\nbox.values = np.zeros(4)")
    cell = "%%funcache\ntick()\nhead = box.values[:2]\n"
    for _ in range(2):
        with pytest.warns(FuncacheWarning, match="not cached: `head` is a view") as caught:
            run_cell(ip, cell)
        assert "\n" not in str(caught[0].message), "the notice should be one line"
    assert runs() == 2, "a view the cell cannot restore must make it run"
    ip.user_ns["head"][0] = 3.0
    assert ip.user_ns["box"].values[0] == 3.0


@pytest.mark.parametrize(
    "expression",
    ["base[::-1]", "base[:, ::2]", "base.T", "base.reshape(6, 4)", "base[1:3, 2:5][::-1, 1]"],
)
def test_any_view_layout_writes_through_after_a_hit(ip: InteractiveShell, expression: str) -> None:
    cell = f"%%funcache\ntick()\nimport numpy as np\nbase = np.arange(24.0).reshape(4, 6)\nview = {expression}\n"
    probe = "view[...] = -1.0\nbase.tolist()"
    run_cell(ip, cell)
    expected = run_cell(ip, probe)
    restart(ip)
    run_cell(ip, cell)
    assert runs() == 1, "the second run should hit"
    got = run_cell(ip, probe)
    assert got == expected, f"writing through {expression} after a hit: {got} != {expected}"


def test_input_rebound_to_a_view_of_itself_stays_a_view_of_the_old_array(
    ip: InteractiveShell,
) -> None:
    cells = [
        "%%funcache\nimport numpy as np\nsignal = np.arange(8.0)\nkeep = signal\n",
        "%%funcache\ntick()\nsignal = signal[::2]\n",
    ]
    run_all(ip, cells)
    restart(ip)
    run_all(ip, cells)
    assert runs() == 1, "the second pass should hit"
    ip.user_ns["signal"][1] = -1.0
    assert ip.user_ns["keep"][2] == -1.0, "signal is no longer a view of the array it sliced"


# ------------------------------------------------------------------ closed files


@pytest.mark.parametrize("mode", ["w", "r", "rb", "ab"])
def test_file_closed_by_with_is_rebound_as_after_a_run(ip: InteractiveShell, mode: str) -> None:
    Path("notes.txt").write_text("hello")
    cell = f"%%funcache\ntick()\nwith open('notes.txt', {mode!r}) as f:\n    pass\n"
    describe = "(type(f).__name__, f.name, f.mode, f.closed, repr(f))"
    run_cell(ip, "f = 'an earlier f'")
    run_cell(ip, cell)
    ran = run_cell(ip, describe)
    restart(ip)
    run_cell(ip, "f = 'an earlier f'")
    run_cell(ip, cell)
    assert runs() == 1, "the second run should hit"
    hit = run_cell(ip, describe)
    assert hit == ran, f"after a hit f is {hit}, after a run {ran}"


def test_other_closed_file_objects_make_the_cell_run(ip: InteractiveShell) -> None:
    cell = "%%funcache\ntick()\nimport gzip\nwith gzip.open('data.gz', 'wb') as g:\n    g.write(b'x')\n"
    for _ in range(2):
        with pytest.warns(FuncacheWarning, match="not cached: `g` is a closed GzipFile"):
            run_cell(ip, cell)
    assert runs() == 2
    assert run_cell(ip, "g.closed") is True


# ------------------------------------------------------------------ notices


def test_unhashable_input_warning_is_one_short_line(ip: InteractiveShell) -> None:
    pytest.importorskip("matplotlib")
    run_cell(ip, "from matplotlib.figure import Figure\nfig = Figure()\nax = fig.subplots()")
    with pytest.warns(FuncacheWarning) as caught:
        run_cell(ip, "%%funcache\ntick()\nax.set_title('three points');")
    message = str(caught[0].message)
    assert "input `ax` (matplotlib Axes) cannot be hashed" in message, message
    assert "\n" not in message and len(message) < 200, f"not one short line: {message!r}"
    assert runs() == 1


# ------------------------------------------------------------------ shared pandas parts

PD_SHARED_INDEX = [
    "%%funcache\nimport pandas as pd\nindex = pd.Index(['a', 'b'])\ns = pd.Series([1, 2], index=index)\n",
    "%%funcache\ntick()\ns.index.name = 'letter'\n",
]


@pytest.mark.parametrize("alias", ["index", "same = s"])
def test_change_to_a_pandas_object_another_name_shares_runs_uncached(
    ip: InteractiveShell, alias: str
) -> None:
    """A hit can only rebind ``s`` to a copy: ``index`` (or an alias) would keep the old one.

    The Data Science Handbook's ``pop.index.names = [...]`` (03.05) after ``index`` was
    used to build ``pop``.
    """
    pd = pytest.importorskip("pandas")
    first = (
        PD_SHARED_INDEX[0]
        if alias == "index"
        else "%%funcache\nimport pandas as pd\ns = pd.Series([1, 2], index=['a', 'b'])\nsame = s\n"
    )
    cells = [first, PD_SHARED_INDEX[1]]
    shared = "index" if alias == "index" else "same"
    probe = "index.name" if alias == "index" else "same.index.name"
    with pytest.warns(FuncacheWarning, match=f"`s` changed in place and `{shared}`"):
        for cell in cells:
            run_cell(ip, cell)
    assert run_cell(ip, probe) == "letter"
    restart(ip)
    with pytest.warns(FuncacheWarning):
        for cell in cells:
            run_cell(ip, cell)
    assert runs() == 2, "the cell must run after the restart, not hit"
    assert run_cell(ip, probe) == "letter", "the name sharing the index must see the change"
    assert isinstance(run_cell(ip, "s"), pd.Series)


def test_frames_sharing_an_index_still_hit(ip: InteractiveShell) -> None:
    """``data`` built from ``area`` shares its index; adding a column changes neither."""
    pytest.importorskip("pandas")
    cells = [
        "%%funcache\nimport pandas as pd\narea = pd.Series({'a': 1.0, 'b': 2.0})\ndata = pd.DataFrame({'area': area})\n",
        "%%funcache\ntick()\ndata['double'] = data['area'] * 2\n",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FuncacheWarning)
        for cell in cells:
            run_cell(ip, cell)
        restart(ip)
        for cell in cells:
            run_cell(ip, cell)
    assert runs() == 1, "the column cell must hit"
    assert run_cell(ip, "list(data.columns)") == ["area", "double"]
