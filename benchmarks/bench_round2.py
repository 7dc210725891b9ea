"""Issue 11's six measurements side by side with their references, in one run; one table.

Why: each part of the issue has its own script (and its own, longer tables); this runs
them together on one machine, so the README's performance table comes from a single run
whose conditions are stated: the machine (cores, CPU model) and how busy it was (load
average before and after). Each part runs in a fresh interpreter of its own (IPython's
shell is a singleton, and a part's memory should not weigh on the next one) and hands
back its numbers as JSON.

1. hashing big plain containers vs ``pickle.dumps`` + xxh3-128 (``bench_hashing.py``);
2. a 256 MB array result: store vs ``np.save``, load in a new process vs ``np.load``
   (``bench_store.py``; run that script for the 2 GB case);
3. a ``%%funcache`` hit restoring a 1M-row DataFrame vs in-memory ``pickle.loads``
   (``bench_cell.py``);
4. listing 10,000 entries over 100 functions (``bench_store.py``), against the times
   before the index on name;
5. a warm hit reaching 100 notebook helpers vs the small hit (``bench_peers.py``), five
   rounds, ratio of the best and of the medians;
6. the first decorator hit in a new process (fingerprinting, versions, hashing the
   argument, loading 256 MB) vs ``np.load`` of the same array (``bench_peers.py``).

Usage: ``python benchmarks/bench_round2.py`` (two to five minutes; ~3 GB of RAM and of
disk). Asserts correctness only, as the scripts it uses do.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the sibling scripts
sys.path.insert(1, str(HERE.parent))  # this checkout's funcache_ipy first

from report import interleaved, per_call_us, table  # noqa: E402

Row = list[str]  # part, measurement, funcache, reference, ratio
ROUNDS = 5  # part 5: rounds of (small hit, 100-helper hit)
LISTING_BEFORE_MS = {"f0.cache_info(), after a write": 511.0, "%funcache info, after a write": 63e3}


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def part1_hashing() -> list[Row]:
    """Each container of ``bench_hashing.py``: best of 3 against pickle.dumps + xxh3."""
    import pickle

    import bench_hashing
    import xxhash

    from funcache_ipy.hashing import hash_value

    rows = []
    for name, build, change in bench_hashing.cases():
        value = build()
        digest = hash_value(value)
        if hash_value(build()) != digest or hash_value(change(value)) == digest:
            raise RuntimeError(f"{name}: digest not stable, or a change missed (stale cache)")
        ours = bench_hashing.best_seconds(lambda value=value: hash_value(value))
        reference = bench_hashing.best_seconds(
            lambda value=value: xxhash.xxh3_128_digest(pickle.dumps(value, protocol=5))
        )
        rows.append(
            [
                "1",
                f"hash {name}",
                _ms(ours),
                f"pickle.dumps + xxh3 {_ms(reference)}",
                _x(ours, reference),
            ]
        )
    return rows


def part2_big(root: Path) -> list[Row]:
    """256 MB: ``Store.set`` vs ``np.save``, ``Store.get`` in a new process vs ``np.load``."""
    import bench_store

    from funcache_ipy.store import open_store

    label, nbytes = "256 MB", bench_store.SIZES["256 MB"]
    store = open_store(root / "big")
    npy = root / "big.npy"
    saved, expected = bench_store._store_both(store, label, npy, nbytes)
    loads = interleaved(
        {
            "numpy": lambda: bench_store.in_new_process(f"np.load({str(npy)!r})"),
            "funcache": lambda: bench_store.in_new_process(
                f"open_store({str(store.directory)!r}).get({label!r})"
            ),
        },
        bench_store.REPEATS[label],
    )
    for tool, results in loads.items():
        if any(size != nbytes or check != expected for _, _, size, check in results):
            raise RuntimeError(f"{tool} loaded a wrong array")
    loaded = {tool: [sample for sample, *_ in results] for tool, results in loads.items()}
    return [
        _best_median(
            "2", f"{label} float64 result: store", saved["funcache"], saved["numpy"], "np.save"
        ),
        _best_median(
            "2",
            f"{label} result: load in a new process",
            loaded["funcache"],
            loaded["numpy"],
            "np.load",
        ),
    ]


def _best_median(part: str, what: str, ours: list[Any], theirs: list[Any], name: str) -> Row:
    """A row from wall-time samples: best / median each, and both ratios."""
    mine = [sample.wall for sample in ours]
    other = [sample.wall for sample in theirs]
    return [
        part,
        what,
        f"{_ms(min(mine))} / {_ms(statistics.median(mine))}",
        f"{name} {_ms(min(other))} / {_ms(statistics.median(other))}",
        f"{_x(min(mine), min(other))} / {_x(statistics.median(mine), statistics.median(other))}",
    ]


def part3_cell(root: Path) -> list[Row]:
    """The cell hit of ``bench_cell.py`` (medians of 15) vs ``pickle.loads`` of the frame."""
    import bench_cell

    times = bench_cell.measure(root)
    return [
        [
            "3",
            f"%%funcache hit restoring a 1M-row DataFrame ({times.size_mb:.0f} MiB)",
            f"{times.hit:.1f} ms (CPU {times.hit_cpu:.1f})",
            f"pickle.loads {times.loads:.1f} ms (CPU {times.loads_cpu:.1f}; "
            f"read + loads of a .pkl: {times.file_loads:.1f})",
            f"{_x(times.hit, times.loads)} (CPU {_x(times.hit_cpu, times.loads_cpu)})",
        ],
        [
            "3",
            "Store.get of that frame alone: read + verify + unpickle (CPU time)",
            f"{times.get_cpu:.1f} ms",
            f"pickle.loads {times.loads_cpu:.1f} ms",
            _x(times.get_cpu, times.loads_cpu),
        ],
        [
            "3",
            "re-hash of that frame as a later cell's input (each run)",
            f"{times.rehash:.1f} ms",
            f"pickle.loads {times.loads:.1f} ms",
            _x(times.rehash, times.loads),
        ],
    ]


def part4_listing(root: Path) -> list[Row]:
    """Listing 10,000 entries after a write (what a user sees), vs before the index."""
    import bench_store

    timings, _ = bench_store.listing_timings(root)
    rows = []
    for name, before_ms in LISTING_BEFORE_MS.items():
        best = min(timings[name])
        rows.append(
            [
                "4",
                f"{name}, 10,000 entries",
                _ms(best),
                f"before the index {before_ms:,.0f} ms",
                f"{best * 1000 / before_ms:.2g}x",
            ]
        )
    return rows


def part5_helpers(root: Path) -> list[Row]:
    """A warm hit reaching 100 helpers vs the small hit: rounds taken in turns."""
    import bench_peers

    import funcache_ipy

    small = funcache_ipy.cache(directory=str(root / "small"))(bench_peers.small)
    combined = bench_peers.notebook_with_helpers(root)["combined"]
    expected = 3 * bench_peers.HELPERS + sum(range(bench_peers.HELPERS))
    if small(3) != bench_peers.small(3) or combined(3) != {"total": expected}:
        raise RuntimeError("a wrong value")
    small_us, helpers_us = [], []
    for _ in range(ROUNDS):
        small_us.append(per_call_us(lambda: small(3)))
        helpers_us.append(per_call_us(lambda: combined(3)))
    ratios = [h / s for h, s in zip(helpers_us, small_us, strict=True)]
    return [
        [
            "5",
            f"warm hit reaching {bench_peers.HELPERS} helpers (best / median of {ROUNDS})",
            f"{min(helpers_us):.2f} / {statistics.median(helpers_us):.2f} µs",
            f"small hit {min(small_us):.2f} / {statistics.median(small_us):.2f} µs",
            f"{min(helpers_us) / min(small_us):.2f}x / {statistics.median(ratios):.2f}x",
        ]
    ]


def part6_cold(root: Path) -> list[Row]:
    """First decorator hit of a 256 MB result in a new process, vs ``np.load`` of it."""
    import bench_peers
    import numpy as np

    n = bench_peers.RESULT_BYTES // 8
    module = bench_peers._DECORATED_MODULE.format(
        funcache_dir=str(root / "dec-funcache"), joblib_dir=str(root / "dec-joblib")
    )
    (root / "bigresult.py").write_text(module)
    sys.path.insert(0, str(root))
    import bigresult  # written just above

    np.save(root / "cold.npy", bigresult.by_funcache(n))
    samples = bench_peers.interleaved(
        {
            "funcache": lambda _: bench_peers.in_new_process(
                bench_peers._DECORATED_SNIPPET.format(root=str(root), wrapper="by_funcache", n=n)
            ),
            "numpy": lambda _: bench_peers.in_new_process(
                bench_peers._LOAD_SNIPPETS["numpy"].format(path=str(root / "cold.npy"))
            ),
        },
        5,
    )
    return [
        [
            "6",
            "first hit in a new process, 256 MB result (medians of 5)",
            _ms(samples["funcache"]),
            f"np.load {_ms(samples['numpy'])}",
            _x(samples["funcache"], samples["numpy"]),
        ]
    ]


def _x(ours: float, reference: float) -> str:
    return f"{ours / reference:.2f}x"


PARTS: dict[str, Callable[[Path], list[Row]]] = {
    "1": lambda _: part1_hashing(),
    "2": part2_big,
    "3": part3_cell,
    "4": part4_listing,
    "5": part5_helpers,
    "6": part6_cold,
}


def machine() -> str:
    """Cores, CPU model, Python and the load average: what the numbers were taken on."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line for line in cpuinfo if line.startswith("model name")).split(":")[1]
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores, {model.strip()}, Python {platform.python_version()}"


