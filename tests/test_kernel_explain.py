"""``%funcache explain`` about the next run, in a real kernel, after a restart."""

from __future__ import annotations

import pytest

from funcache_ipy.demo import HIT_NOTICE, KernelSession
from tests.kernel_helpers import execute

pytestmark = pytest.mark.kernel

CELL = "%%funcache --name features\nprint('ran')\nfeatures = list(range(WINDOW))\n"


def test_explain_next_run_of_a_cell_after_a_restart(kernel: KernelSession) -> None:
    execute(kernel, "%load_ext funcache_ipy")
    execute(kernel, "WINDOW = 7")
    assert execute(kernel, CELL).stdout == "ran\n"
    kernel.restart()
    execute(kernel, "%load_ext funcache_ipy")
    execute(kernel, "WINDOW = 14")
    said = execute(kernel, "%funcache explain features").stdout
    assert said == "next run of features: would recompute: global `WINDOW` changed: 7 → 14\n", said
    execute(kernel, "WINDOW = 7")
    said = execute(kernel, "%funcache explain features").stdout
    assert said.startswith("next run of features: would hit (stored "), said
    again = execute(kernel, CELL).stdout
    assert again.startswith(HIT_NOTICE), f"explain said hit, but the cell ran: {again!r}"
