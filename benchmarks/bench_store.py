"""The store's two heavy paths against their references; prints markdown tables.

Why: a cached result should cost what saving and loading it with numpy costs, and looking
at the cache should not depend on how much it holds. This measures, in one run:

1. big array results (256 MB and 2 GB float64): ``Store.set`` vs ``np.save``, and
   ``Store.get`` in a new process vs ``np.load``, with the load's peak RSS growth (one
   copy of the array is the floor);
2. listing 10,000 entries over 100 cached functions: ``f.cache_info()`` and
   ``%funcache info`` through a real ``InteractiveShell``.

Usage: ``python benchmarks/bench_store.py`` (about two minutes; needs ~8 GB of RAM and
~10 GB of disk). Everything lives under one temporary directory, removed at the end,
including the HMAC key (``XDG_CONFIG_HOME``) and the IPython profile (``IPYTHONDIR``).
Asserts correctness only: a wrong value or listing aborts the run.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from report import interleaved, table

if TYPE_CHECKING:
    from funcache_ipy.store import Store

SIZES = {"256 MB": 256 * 2**20, "2 GB": 2 * 2**30}
REPEATS = {"256 MB": 9, "2 GB": 5}
FUNCTIONS = 100
CALLS = 100  # per function: 10,000 entries

# Run in a fresh interpreter with numpy (and the store) imported, as in a notebook that
# restarted its kernel. Prints wall and CPU seconds, peak RSS growth in bytes, and a check
# of the data.
_LOAD = """
    import json, time
    import numpy as np
    from funcache_ipy.store import open_store

    def memory(field):  # NB. VmHWM, not ru_maxrss: that one counts the forking parent
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith(field))
        return int(line.split()[1]) * 1024

    before = memory("VmRSS:")
    started, cpu = time.perf_counter(), time.process_time()
    array = {load}
    array[0] += 1  # writable, as a result must be
    took = [time.perf_counter() - started, time.process_time() - cpu]
    print(json.dumps([*took, memory("VmHWM:") - before, array.nbytes, float(array[1:].sum())]))
"""


class Sample(NamedTuple):
    """Wall and CPU seconds of one run: CPU time varies less on a busy machine."""

    wall: float
    cpu: float


def in_new_process(load: str) -> tuple[Sample, int, int, float]:
    """Time, peak RSS growth, bytes and checksum reported by a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_LOAD.format(load=load))],
        capture_output=True,
        text=True,
        check=True,
    )
    wall, cpu, growth, nbytes, check = json.loads(out.stdout.splitlines()[-1])
    return Sample(wall, cpu), growth, nbytes, check


def timed_write(write: Callable[[], object]) -> Sample:
    os.sync()  # NB. start without dirty pages, so no writer pays for another's writeback
    started, cpu = time.perf_counter(), time.process_time()
    if write() is False:
        raise RuntimeError("funcache could not store the array")
    return Sample(time.perf_counter() - started, time.process_time() - cpu)


def bench_big(root: Path) -> str:
    """Store and new-process load of big arrays: funcache vs numpy."""
    from funcache_ipy.store import open_store

    store = open_store(root / "big")
    rows = []
    for label, nbytes in SIZES.items():
        npy = root / "big.npy"
        saved, expected = _store_both(store, label, npy, nbytes)
        loads = interleaved(
            {
                "numpy": lambda: in_new_process(f"np.load({str(npy)!r})"),  # noqa: B023
                "funcache": lambda: in_new_process(
                    f"open_store({str(store.directory)!r}).get({label!r})"  # noqa: B023
                ),
            },
            REPEATS[label],
        )
        for tool, results in loads.items():
            for _, _, size, check in results:
                if size != nbytes or check != expected:
                    raise RuntimeError(f"{tool} loaded a wrong {label} array")
        rows += [
            _row(f"{label} store", saved["funcache"], saved["numpy"], None, nbytes),
            _row(
                f"{label} load, new process",
                [r[0] for r in loads["funcache"]],
                [r[0] for r in loads["numpy"]],
                (max(r[1] for r in loads["funcache"]), max(r[1] for r in loads["numpy"])),
                nbytes,
            ),
        ]
        store.clear()
        npy.unlink()
    header = (
        "float64 array",
        "funcache ms best/median",
        "numpy ms best/median",
        "÷ numpy best",
        "÷ numpy median",
        "CPU ÷ numpy best",
        "peak RSS growth ÷ array (funcache / numpy)",
    )
    return table(header, rows) + (
        "\n\nnumpy = np.save / np.load of a .npy file; funcache = Store.set / Store.get "
        "(authenticated envelope, every buffer checksummed). Each write makes a new file, "
        "after os.sync(); loads are timed inside a new interpreter after imports; RSS "
        "growth is the load's peak over the RSS before it. CPU = the process's user + "
        "system time, steadier than wall time when the machine is busy."
    )


