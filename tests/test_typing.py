"""What a type checker sees of ``@funcache_ipy.cache`` (mypy, run on a user's file).

The decorated function keeps its signature (a wrong argument type is an error) and has
the helpers ``cache_info``, ``cache_clear``, ``refresh``, ``explain``; a typo in a
helper's name is an error, not ``Any``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="mypy is in the test extra")

USER_CODE = textwrap.dedent(
    """
    import asyncio
    import funcache_ipy

    @funcache_ipy.cache
    def load(n: int, scale: float = 1.0) -> list[float]:
        return [i * scale for i in range(n)]

    @funcache_ipy.cache(ignore=["verbose"], version="2")
    def fit(data: list[float], verbose: bool = False) -> float:
        return sum(data)

    @funcache_ipy.cache
    async def fetch(url: str) -> bytes:
        return url.encode()

    rows: list[float] = load(3, scale=2.0)
    total: float = fit(rows) + load.cache_info().hits + load.cache_clear()
    fresh: list[float] = load.refresh(3)
    print(load.explain(3).hit, load.uncached(2), fit.explain_last())
    body: bytes = asyncio.run(fetch("x"))
    info: funcache_ipy.CacheInfo = fit.cache_info()

    load("three")  # error: arg-type
    load.cache_infos()  # error: attr-defined (no such helper)
    count: str = load.cache_info().misses  # error: assignment (an int)
    """
)


def test_mypy_sees_the_signature_and_the_helpers(tmp_path: Path) -> None:
    (tmp_path / "user.py").write_text(USER_CODE)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--follow-imports=silent",
            "--no-error-summary",
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "user.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    expected = {
        number: line.partition("# error: ")[2].split()[0]
        for number, line in enumerate(USER_CODE.splitlines(), start=1)
        if "# error: " in line
    }
    found = {
        int(line.split(":")[1]): line.rpartition("[")[2].rstrip("]")
        for line in done.stdout.splitlines()
        if ": error:" in line
    }
    assert found == expected, done.stdout + done.stderr
