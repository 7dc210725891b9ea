"""A ``%%funcache`` cell that draws random numbers is keyed on the random state it starts from.

A cell drawing from ``np.random`` or ``random`` without seeding them first gives other
numbers from another starting state: editing the seed cell before it must make it run
again. A cell that seeds before drawing does not depend on where the generator started,
so it still hits after a restart (whose generators start anywhere). ``knock_back`` plays
the restart's part for the generators in the in-process tests.
"""

from __future__ import annotations

import random

import pytest
from IPython.core.interactiveshell import InteractiveShell

from funcache_ipy.demo import KernelSession
from tests.cell_helpers import TICK, restart, runs
from tests.conftest import run_cell
from tests.kernel_helpers import execute, value

np = pytest.importorskip("numpy")

SEEDS = {
    "numpy": "import numpy as np\nnp.random.seed({})\n",
    "random": "import random\nrandom.seed({})\n",
}
DRAWS = {"numpy": "np.random.rand()", "random": "random.random()"}


def first_draw(generator: str, seed: int) -> float:
    """The first number a global generator gives after being seeded with ``seed``."""
    if generator == "numpy":
        return float(np.random.RandomState(seed).rand())
    return random.Random(seed).random()


pytestmark = pytest.mark.usefixtures("saved_generators")


def knock_back() -> None:
    """What a kernel restart does to the global generators: they start elsewhere."""
    np.random.seed(12345)
    random.seed(12345)


@pytest.mark.parametrize("generator", ["numpy", "random"])
def test_a_draw_after_an_edited_seed_cell_runs_again(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str], generator: str
) -> None:
    draw = f"%%funcache --name draw\ntick()\nx = {DRAWS[generator]}\n"
    run_cell(ip, SEEDS[generator].format(0))
    run_cell(ip, draw)
    assert run_cell(ip, "x") == first_draw(generator, 0)
    run_cell(ip, SEEDS[generator].format(1))
    run_cell(ip, draw)
    got, expected = run_cell(ip, "x"), first_draw(generator, 1)
    assert got == expected, f"expected {expected} (seed 1), got {got} (stale cache)"
    assert runs() == 2
    capsys.readouterr()
    run_cell(ip, "%funcache explain --last draw")
    assert "the global random state it starts from differs" in capsys.readouterr().out
    run_cell(ip, SEEDS[generator].format(0))
    run_cell(ip, draw)
    assert run_cell(ip, "x") == first_draw(generator, 0), "stale cache after reverting the seed"


def test_a_cell_that_seeds_after_drawing_depends_on_where_it_started(
    ip: InteractiveShell,
) -> None:
    """Seeding after a draw can leave the generator as it began: still an input."""
    draw = "%%funcache\ntick()\nx = np.random.rand()\nnp.random.seed(0)\n"
    run_cell(ip, SEEDS["numpy"].format(0))
    run_cell(ip, draw)
    run_cell(ip, SEEDS["numpy"].format(1))
    run_cell(ip, draw)
    got, expected = run_cell(ip, "x"), first_draw("numpy", 1)
    assert got == expected, f"expected {expected} (seed 1), got {got} (stale cache)"


def test_restart_and_run_all_hits_every_cell_after_a_seed_cell(ip: InteractiveShell) -> None:
    """The seed cell's own starting state is random after a restart; it seeds before
    drawing, so it and the cells drawing after it must hit."""
    cells = [
        "%%funcache\ntick()\nimport numpy as np, random\nnp.random.seed(0)\nrandom.seed(0)\n",
        "%%funcache\ntick()\nx = np.random.rand()\n",
        "%%funcache\ntick()\ny = random.random()\n",
    ]
    for cell in cells:
        run_cell(ip, cell)
    after_run = run_cell(ip, "(x, y, np.random.rand(), random.random())")
    restart(ip)
    knock_back()
    for cell in cells:
        run_cell(ip, cell)
    assert runs() == len(cells), "every cached cell must hit after the restart"
    after_hit = run_cell(ip, "(x, y, np.random.rand(), random.random())")
    assert after_hit == after_run, f"after the hits: {after_hit!r}, after the run: {after_run!r}"


@pytest.mark.parametrize("binding", ["import random", "from random import seed, random"])
def test_a_cell_that_seeds_then_draws_hits_after_a_restart(
    ip: InteractiveShell, binding: str
) -> None:
    draw = "random.random()" if binding == "import random" else "random()"
    seed = "random.seed" if binding == "import random" else "seed"
    cell = f"%%funcache\ntick()\n{binding}\nimport numpy as np\n{seed}(3)\nnp.random.seed(3)\n"
    cell += f"x = ({draw}, np.random.rand())\n"
    run_cell(ip, cell)
    restart(ip)
    knock_back()
    run_cell(ip, cell)
    assert runs() == 1, "a cell that seeds before drawing must hit after a restart"
    assert run_cell(ip, "x") == (first_draw("random", 3), first_draw("numpy", 3))


@pytest.mark.parametrize("generator", ["numpy", "random"])
def test_an_unseeded_draw_runs_again_after_a_restart(ip: InteractiveShell, generator: str) -> None:
    cell = f"%%funcache\ntick()\nimport numpy as np, random\nx = {DRAWS[generator]}\n"
    run_cell(ip, cell)
    restart(ip)
    knock_back()
    run_cell(ip, cell)
    got, expected = run_cell(ip, "x"), first_draw(generator, 12345)
    assert got == expected, f"expected {expected} (the new starting state), got {got} (stale)"
    assert runs() == 2


@pytest.mark.kernel
def test_kernel_restart_hits_and_an_edited_seed_runs_the_draws_again(
    kernel: KernelSession,
) -> None:
    seed_cell = (
        "%%funcache\ntick()\nimport numpy as np, random\nnp.random.seed({0})\nrandom.seed({0})\n"
    )
    draw_cell = "%%funcache\ntick()\nx = (np.random.rand(), random.random())\n"
    cells = ["%load_ext funcache_ipy", TICK, seed_cell.format(0), draw_cell]
    for cell in cells:
        execute(kernel, cell)
    after_run = value(kernel, "x")
    kernel.restart()
    for cell in cells:
        execute(kernel, cell)
    assert runs() == 2, "every cached cell must hit after the restart"
    assert value(kernel, "x") == after_run
    execute(kernel, seed_cell.format(1))
    execute(kernel, draw_cell)
    got, expected = value(kernel, "x"), repr((first_draw("numpy", 1), first_draw("random", 1)))
    assert got == expected, f"expected {expected} (seed 1), got {got} (stale cache)"
    assert runs() == 4