def load_average() -> str:
    try:
        return ", ".join(f"{load:.2f}" for load in os.getloadavg())
    except OSError:
        return "unknown"


def run_part(part: str) -> list[Row]:
    """Run one part in a fresh interpreter, in a temporary directory of its own."""
    out = subprocess.run(
        [sys.executable, __file__, "--part", part], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"part {part} failed:\n{out.stderr}")
    rows: list[Row] = json.loads(out.stdout.splitlines()[-1])
    return rows


def main(argv: list[str]) -> int:
    if argv[:1] == ["--part"]:
        root = Path(tempfile.mkdtemp(prefix=f"funcache-round2-{argv[1]}-"))
        os.environ["XDG_CONFIG_HOME"] = str(root / "config")  # the HMAC key, too, is temporary
        os.environ["IPYTHONDIR"] = str(root / "ipython")
        try:
            print(json.dumps(PARTS[argv[1]](root)))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return 0
    before = load_average()
    started = time.perf_counter()
    rows = []
    for part in PARTS:
        rows += run_part(part)
        print(f"(part {part} done)", file=sys.stderr, flush=True)
    print(f"# Issue 11, round 2: {machine()}\n")
    print(table(("part", "measurement", "funcache_ipy", "reference", "ratio"), rows))
    print(
        f"\nLoad average (1, 5, 15 min) before: {before}; after: {load_average()}; "
        f"{time.perf_counter() - started:.0f} s in all. Ratios compare runs taken in turns "
        "in one process; absolute times move with the machine's load."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
