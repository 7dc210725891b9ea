"""Run All, Restart, Run All: every ``%%funcache`` cell hits and the notebook reads the same.

Public notebooks (the Python Data Science Handbook's numpy and matplotlib chapters)
were run with every cell under ``%%funcache``; these are the few cells of each case
where a hit used to differ from the run: a view restored as a copy, figures shown as
``<Figure size ...>`` text, a figure above ``Out[n]``. Each test compares the hit
pass's outputs and namespace with the first pass's.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from funcache_ipy.demo import HIT_NOTICE, KernelSession
from tests.kernel_helpers import execute, value

pytestmark = pytest.mark.kernel

_ADDRESS = re.compile(r"\b0x[0-9a-f]+")


def run_all(kernel: KernelSession, cells: list[str]) -> list[list[tuple[str, Any]]]:
    """Each cell's outputs in order, as (kind, payload), without the hit notice."""
    shown = []
    for cell in cells:
        run = execute(kernel, cell)
        outputs: list[tuple[str, Any]] = []
        for line in run.stdout.splitlines(keepends=True):
            if not line.startswith(HIT_NOTICE):
                outputs.append(("stdout", line))
        for out in run.outputs:  # NB. reprs such as <Line2D at 0x7f...> differ by address
            text = _ADDRESS.sub("0x?", str(out["data"].get("text/plain", "")))
            outputs.append((out["output_type"], (sorted(out["data"]), text)))
        shown.append(outputs)
    return shown


VIEW_CELLS = [
    "%load_ext funcache_ipy",
    "%%funcache\nimport numpy as np",
    "%%funcache\nx2 = np.random.RandomState(0).randint(10, size=(3, 4))",
    "%%funcache\nx2_sub = x2[:2, :2]",
    "%%funcache\nx2_sub[0, 0] = 99",
    "%%funcache\nprint(x2)",
    "%%funcache\ngrid = np.arange(6).reshape(2, 3)\nrow = grid[1]\nrow[0] = -1\ngrid",
]
VIEW_STATE = "x2.tolist(), x2_sub.tolist(), grid.tolist(), np.shares_memory(grid, row)"


def test_views_read_the_same_after_restart(kernel: KernelSession) -> None:
    first = run_all(kernel, VIEW_CELLS)
    state = value(kernel, VIEW_STATE)
    assert "99" in first[5][0][1], f"the run itself should print 99: {first[5]}"

    kernel.restart()
    hit = run_all(kernel, VIEW_CELLS)
    assert hit == first, f"the hit pass shows other outputs:\n{hit}\n!=\n{first}"
    assert value(kernel, VIEW_STATE) == state, "the hit pass left another namespace"
    notices = execute(kernel, "%funcache info").text
    assert "0 misses" in notices, f"every cell should have hit:\n{notices}"


FIGURE_CELLS = [
    "%load_ext funcache_ipy",
    "%%funcache\nimport matplotlib.pyplot as plt\nimport numpy as np",
    "%%funcache\nfig, ax = plt.subplots()\nax.plot(np.arange(3))",
    "%%funcache\nax.set_title('three points');",
    "fig",
]


def test_figures_show_as_images_in_run_order_after_restart(kernel: KernelSession) -> None:
    pytest.importorskip("matplotlib")
    first = run_all(kernel, FIGURE_CELLS)
    plotted = [kind for kind, _ in first[2]]
    assert plotted == ["execute_result", "display_data"], (
        f"a run shows Out, then the figure: {first[2]}"
    )
    assert "image/png" in first[4][0][1][0], f"the run shows fig as an image: {first[4]}"

    kernel.restart()
    hit = run_all(kernel, FIGURE_CELLS)
    assert hit[2] == first[2], f"the figure cell replays otherwise: {hit[2]} != {first[2]}"
    assert hit[4] == first[4], (
        f"fig shows as {hit[4]}, not as in the run: {first[4]} (no PNG formatter)"
    )


def stream_order(kernel: KernelSession, code: str) -> list[tuple[str, str]]:
    """The stream messages of one cell in the order the frontend gets them."""
    chunks = []
    for kind, content in kernel.run(code).messages:
        if kind == "stream":
            lines = content["text"].splitlines(keepends=True)
            text = "".join(line for line in lines if not line.startswith(HIT_NOTICE))
            if text:
                chunks.append((content["name"], text))
    return chunks


def test_stdout_and_stderr_replay_in_their_run_order(kernel: KernelSession) -> None:
    cell = (
        "%%funcache\nimport sys\nfor step in range(2):\n"
        "    print('out', step, flush=True)\n    print('err', step, file=sys.stderr, flush=True)\n"
    )
    execute(kernel, "%load_ext funcache_ipy")
    first = stream_order(kernel, cell)
    assert [name for name, _ in first] == ["stdout", "stderr"] * 2, first
    kernel.restart()
    execute(kernel, "%load_ext funcache_ipy")
    hit = stream_order(kernel, cell)
    assert hit == first, f"the hit interleaves stdout and stderr otherwise: {hit} != {first}"
