"""A value a ``%%funcache`` hit restores refers to the cell's live inputs, as after a run.

Cell 1 binds ``a = [1, 2]``; cached cell 2 binds ``b = {"x": a}``. After a run, ``b["x"]``
*is* ``a``: a later ``a.append(3)`` shows through ``b``. A hit after a restart must give
the same, not a copy. Each test runs the cells, changes the input in place, probes, then
restarts, runs them again (the cached cell hits) and compares.
"""

from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell

from funcache_ipy.demo import KernelSession
from tests.cell_helpers import restart, run_twice, runs
from tests.conftest import run_cell
from tests.kernel_helpers import execute, value

# (earlier cell, cached cell, change to the input then a probe)
KEEPS_INPUT = {
    "list in a dict": (
        "a = [1, 2]",
        'b = {"x": a}',
        'a.append(3)\n(b["x"] is a, b["x"])',
    ),
    "result is the input": ("a = [1, 2]", "a", "a.append(3)\n(_ is a, _)"),
    "two names for one list": (
        "a = [1, 2]\nalias = a",
        "pair = (a, alias)",
        "a.append(3)\n(pair[0] is pair[1] is a, pair[1])",
    ),
    "iterator over a list": ("rows = [1, 2]", "it = iter(rows)", "rows.append(3)\nlist(it)"),
    "dict view": (
        "d = {'k': 1}",
        "keys = d.keys()",
        "d['new'] = 2\n(sorted(keys), type(keys).__name__)",
    ),
    "instance": (
        "class Model:\n    pass\nmodel = Model()\nmodel.coef = 1",
        "bundle = {'model': model}",
        "model.coef = 2\n(bundle['model'] is model, bundle['model'].coef)",
    ),
    "function defined by a lambda": (
        "square = lambda x: x * x",
        "ops = [square]",
        "(ops[0] is square, ops[0](3))",
    ),
    "module": ("import json", "mods = {'json': json}", "mods['json'] is json"),
    "global a function reads": (
        "LOG = []\ndef log_of():\n    return LOG",
        "got = log_of()",
        "LOG.append(1)\n(got is LOG, got)",
    ),
}


@pytest.mark.parametrize("case", KEEPS_INPUT, ids=list(KEEPS_INPUT))
def test_a_hit_refers_to_the_live_input(ip: InteractiveShell, case: str) -> None:
    setup, cell, probe = KEEPS_INPUT[case]
    ran, hit = run_twice(ip, [setup, f"%%funcache\ntick()\n{cell}"], probe)
    assert runs() == 1, "the cached cell should hit after the restart"
    assert hit == ran, f"after a hit {probe!r} gives {hit}, after a run {ran} (a copy of the input)"


def test_numpy_and_pandas_inputs_stay_the_live_objects(ip: InteractiveShell) -> None:
    pytest.importorskip("numpy")
    pytest.importorskip("pandas")
    setup = "import numpy as np\nimport pandas as pd\narr = np.zeros(3)\ndf = pd.DataFrame({'v': [1, 2]})"
    cell = "%%funcache\ntick()\nstate = {'arr': arr, 'df': df}"
    probe = "arr[0] = 7.0\ndf['w'] = 0\n(state['arr'] is arr, state['df'] is df, state['arr'][0], list(state['df']))"
    ran, hit = run_twice(ip, [setup, cell], probe)
    assert runs() == 1, "the cached cell should hit after the restart"
    assert hit == ran == (True, True, 7.0, ["v", "w"]), f"after a hit {hit}, after a run {ran}"


def test_an_input_the_cell_changes_is_restored_with_the_change(ip: InteractiveShell) -> None:
    """The changed input is not the one the key saw: its content comes from the entry."""
    cells = ["a = [1, 2]", "%%funcache\ntick()\na.append(3)\nsnapshot = {'x': list(a)}"]
    ran, hit = run_twice(ip, cells, "(a, snapshot)")
    assert runs() == 1, "the cached cell should hit after the restart"
    assert hit == ran == ([1, 2, 3], {"x": [1, 2, 3]}), f"after a hit {hit}, after a run {ran}"


def test_an_input_the_cell_rebinds_is_the_old_object_in_what_it_kept(
    ip: InteractiveShell,
) -> None:
    cells = ["a = [1, 2]", "%%funcache\ntick()\nold = {'x': a}\na = [9]"]
    ran, hit = run_twice(ip, cells, "(old, a)")
    assert runs() == 1, "the cached cell should hit after the restart"
    assert hit == ran == ({"x": [1, 2]}, [9]), f"after a hit {hit}, after a run {ran}"


def test_names_that_no_longer_share_an_object_make_the_cell_run(ip: InteractiveShell) -> None:
    """The key sees ``a`` and ``alias`` by content only; a hit could not tell which the
    stored value referred to, so it runs."""
    cell = "%%funcache\ntick()\npair = [alias, len(a)]"
    run_cell(ip, "a = [1]\nalias = a")
    run_cell(ip, cell)
    restart(ip)
    run_cell(ip, "a = [1]\nalias = [1]")
    run_cell(ip, cell)
    assert runs() == 2, "the cell must run: `alias` and `a` are two objects now"
    assert run_cell(ip, "pair[0] is alias"), "pair[0] should be the live alias"


