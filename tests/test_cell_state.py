"""A ``%%funcache`` hit leaves process state as the run did: seeds, options, env, paths.

Cells that seed numpy, set display options or edit ``os.environ``, ``rcParams``,
``sys.path`` or the warning filters bind nothing, yet change what later cells print. The
later cells here are plain (uncached) cells: after a "restart" (an empty namespace with
the state knocked back to a fresh kernel's) and a run of the cached cells as hits, they
must see what they saw after the run. Found by ``benchmarks/audit_notebooks.py``.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

from funcache_ipy.demo import KernelSession
from tests.cell_helpers import TICK, restart, runs
from tests.conftest import run_cell
from tests.kernel_helpers import execute, value

np = pytest.importorskip("numpy")
pd = pytest.importorskip("pandas")


@pytest.fixture
def fresh_state() -> Iterator[None]:
    """Put back what the cells change, so other tests see a clean process."""
    saved_path, saved_filters = list(sys.path), list(warnings.filters)
    yield
    sys.path[:] = saved_path
    warnings.filters[:] = saved_filters
    warnings._filters_mutated()  # type: ignore[attr-defined]
    pd.reset_option("display.max_rows")
    os.environ.pop("FUNCACHE_TEST_FLAG", None)
    np.set_printoptions(precision=8)


def knock_back() -> None:
    """What a kernel restart does to the state the cells set."""
    np.random.seed(12345)
    np.set_printoptions(precision=8)
    pd.reset_option("display.max_rows")
    os.environ.pop("FUNCACHE_TEST_FLAG", None)


CELLS = [
    "%%funcache\ntick()\nimport numpy as np, pandas as pd, os\nnp.random.seed(0)\n",
    "%%funcache\ntick()\nfirst = np.random.rand()\n",
    "%%funcache\ntick()\nnp.set_printoptions(precision=2)\npd.set_option('display.max_rows', 4)\n",
    "%%funcache\ntick()\nos.environ['FUNCACHE_TEST_FLAG'] = '1'\n",
]
PROBE = "(np.random.rand(), repr(np.array([1/3])), repr(pd.Series(range(10))), os.environ.get('FUNCACHE_TEST_FLAG'))"


def test_hit_leaves_seeds_options_and_environment_as_the_run(
    ip: InteractiveShell, fresh_state: None
) -> None:
    for cell in CELLS:
        run_cell(ip, cell)
    after_run = run_cell(ip, PROBE)
    assert runs() == len(CELLS)

    restart(ip)
    knock_back()
    for cell in CELLS:
        run_cell(ip, cell)
    assert runs() == len(CELLS), "every cached cell must hit"
    after_hit = run_cell(ip, PROBE)
    assert after_hit == after_run, f"after the hits: {after_hit!r}, after the run: {after_run!r}"


def test_hit_puts_back_sys_path_before_the_cells_imports(
    ip: InteractiveShell, fresh_state: None, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "helpers_for_state.py").write_text("ANSWER = 42\n")
    cells = [
        f"%%funcache\ntick()\nimport sys\nsys.path.insert(0, {str(src)!r})\n",
        "%%funcache\ntick()\nimport helpers_for_state\nanswer = helpers_for_state.ANSWER\n",
    ]
    for cell in cells:
        run_cell(ip, cell)
    restart(ip)
    sys.path.remove(str(src))
    sys.modules.pop("helpers_for_state")
    for cell in cells:
        run_cell(ip, cell)
    assert runs() == 2, "both cells must hit"
    assert run_cell(ip, "answer") == 42


def test_warning_filters_set_by_a_cell_come_back(ip: InteractiveShell, fresh_state: None) -> None:
    cell = "%%funcache\ntick()\nimport warnings\nwarnings.filterwarnings('ignore', message='funcache-probe')\n"
    shows = "import warnings\nwith warnings.catch_warnings(record=True) as seen:\n    warnings.warn('funcache-probe')\nlen(seen)"
    run_cell(ip, cell)
    assert run_cell(ip, shows) == 0
    restart(ip)
    warnings.filters[:] = [f for f in warnings.filters if "funcache-probe" not in str(f[1])]
    warnings._filters_mutated()  # type: ignore[attr-defined]
    run_cell(ip, cell)
    assert runs() == 1
    assert run_cell(ip, shows) == 0, "the filter the cell set must be back after its hit"


@pytest.mark.kernel
def test_restart_and_run_all_prints_what_the_run_printed(kernel: KernelSession) -> None:
    cells = ["%load_ext funcache_ipy", TICK, *CELLS]
    for cell in cells:
        execute(kernel, cell)
    after_run = value(kernel, PROBE)
    kernel.restart()
    for cell in cells:
        execute(kernel, cell)
    assert runs() == len(CELLS), "every cached cell must hit after the restart"
    assert value(kernel, PROBE) == after_run


@pytest.mark.kernel
def test_a_cell_importing_a_library_replays_no_options(kernel: KernelSession) -> None:
    """Importing pandas sets no option: a hit must not set them all (which imports more)."""
    cells = ["%load_ext funcache_ipy", TICK, "%%funcache\ntick()\nimport pandas as pd\n"]
    for _ in range(2):
        for cell in cells:
            execute(kernel, cell)
        assert value(kernel, "import sys; 'matplotlib' in sys.modules") == "False"
        kernel.restart()
    assert runs() == 1, "the import cell must hit after the restart"
