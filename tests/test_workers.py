"""Cached functions sent to worker processes: right values, one key, shared entries.

A cached function pickles as "this function with these options" and is rebuilt in the
worker, which must compute the parent's key: the worker hits what the parent stored and
stores what the parent will hit. Checked for real with every way users send functions
to workers — multiprocessing (fork and spawn), ``ProcessPoolExecutor``, joblib's default
loky backend (cloudpickle) and Dask's ``LocalCluster`` — from a script's ``__main__`` and
from a real kernel's cell. A count file written by the body tells where it ran.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import funcache_ipy
from funcache_ipy.demo import KernelSession
from tests.conftest import run_cell
from tests.kernel_helpers import execute, open_kernel, value

# The parent computes square(0) first (so its guards exist: they used to travel with the
# pickled wrapper), then the workers run square over 0..3 and the parent calls it again.
FUNCTIONS = """
import os, threading
import funcache_ipy

LOCK = threading.Lock()  # unpicklable; the function does not use it

def bump(x):
    return x + 1

@funcache_ipy.cache
def square(x):
    with open(os.environ["COUNT_FILE"], "a") as count:
        count.write(f"{x}\\n")
    return bump(x) * x
"""

MAP_IN_WORKERS = """
def map_in_workers(how, func, xs):
    if how in ("fork", "spawn"):
        import multiprocessing
        with multiprocessing.get_context(how).Pool(2) as pool:
            return pool.map(func, xs)
    if how in ("executor-fork", "executor-spawn"):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        context = multiprocessing.get_context(how.split("-")[1])
        with ProcessPoolExecutor(2, mp_context=context) as pool:
            return list(pool.map(func, xs))
    if how == "joblib":
        import joblib
        return joblib.Parallel(n_jobs=2)(joblib.delayed(func)(x) for x in xs)
    if how == "dask":
        from distributed import Client, LocalCluster
        with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
            with Client(cluster) as client:
                return client.gather(client.map(func, xs))
    raise ValueError(how)
"""

SCRIPT = (
    FUNCTIONS
    + MAP_IN_WORKERS
    + """
if __name__ == "__main__":
    import json, sys
    from funcache_ipy.store import open_store

    first = square(0)
    results = map_in_workers(sys.argv[1], square, range(4))
    again = [square(x) for x in range(4)]
    print(json.dumps({
        "results": results,
        "again": again,
        "info": list(square.cache_info()),
        "names": sorted({meta.name for _, meta in open_store().entries()}),
    }))
"""
)

EXPECTED = [x * (x + 1) for x in range(4)]


def computed(count_file: Path) -> list[int]:
    """Arguments the body ran with, in any process, in order of completion."""
    return (
        sorted(int(line) for line in count_file.read_text().split()) if count_file.exists() else []
    )


@pytest.fixture
def count_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "computed.txt"
    monkeypatch.setenv("COUNT_FILE", str(path))
    return path


@pytest.mark.parametrize(
    "how",
    [
        "fork",
        "spawn",
        "executor-fork",
        "executor-spawn",
        "joblib",
        pytest.param("dask", marks=pytest.mark.slow),
    ],
)
def test_workers_of_a_script_share_the_parents_entries(how: str, count_file: Path) -> None:
    script = Path("script.py")
    script.write_text(SCRIPT)
    run = subprocess.run(
        [sys.executable, str(script), how], capture_output=True, text=True, timeout=180
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["results"] == EXPECTED, f"workers returned {report['results']} (wrong value)"
    assert report["again"] == EXPECTED
    assert computed(count_file) == [0, 1, 2, 3], (
        "each value must be computed once: 0 by the parent, 1-3 by the workers, which hit "
        f"the parent's entry for 0; computed: {computed(count_file)}"
    )
    hits, misses, entries, _ = report["info"]
    assert (hits, misses, entries) == (4, 1, 4), (
        f"the parent must hit all four workers' entries: {report['info']}"
    )
    assert report["names"] == ["__main__.square"], "one name for one function in every process"


KERNEL_SETUP = FUNCTIONS + MAP_IN_WORKERS + "\nsquare(0)"


@pytest.fixture
def kernel(isolated_cache: Path, tmp_path: Path, count_file: Path) -> Iterator[KernelSession]:
    with open_kernel(tmp_path) as session:
        yield session


@pytest.mark.kernel
@pytest.mark.parametrize(
    "how", ["joblib", "executor-fork", pytest.param("dask", marks=pytest.mark.slow)]
)
def test_workers_of_a_kernel_share_the_cells_entries(
    how: str, kernel: KernelSession, count_file: Path
) -> None:
    execute(kernel, KERNEL_SETUP)
    results = value(kernel, f"map_in_workers({how!r}, square, range(4))")
    assert results == repr(EXPECTED), f"workers returned {results} (wrong value)"
    assert computed(count_file) == [0, 1, 2, 3]

    kernel.restart()
    execute(kernel, KERNEL_SETUP)
    assert value(kernel, "[square(x) for x in range(4)]") == repr(EXPECTED)
    assert value(kernel, "tuple(square.cache_info())[:3]") == "(5, 0, 4)"
    assert computed(count_file) == [0, 1, 2, 3], "after a restart everything must hit"


def test_wrapper_of_an_importable_function_unpickles_as_itself() -> None:
    join = pickle.loads(pickle.dumps(funcache_ipy.cache(os.path.join)))
    assert join("a", "b") == os.path.join("a", "b")
    assert pickle.loads(pickle.dumps(cached_module_level)) is cached_module_level


def test_cloudpickled_wrapper_from_a_shell_runs_and_keys_alike(shell, count_file: Path) -> None:
    cloudpickle = pytest.importorskip("cloudpickle")
    run_cell(shell, FUNCTIONS)
    run_cell(shell, "square(3)")
    copy = cloudpickle.loads(cloudpickle.dumps(shell.user_ns["square"]))
    assert copy(3) == 12, "a by-value copy must run the function, not return a marker"
    assert copy(4) == 20
    assert computed(count_file) == [3, 4], "the copy must hit the original's entry for 3"


@funcache_ipy.cache
def cached_module_level(x: int) -> int:
    return x