# ------------------------------------------------------------------ a real kernel


@pytest.mark.kernel
def test_a_hit_after_a_kernel_restart_refers_to_the_live_input(kernel: KernelSession) -> None:
    cells = ["%load_ext funcache_ipy", "a = [1, 2]", '%%funcache\nb = {"x": a}']
    probe = 'a.append(3)\n(b["x"] is a, b["x"])'
    for cell in cells:
        execute(kernel, cell)
    ran = value(kernel, probe)
    kernel.restart()
    for cell in cells:
        execute(kernel, cell)
    assert "0 misses" in execute(kernel, "%funcache info").text, "the cell should have hit"
    hit = value(kernel, probe)
    assert hit == ran == "(True, [1, 2, 3])", f"after a hit {hit}, after a run {ran} (a copy)"


PARTS = {
    "item of a list": ("rows = [[1], [2]]", "first = {'row': rows[0]}", "rows[0].append(9)\nfirst"),
    "attribute": (
        "class Config:\n    pass\ncfg = Config()\ncfg.params = [1]",
        "params = cfg.params",
        "cfg.params.append(2)\nparams",
    ),
    "value of a dict": ("d = {'k': [1]}", "held = (d['k'],)", "d['k'].append(2)\nheld"),
}


@pytest.mark.parametrize("case", PARTS, ids=list(PARTS))
def test_a_part_of_an_input_is_the_live_part(ip: InteractiveShell, case: str) -> None:
    setup, cell, probe = PARTS[case]
    ran, hit = run_twice(ip, [setup, f"%%funcache\ntick()\n{cell}"], probe)
    assert runs() == 1, "the cached cell should hit after the restart"
    assert hit == ran, f"after a hit {probe!r} gives {hit}, after a run {ran} (a copy of a part)"


def test_a_frame_built_on_an_input_shares_its_index(ip: InteractiveShell) -> None:
    """The Data Science Handbook (03.05) builds ``pop_df`` on ``pop``, then renames
    ``pop.index``: the frame's index, the same object, shows the new names."""
    pytest.importorskip("pandas")
    cells = [
        "import pandas as pd\npop = pd.Series([1, 2], index=pd.MultiIndex.from_tuples([('a', 1), ('b', 2)]))",
        "%%funcache\ntick()\npop_df = pd.DataFrame({'total': pop, 'other': [3, 4]})",
    ]
    probe = "pop.index.names = ['state', 'year']\nlist(pop_df.index.names)"
    ran, hit = run_twice(ip, cells, probe)
    assert runs() == 1, "the cached cell should hit after the restart"
    assert hit == ran, f"after a hit the frame's index names are {hit}, after a run {ran}"


CHANGED_IN_PLACE = {
    "list in a dict": ("a = [1, 2]", "a.append(3)\nb = {'x': a}", "a.append(4)\n(b['x'] is a, b)"),
    "item of a changed list": (
        "rows = [[1], [2]]",
        "rows[0].append(5)\nrows.insert(0, [0])\nsecond = {'r': rows[1]}",
        "rows[1].append(6)\n(second['r'] is rows[1], second, rows)",
    ),
    "new object put into a changed list": (
        "rows = [[1]]",
        "new = [9]\nrows.append(new)",
        "new.append(10)\n(rows[-1] is new, rows)",
    ),
    "attribute of a changed instance": (
        "class Config:\n    pass\ncfg = Config()\ncfg.params = [1]",
        "cfg.params.append(2)\ncfg.name = 'x'\nkept = [cfg.params, cfg]",
        "cfg.params.append(3)\n(kept[0] is cfg.params, kept[1] is cfg, kept[0], cfg.name)",
    ),
}


@pytest.mark.parametrize("case", CHANGED_IN_PLACE, ids=list(CHANGED_IN_PLACE))
def test_an_input_changed_in_place_is_the_live_one_in_other_values(
    ip: InteractiveShell, case: str
) -> None:
    setup, cell, probe = CHANGED_IN_PLACE[case]
    ran, hit = run_twice(ip, [setup, f"%%funcache\ntick()\n{cell}"], probe)
    assert runs() == 1, "the cached cell should hit after the restart"
    assert hit == ran, f"after a hit {probe!r} gives {hit}, after a run {ran} (a copy)"


def test_an_array_the_cell_reshapes_in_place_makes_it_run(ip: InteractiveShell) -> None:
    """The live array cannot take the stored content in place: the cell runs."""
    pytest.importorskip("numpy")
    cells = [
        "import numpy as np\ngrid = np.arange(6.0)",
        "%%funcache\ntick()\ngrid.shape = (2, 3)\nheld = [grid]",
    ]
    ran, hit = run_twice(ip, cells, "(held[0] is grid, grid.shape)")
    assert hit == ran == (True, (2, 3)), f"after a hit {hit}, after a run {ran}"
