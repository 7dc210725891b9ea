"""Hit latency of a ``%%funcache`` cell restoring a 1M-row DataFrame; prints a markdown table.

Why: a cached cell is only worth it if restoring is close to the cheapest way to get the
frame back at all. The floor is ``pickle.loads`` of the frame's bytes already in memory;
a hit also hashes the cell's inputs, reads and verifies the entry from disk, binds the
names and prints its notice. The cell runs through a real ``InteractiveShell``, so the
IPython machinery (transformers, magics dispatch) is in the measurement too.

Usage: ``python benchmarks/bench_cell.py`` (a few seconds). Everything is written under a
temporary directory, removed at the end, including the HMAC key.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from report import median_seconds, table

ROWS = 1_000_000
SETUP = f"""
import numpy as np
import pandas as pd
ROWS = {ROWS}
"""
CELL = """%%funcache --quiet
rng = np.random.default_rng(0)
frame = pd.DataFrame(
    {
        "id": np.arange(ROWS),
        "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 10**6, ROWS), "s"),
        "value": rng.normal(size=ROWS),
        "group": pd.Categorical(rng.choice(["north", "south", "east", "west"], ROWS)),
    }
)
"""


def median_ms(action: Callable[[], object]) -> float:
    """Median milliseconds of ``action`` over 15 runs, after one warm-up."""
    return median_seconds(action, repeats=15, warmup=True) * 1000


def median_cpu_ms(action: Callable[[], object]) -> float:
    """Median CPU milliseconds (user + system) of ``action`` over 15 runs, after a warm-up.

    Steadier than wall time on a busy machine: waiting for a core is not counted.
    """
    action()
    samples = []
    for _ in range(15):
        started = time.process_time()
        action()
        samples.append(time.process_time() - started)
    return statistics.median(samples) * 1000


class CellTimes(NamedTuple):
    """Milliseconds (medians) of one run of :func:`measure`."""

    miss: float
    hit: float
    loads: float
    file_loads: float
    empty_cell: float
    rehash: float  # hashing the frame as the input of a later cell
    size_mb: float
    hit_cpu: float  # CPU time (user + system), medians too
    loads_cpu: float
    get_cpu: float  # Store.get of the frame alone: read + verify + unpickle


def measure(root: Path) -> CellTimes:
    """Time a miss, then hits of the cell, against ``pickle.loads`` of the same frame.

    ``root`` holds the cache, the HMAC key and the IPython profile (set in the environment:
    call once per process, before anything opens a store).
    """
    os.environ["FUNCACHE_IPY_DIR"] = str(root / "cache")
    os.environ["XDG_CONFIG_HOME"] = str(root / "config")
    os.environ["IPYTHONDIR"] = str(root / "ipython")  # the shell's profile, too
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.hist_file = ":memory:"  # nothing left to write at exit
    shell = InteractiveShell.instance(config=config)
    shell.run_cell("%load_ext funcache_ipy", store_history=False).raise_error()
    shell.run_cell(SETUP, store_history=False).raise_error()

    def run_cell() -> None:
        # NB. stdout swallowed: a hit replays the cell's output (none here) and IPython
        # echoes nothing for an assignment, but keep the table readable regardless.
        with contextlib.redirect_stdout(io.StringIO()):
            shell.run_cell(CELL, store_history=True).raise_error()

    started = time.perf_counter()
    run_cell()
    miss_ms = (time.perf_counter() - started) * 1000
    frame = shell.user_ns["frame"]
    payload = pickle.dumps(frame, protocol=5)
    pickled = root / "frame.pkl"
    pickled.write_bytes(payload)
    hit_ms = median_ms(run_cell)
    if not shell.user_ns["frame"].equals(pickle.loads(payload)):
        raise RuntimeError("the hit restored a different frame")
    loads_ms = median_ms(lambda: pickle.loads(payload))
    file_ms = median_ms(lambda: pickle.loads(pickled.read_bytes()))
    empty_ms = median_ms(lambda: shell.run_cell("pass", store_history=True))
    from funcache_ipy.fingerprint import hash_content

    rehash_ms = median_ms(lambda: hash_content(frame))
    size_mb = frame.memory_usage(deep=True).sum() / 2**20
    hit_cpu, loads_cpu = median_cpu_ms(run_cell), median_cpu_ms(lambda: pickle.loads(payload))
    from funcache_ipy.store import EntryMeta, Store

    store = Store(root / "frame-store")  # NB. no hot layer for 24 MiB: each get reads the file
    store.set("frame", frame, EntryMeta("frame", time.time(), 0.0, 0, {}))
    get_cpu = median_cpu_ms(lambda: store.get("frame"))
    store.close()
    shell.run_cell("%unload_ext funcache_ipy", store_history=False)
    return CellTimes(
        miss_ms,
        hit_ms,
        loads_ms,
        file_ms,
        empty_ms,
        rehash_ms,
        size_mb,
        hit_cpu,
        loads_cpu,
        get_cpu,
    )


def main() -> int:
    """Print the table of :func:`measure`."""
    root = Path(tempfile.mkdtemp(prefix="funcache-bench-cell-"))
    try:
        times = measure(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = [
        ("first run (miss: compute + store)", f"{times.miss:.1f}", ""),
        ("%%funcache hit", f"{times.hit:.1f}", f"{times.hit / times.loads:.2f}"),
        ("%%funcache hit, CPU time", f"{times.hit_cpu:.1f}", ""),
        (
            "pickle.loads, CPU time (÷: hit ÷ loads in CPU time)",
            f"{times.loads_cpu:.1f}",
            f"{times.hit_cpu / times.loads_cpu:.2f}",
        ),
        (
            "Store.get of the frame alone (read + verify + unpickle), CPU time",
            f"{times.get_cpu:.1f}",
            f"{times.get_cpu / times.loads_cpu:.2f}",
        ),
        ("pickle.loads of the frame (in memory)", f"{times.loads:.1f}", "1.00"),
        (
            "read + pickle.loads of a .pkl file",
            f"{times.file_loads:.1f}",
            f"{times.file_loads / times.loads:.2f}",
        ),
        ("(run_cell('pass') overhead)", f"{times.empty_cell:.2f}", ""),
        (
            "hashing the frame (a later cell reading it)",
            f"{times.rehash:.1f}",
            f"{times.rehash / times.loads:.2f}",
        ),
    ]
    print(f"# %%funcache cell restoring a {ROWS:,}-row DataFrame ({times.size_mb:.0f} MiB)\n")
    print(table(("operation", "ms", "÷ pickle.loads"), rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
