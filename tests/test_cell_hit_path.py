"""The shortcuts of a cell hit must key exactly as the long way does.

A cell name's last compiled code is reused when the new code equals it, so its
summary (which module attributes it reads) is not computed again; these edits change
which attribute the code reads under one ``--name``, and the key must follow.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

from tests.cell_helpers import runs
from tests.conftest import run_cell


@pytest.fixture
def local_module(tmp_path: Path) -> Iterator[str]:
    """A local module ``hitpath_mod`` with ``A = 1`` and ``B = 2``, importable."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "hitpath_mod.py").write_text("A = 1\nB = 2\n")
    sys.path.insert(0, str(src))
    try:
        yield "hitpath_mod"
    finally:
        sys.path.remove(str(src))
        sys.modules.pop("hitpath_mod", None)


def test_an_edited_cell_keys_on_the_attributes_its_new_code_reads(
    ip: InteractiveShell, local_module: str
) -> None:
    run_cell(ip, f"import {local_module}")
    cell_a = f"%%funcache --name pick\ntick()\ny = {local_module}.A\n"
    cell_b = f"%%funcache --name pick\ntick()\ny = {local_module}.B\n"
    run_cell(ip, cell_a)
    run_cell(ip, cell_a)
    assert runs() == 1, "the unchanged cell must hit"
    run_cell(ip, cell_b)
    assert ip.user_ns["y"] == 2 and runs() == 2, "the edited cell must run"
    run_cell(ip, f"{local_module}.B = 5")
    run_cell(ip, cell_b)
    assert ip.user_ns["y"] == 5, f"expected 5, got {ip.user_ns['y']} (stale cache)"
    run_cell(ip, f"{local_module}.A = 7")
    run_cell(ip, cell_a)
    assert ip.user_ns["y"] == 7, f"expected 7, got {ip.user_ns['y']} (stale cache)"
    run_cell(ip, cell_a)
    assert runs() == 4, f"expected 4 runs (the last one a hit), got {runs()}"