def _store_both(
    store: Store, label: str, npy: Path, nbytes: int
) -> tuple[dict[str, list[Sample]], float]:
    """Samples of np.save and Store.set of a random array; and a check of its data.

    Each write makes a new file, as storing a new result does: the previous one is
    deleted first, untimed (freeing blocks is not what is compared).
    """
    from funcache_ipy.store import EntryMeta

    array = np.random.default_rng(1).random(nbytes // 8)
    meta = EntryMeta("bench", time.time(), 0.0, 0, {})

    def save() -> Sample:
        npy.unlink(missing_ok=True)
        return timed_write(lambda: np.save(npy, array))

    def store_set() -> Sample:
        store.clear("bench")
        return timed_write(lambda: store.set(label, array, meta))

    saved = interleaved({"numpy": save, "funcache": store_set}, REPEATS[label])
    return saved, float(array[1:].sum())


def _row(
    label: str,
    ours: list[Sample],
    theirs: list[Sample],
    rss: tuple[int, int] | None,
    nbytes: int,
) -> tuple[str, ...]:
    def ms(samples: list[Sample]) -> str:
        walls = [sample.wall for sample in samples]
        return f"{min(walls) * 1000:.0f} / {statistics.median(walls) * 1000:.0f}"

    def ratio(pick: Callable[[list[float]], float], field: str) -> str:
        mine = pick([getattr(sample, field) for sample in ours])
        return f"{mine / pick([getattr(sample, field) for sample in theirs]):.2f}"

    shown_rss = "" if rss is None else f"{rss[0] / nbytes:.2f} / {rss[1] / nbytes:.2f}"
    return (
        label,
        ms(ours),
        ms(theirs),
        ratio(min, "wall"),
        ratio(statistics.median, "wall"),
        ratio(min, "cpu"),
        shown_rss,
    )


def bench_listing(root: Path) -> str:
    """``cache_info()`` and ``%funcache info`` with 10,000 entries over 100 functions."""
    timings, filled = listing_timings(root)
    rows = [
        (name, f"{min(samples) * 1000:.1f}", f"{statistics.median(samples) * 1000:.1f}")
        for name, samples in timings.items()
    ]
    header = (f"{FUNCTIONS * CALLS:,} entries over {FUNCTIONS} functions", "ms best", "ms median")
    return (
        f"{table(header, rows)}\n\n"
        f"(storing the entries through the decorator took {filled:.0f} s; "
        "a function's `cache_info()` is one indexed query, `%funcache info` one scan)"
    )


def listing_timings(root: Path) -> tuple[dict[str, list[float]], float]:
    """Seconds of each listing, by what was listed; and how long storing the entries took.

    Each is timed in three states: first in the process (nothing listed yet), right after
    a new entry was stored (what a user usually sees), and again with nothing changed.
    """
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    from funcache_ipy.store import EntryMeta, open_store

    os.environ["FUNCACHE_IPY_DIR"] = str(root / "listing")
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(config=config, colors="nocolor")
    shell.run_line_magic("load_ext", "funcache_ipy")
    shell.run_line_magic("config", "FuncacheMagics.quiet = True")  # no line per function
    definitions = "".join(
        f"@funcache_ipy.cache\ndef f{i}(x):\n    return {{'x': x, 'i': {i}}}\n\n"
        for i in range(FUNCTIONS)
    )
    cell = (
        f"import funcache_ipy\n\n{definitions}"
        f"for x in range({CALLS}):\n"
        f"    for f in ({', '.join(f'f{i}' for i in range(FUNCTIONS))}):\n"
        "        f(x)\n"
    )
    started = time.perf_counter()
    shell.run_cell(cell).raise_error()
    filled = time.perf_counter() - started
    f0 = shell.user_ns["f0"]
    store = open_store()
    writes = iter(range(10**6))

    def write() -> None:
        """A new entry of another name: the listing must be read again."""
        store.set(f"touch{next(writes)}", 0, EntryMeta("bench.touch", time.time(), 0.0, 0, {}))

    def info() -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            shell.run_line_magic("funcache", "info")

    def check() -> None:
        if f0.cache_info().entries != CALLS:
            raise RuntimeError(f"f0.cache_info() lists {f0.cache_info().entries}, not {CALLS}")
        report = shell.magics_manager.registry["FuncacheMagics"].report()
        rows = [row for row in report.rows if row.name != "bench.touch"]
        if len(rows) != FUNCTIONS or any(row.entries != CALLS for row in rows):
            raise RuntimeError("%funcache info lists the wrong entries")

    timings = {
        "f0.cache_info(), first": _samples(f0.cache_info, 1),
        "f0.cache_info(), after a write": _samples(f0.cache_info, 11, before=write),
        "%funcache info, first": _samples(info, 1),
        "%funcache info, after a write": _samples(info, 5, before=write),
        "%funcache info, nothing changed": _samples(info, 5),
    }
    check()
    shell.run_line_magic("unload_ext", "funcache_ipy")
    return timings, filled


def _samples(
    action: Callable[[], object], repeats: int, before: Callable[[], object] | None = None
) -> list[float]:
    """Wall times of ``action``, each after calling ``before`` (untimed)."""
    samples = []
    for _ in range(repeats):
        if before is not None:
            before()
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return samples


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="funcache-bench-store-"))
    os.environ["XDG_CONFIG_HOME"] = str(root / "config")
    os.environ["IPYTHONDIR"] = str(root / "ipython")
    try:
        started = time.perf_counter()
        print(f"# funcache_ipy store (Python {sys.version.split()[0]}, numpy {np.__version__})\n")
        print(f"## 1. Big array results\n\n{bench_big(root)}\n", flush=True)
        print(f"## 2. Listing\n\n{bench_listing(root)}\n", flush=True)
        print(f"(total {time.perf_counter() - started:.0f} s)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
