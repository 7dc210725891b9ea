"""Shared fixtures: every test runs in its own temp cache dir, config dir and cwd.

NB. ``XDG_CONFIG_HOME`` is redirected so the per-user HMAC secret is created under
``tmp_path``: the tests never touch ``~``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Fixtures for every test: ``ip`` (a shell with the extension loaded) for cell tests,
# ``kernel`` (a started Jupyter kernel) for kernel tests, and the closing of Stores that
# store tests open with ``reopen``.
pytest_plugins = ["tests.cell_helpers", "tests.kernel_helpers", "tests.store_helpers"]


@pytest.fixture(scope="session", autouse=True)
def ipython_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep IPython's profile and history (shells and kernels alike) out of ``~``."""
    path = tmp_path_factory.mktemp("ipython")
    os.environ["IPYTHONDIR"] = str(path)
    return path


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the cache, the secret key and the cwd at fresh temp dirs."""
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("FUNCACHE_IPY_DIR", str(cache_dir))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return cache_dir


@pytest.fixture
def shell():
    """A real IPython shell with an empty user namespace, reset again afterwards."""
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance(colors="nocolor")
    ip.reset(new_session=False)
    yield ip
    ip.reset(new_session=False)


def run_cell(ip, code: str):
    """Run one cell like a user would; re-raise its error; return its last value."""
    result = ip.run_cell(code, store_history=True)
    result.raise_error()
    return result.result
