"""Shell plumbing shared by the ``%%funcache`` tests that run cells in-process.

A cell's body counts its real runs with ``tick()``, which appends to ``runs.log`` in the
test's working directory: a side effect no fingerprint sees, so a hit and a run are told
apart without trusting the cache's own notice. ``restart`` (an empty namespace) stands in
for a kernel restart; real kernels are tested in the ``test_kernel*.py`` files.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

from funcache_ipy.cell import CellCache
from funcache_ipy.memory import default_memory
from tests.conftest import run_cell

TICK = """
def tick():
    with open("runs.log", "a") as log:
        log.write(".")
"""


@pytest.fixture
def ip(shell: InteractiveShell) -> Iterator[InteractiveShell]:
    """The shell with funcache_ipy loaded and ``tick()`` defined; unloaded afterwards."""
    shell.extension_manager.load_extension("funcache_ipy")
    run_cell(shell, TICK)
    yield shell
    shell.extension_manager.unload_extension("funcache_ipy")
    shell.config.pop("FuncacheMagics", None)  # NB. %config also updates the shell's config
    default_memory.enabled = True


def runs() -> int:
    """How many times a cell body called ``tick()`` in this test."""
    log = Path("runs.log")
    return len(log.read_text()) if log.exists() else 0


def restart(ip: InteractiveShell) -> None:
    """As after a kernel restart: an empty namespace (``tick`` defined again), no cell
    bookkeeping, and the store's in-memory layer dropped, so hits are read from disk."""
    ip.reset(new_session=False)
    magics = ip.magics_manager.registry["FuncacheMagics"]
    magics.cells = CellCache(magics.store, magics.cells.enabled)
    magics.store().close()
    run_cell(ip, TICK)


def run_twice(ip: InteractiveShell, cells: list[str], probe: str) -> tuple[object, object]:
    """``probe``'s value after running ``cells``, then after a restart and a second pass."""
    for cell in cells:
        run_cell(ip, cell)
    ran = run_cell(ip, probe)
    restart(ip)
    for cell in cells:
        run_cell(ip, cell)
    return ran, run_cell(ip, probe)


@pytest.fixture
def saved_generators() -> Iterator[None]:
    """Put the global generators back as they were, so other tests see no difference."""
    import random

    import numpy as np

    numpy_state, random_state = np.random.get_state(), random.getstate()
    yield
    np.random.set_state(numpy_state)
    random.setstate(random_state)
