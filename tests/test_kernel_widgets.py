"""Widgets a cell displays replay as their final text on a hit, in a real kernel.

A widget's view refers to a model that lives in the kernel that ran the cell: replayed
after a restart it would be a dead box, and replayed as recorded it would show the
state it was displayed in (tqdm's notebook bar at 0%). A hit shows what the run ended
with, as text.
"""

from __future__ import annotations

import pytest

from funcache_ipy.demo import KernelSession
from tests.kernel_helpers import execute

pytest.importorskip("ipywidgets", reason="ipywidgets is in the test extra")
pytest.importorskip("tqdm", reason="tqdm is in the test extra")
pytestmark = pytest.mark.kernel

CELL = """%%funcache --name progress
from tqdm.notebook import tqdm
import ipywidgets
total = 0
for i in tqdm(range(50), desc="steps"):
    total += i
closed = ipywidgets.Label("gone")
display(closed)
closed.close()
del closed
display(ipywidgets.HTML("<b>done</b> &amp; saved"))
"""


def test_a_progress_bar_replays_as_its_final_text(kernel: KernelSession) -> None:
    execute(kernel, "%load_ext funcache_ipy")
    run = execute(kernel, CELL)
    assert any("application/vnd.jupyter.widget-view+json" in o["data"] for o in run.outputs)
    kernel.restart()
    execute(kernel, "%load_ext funcache_ipy")
    hit = execute(kernel, CELL)
    assert hit.stdout.startswith("funcache: restored"), hit.stdout
    shown = hit.mime("text/plain")
    assert shown[0].startswith("steps: 100%|██████████| 50/50"), shown
    assert shown[1:] == ["done & saved"], f"a closed widget is not replayed: {shown}"
    assert all("application/vnd.jupyter.widget-view+json" not in o["data"] for o in hit.outputs)
