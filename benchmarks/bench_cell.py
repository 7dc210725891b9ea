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
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

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


def main() -> int:
    """Time a miss, then hits of the cell, against ``pickle.loads`` of the same frame."""
    root = Path(tempfile.mkdtemp(prefix="funcache-bench-cell-"))
    os.environ["FUNCACHE_IPY_DIR"] = str(root / "cache")
    os.environ["XDG_CONFIG_HOME"] = str(root / "config")
    os.environ["IPYTHONDIR"] = str(root / "ipython")  # the shell's profile, too
    try:
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
        hit_ms = median_ms(run_cell)
        frame = shell.user_ns["frame"]
        payload = pickle.dumps(frame, protocol=5)
        loads_ms = median_ms(lambda: pickle.loads(payload))
        pickled = root / "frame.pkl"
        pickled.write_bytes(payload)
        file_ms = median_ms(lambda: pickle.loads(pickled.read_bytes()))
        empty_ms = median_ms(lambda: shell.run_cell("pass", store_history=True))

        rows = [
            ("first run (miss: compute + store)", f"{miss_ms:.1f}", ""),
            ("%%funcache hit", f"{hit_ms:.1f}", f"{hit_ms / loads_ms:.2f}"),
            ("pickle.loads of the frame (in memory)", f"{loads_ms:.1f}", "1.00"),
            ("read + pickle.loads of a .pkl file", f"{file_ms:.1f}", f"{file_ms / loads_ms:.2f}"),
            ("(run_cell('pass') overhead)", f"{empty_ms:.2f}", ""),
        ]
        size_mb = frame.memory_usage(deep=True).sum() / 2**20
        print(f"# %%funcache cell restoring a {ROWS:,}-row DataFrame ({size_mb:.0f} MiB)\n")
        print(table(("operation", "ms", "÷ pickle.loads"), rows))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
