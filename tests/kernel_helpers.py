"""Real-kernel plumbing shared by the kernel tests: the ``kernel`` fixture and helpers.

The kernels come from ``funcache_ipy.demo.KernelSession`` (this interpreter, IPC sockets),
so the tests exercise the same runner as ``python -m funcache_ipy demo``. Each kernel gets
the test's cwd and environment: ``FUNCACHE_IPY_DIR`` and ``XDG_CONFIG_HOME`` as set by the
``isolated_cache`` fixture, plus a private ``IPYTHONDIR`` so no test touches ``~/.ipython``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from funcache_ipy.demo import CellRun, KernelSession

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "notebooks"


def open_kernel(tmp_path: Path) -> KernelSession:
    """A not-yet-started kernel in the current directory with this test's environment.

    NB. ``PYTHONDONTWRITEBYTECODE``: a local module edited within the same second at the
    same size would otherwise be imported from its stale ``.pyc``.
    """
    env = {
        **os.environ,
        "IPYTHONDIR": str(tmp_path / "ipython"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return KernelSession(Path.cwd(), env, timeout=120)


@pytest.fixture
def kernel(isolated_cache: Path, tmp_path: Path) -> Iterator[KernelSession]:
    """A started kernel in this test's cwd, with this test's cache and config dirs."""
    with open_kernel(tmp_path) as session:
        yield session


def execute(kernel: KernelSession, code: str) -> CellRun:
    """Run one cell; fail the test with the kernel's traceback if it raised."""
    run = kernel.run(code)
    if run.error is not None:
        pytest.fail(f"cell failed:\n{code}\n{run.error}", pytrace=False)
    return run


def value(kernel: KernelSession, expression: str) -> str:
    """The ``text/plain`` repr of ``expression`` evaluated in the kernel."""
    results = execute(kernel, expression).mime("text/plain")
    if len(results) != 1:
        pytest.fail(f"{expression!r} displayed {results!r}, expected one value", pytrace=False)
    return results[0]
