"""A ``%%funcache`` cell that reads or puts back a global random state hits only as a run would.

``s = np.random.get_state()``, draws, ``np.random.set_state(s)`` leaves the generator as
it found it, yet the numbers drawn follow from where it started; and ``s`` itself *is*
the starting state. Each test seeds, runs the cell, seeds otherwise, runs it again, and
compares with a plain run from that seed.
"""

from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell

from tests.cell_helpers import restart, run_twice, runs
from tests.conftest import run_cell

np = pytest.importorskip("numpy")


pytestmark = pytest.mark.usefixtures("saved_generators")


SEED = (
    "import numpy as np, random\nfrom random import getstate, seed\n"
    "np.random.seed({0})\nrandom.seed({0})"
)

# A cell, and what to compare after it: what it bound and where the generators are
READS_THE_START = {
    "numpy draws between get_state and set_state": (
        "s = np.random.get_state()\nx = np.random.rand()\nnp.random.set_state(s)\ndel s",
        "(x, np.random.rand())",
    ),
    "random draws between getstate and setstate": (
        "s = random.getstate()\nx = random.random()\nrandom.setstate(s)\ndel s",
        "(x, random.random())",
    ),
    "numpy state read": ("s = np.random.get_state()", "(s[1][:3].tolist(), s[2])"),
    "random state read": ("s = random.getstate()", "s[1][:3]"),
    "state read by name": (
        "from numpy.random import get_state\ns = get_state()",
        "(s[1][:3].tolist(), get_state is np.random.get_state)",
    ),
    "state read by a name from an earlier cell": (
        "s = getstate()",
        "(s[1][:3], getstate is random.getstate)",
    ),
}


def plain_run(ip: InteractiveShell, seed: int, cell: str, probe: str) -> object:
    """``probe`` after ``cell`` ran without funcache from ``seed``."""
    run_cell(ip, SEED.format(seed))
    run_cell(ip, cell)
    return run_cell(ip, probe)


@pytest.mark.parametrize("case", READS_THE_START, ids=list(READS_THE_START))
def test_a_cell_reading_the_random_state_follows_its_start(ip: InteractiveShell, case: str) -> None:
    cell, probe = READS_THE_START[case]
    expected = {seed: plain_run(ip, seed, cell, probe) for seed in (0, 1)}
    assert expected[0] != expected[1], "the seeds should give other results"
    restart(ip)
    for seed in (0, 1, 0):
        run_cell(ip, SEED.format(seed))
        run_cell(ip, f"%%funcache --name reader\ntick()\n{cell}")
        got = run_cell(ip, probe)
        assert got == expected[seed], f"from seed {seed}: {got} != {expected[seed]} (stale cache)"
    assert runs() >= 2, "the cell must run from another starting state"


def test_a_state_put_back_from_an_earlier_cell_hits_as_a_run(ip: InteractiveShell) -> None:
    """``random.setstate(saved)`` with ``saved`` from another cell: what follows is fixed."""
    cells = [
        SEED.format(5) + "\nsaved = (random.getstate(), np.random.get_state())",
        "%%funcache\ntick()\nrandom.setstate(saved[0])\nnp.random.set_state(saved[1])\n"
        "x = (random.random(), np.random.rand())",
    ]
    probe = "(x, random.random(), np.random.rand())"
    ran, hit = run_twice(ip, cells, probe)
    assert runs() == 1, "the restored state follows from `saved`: the cell should hit"
    assert hit == ran, f"after a hit {hit}, after a run {ran}"


@pytest.mark.parametrize("function", ["seed", "rand"])
def test_a_generator_function_bound_by_name_stays_the_global_one(
    ip: InteractiveShell, function: str
) -> None:
    """``seed`` from ``from random import seed`` changes with the global state, so the
    cell stores it; a hit must bind the module's function, not a method of a copy of
    the generator (which ``seed(1)`` afterwards would seed instead of the global one)."""
    cells = [
        SEED.format(0) + "\nfrom numpy.random import rand",
        "%%funcache\ntick()\nseed(3)\nx = (random.random(), rand())",
    ]
    probe = f"({function} is {'random.seed' if function == 'seed' else 'np.random.rand'}, x)"
    after = "seed(1)\nnp.random.seed(1)\n(random.random(), rand(), np.random.rand())"
    for cell in cells:
        run_cell(ip, cell)
    ran = (run_cell(ip, probe), run_cell(ip, after))
    restart(ip)
    for cell in cells:
        run_cell(ip, cell)
    assert runs() == 1, "the cell should hit after the restart"
    hit = (run_cell(ip, probe), run_cell(ip, after))
    assert hit == ran, f"after a hit {hit}, after a run {ran}"
