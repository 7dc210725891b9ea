"""funcache_ipy side by side with its peers, in one run; prints markdown tables.

Why: "code-aware and durable" must not mean "slow". This measures the costs a notebook
user pays, against the tools they would otherwise use, on the same machine in the same
run so the ratios are meaningful:

1. warm hit of a small call (functools.lru_cache, diskcache, joblib, cachier, funcache);
2. warm hit of a function reaching 100 notebook-defined helpers (the price of tracking
   code), and whether each tool recomputes after one helper is redefined;
3. hashing a 512 MB float64 argument (funcache vs ``joblib.hash``), plus a one-element
   change that must change the digest;
4. a 256 MB array result: storing it, and loading it in a new process, vs numpy and joblib.

Usage: ``python benchmarks/bench_peers.py`` (about a minute; needs ~2 GB of RAM and disk).
Everything is written under one temporary directory, removed at the end, including the
HMAC key (``XDG_CONFIG_HOME`` points into it).
"""

from __future__ import annotations

import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diskcache
import joblib
import numpy as np
import xxhash
from cachier import cachier
from report import median_seconds, per_call_us, table

import funcache_ipy
from funcache_ipy.hashing import hash_value
from funcache_ipy.store import EntryMeta, open_store

HASH_BYTES = 512 * 2**20
RESULT_BYTES = 256 * 2**20
HELPERS = 100


# ------------------------------------------------------------------- 1. small warm hit


def small(x: int) -> dict[str, Any]:
    """A cheap call with a small, mutable result: what most memoized notebook calls return."""
    return {"x": x, "square": x * x, "tags": ["small", "dict"]}


def bench_small_hit(root: Path) -> tuple[str, float]:
    """Warm hit of ``small(3)`` for every peer; returns the table and funcache's µs."""
    peers: dict[str, Callable[[int], dict[str, Any]]] = {
        "functools.lru_cache (memory only)": functools.lru_cache(maxsize=None)(small),
        "diskcache.Cache.memoize": diskcache.Cache(str(root / "diskcache")).memoize()(small),
        "joblib.Memory.cache": joblib.Memory(str(root / "joblib"), verbose=0).cache(small),
        "cachier (pickle backend)": cachier(cache_dir=str(root / "cachier"))(small),
        "funcache_ipy.cache": funcache_ipy.cache(directory=str(root / "funcache"))(small),
    }
    timings = {}
    for name, cached in peers.items():
        if cached(3) != small(3) or cached(3) != small(3):
            raise RuntimeError(f"{name} returned a wrong value")
        timings[name] = per_call_us(lambda cached=cached: cached(3))
    ours = timings["funcache_ipy.cache"]
    rows = [(name, f"{us:.2f}", f"{us / ours:.2f}") for name, us in timings.items()]
    text = table(("warm hit of small(3)", "µs/call", "÷ funcache"), rows)
    ratio = ours / timings["diskcache.Cache.memoize"]
    return f"{text}\n\nfuncache / diskcache = {ratio:.2f}", ours


# ----------------------------------------------------------- 2. 100 notebook helpers


def notebook_with_helpers(root: Path) -> dict[str, Any]:
    """A namespace standing in for a notebook's globals: h0..h99 and a cached ``combined``.

    ``combined`` references every helper, so its fingerprint covers 100 user functions;
    ``__name__`` is ``__main__`` as in a kernel, which marks them as user code.
    """
    helpers = "\n".join(f"def h{i}(x):\n    return x + {i}\n" for i in range(HELPERS))
    chain = ", ".join(f"h{i}" for i in range(HELPERS))
    source = helpers + textwrap.dedent(
        f"""
        @funcache_ipy.cache(directory={str(root / "helpers")!r})
        def combined(x):
            return {{"total": sum(h(x) for h in ({chain}))}}

        def plain(x):
            return {{"total": sum(h(x) for h in ({chain}))}}
        """
    )
    namespace: dict[str, Any] = {"__name__": "__main__", "funcache_ipy": funcache_ipy}
    exec(compile(source, "<notebook cell>", "exec"), namespace)
    return namespace


def bench_helpers(root: Path, small_hit_us: float) -> str:
    """Hit cost with 100 tracked helpers, and who notices when one helper changes."""
    ns = notebook_with_helpers(root)
    combined = ns["combined"]
    expected = 3 * HELPERS + sum(range(HELPERS))
    if combined(3) != {"total": expected}:
        raise RuntimeError("combined(3) returned a wrong value")
    hit_us = per_call_us(lambda: combined(3))

    plain = ns["plain"]
    peers = {
        "diskcache.Cache.memoize": diskcache.Cache(str(root / "dc-helpers")).memoize()(plain),
        "joblib.Memory.cache": joblib.Memory(str(root / "jl-helpers"), verbose=0).cache(plain),
        "functools.lru_cache": functools.lru_cache(maxsize=None)(plain),
    }
    with warnings.catch_warnings():  # joblib warns that it cannot read exec'd source
        warnings.simplefilter("ignore")
        for cached in peers.values():
            cached(3)
        exec("def h57(x):\n    return x + 1057\n", ns)  # the user edits one helper
        edited = expected + 1000
        fresh = {"funcache_ipy.cache": combined(3)["total"] == edited}
        fresh.update({name: cached(3)["total"] == edited for name, cached in peers.items()})
    if not fresh["funcache_ipy.cache"]:
        raise RuntimeError("funcache served a stale result after h57 changed")

    rows = [
        ("funcache small(3) hit", f"{small_hit_us:.2f}", "1.00"),
        (
            f"funcache hit reaching {HELPERS} helpers",
            f"{hit_us:.2f}",
            f"{hit_us / small_hit_us:.2f}",
        ),
    ]
    verdicts = [(name, "recomputed" if ok else "STALE result") for name, ok in fresh.items()]
    return "\n\n".join(
        [
            table(("warm hit", "µs/call", "÷ small hit"), rows),
            table(("after redefining h57", "outcome"), verdicts),
        ]
    )


# ------------------------------------------------------------------ 3. hashing 512 MB


def bench_hashing() -> str:
    """Throughput of hashing a 512 MB float64 array, and a one-element change detected."""
    array = np.random.default_rng(0).random(HASH_BYTES // 8)
    size_gb = array.nbytes / 1e9
    ours = median_seconds(lambda: hash_value(array), repeats=5)
    theirs = median_seconds(lambda: joblib.hash(array), repeats=2)
    raw = median_seconds(lambda: xxhash.xxh3_128(array).digest(), repeats=5)

    before = hash_value(array)
    middle = array.size // 2
    original = array[middle]
    array[middle] = np.nextafter(original, np.inf)  # the smallest possible change
    changed = hash_value(array)
    array[middle] = original
    if changed == before or hash_value(array) != before:
        raise RuntimeError("funcache's digest missed a one-element change (or is unstable)")

    rows = [
        ("funcache_ipy.hashing.hash_value", f"{size_gb / ours:.1f}", f"{ours * 1000:.0f}"),
        ("joblib.hash", f"{size_gb / theirs:.1f}", f"{theirs * 1000:.0f}"),
        ("(ceiling: raw xxh3_128 of the buffer)", f"{size_gb / raw:.1f}", f"{raw * 1000:.0f}"),
    ]
    text = table(("hash a 512 MB float64 array", "GB/s", "ms"), rows)
    return (
        f"{text}\n\nfuncache is {theirs / ours:.1f}x faster than joblib.hash; "
        "flipping one element's last bit changes the digest, restoring it restores the digest."
    )


# ------------------------------------------------------------ 4. a 256 MB array result

# Timed inside a fresh interpreter, numpy already imported (as it is in any notebook that
# made the array): what "Restart kernel" then "load" costs. Each prints elapsed seconds.
_LOAD_SNIPPETS = {
    "numpy": """
        import time, numpy as np
        t = time.perf_counter(); a = np.load({path!r}); a[0] += 1
        print(time.perf_counter() - t)
    """,
    "joblib": """
        import time, joblib, numpy
        t = time.perf_counter(); a = joblib.load({path!r}); a[0] += 1
        print(time.perf_counter() - t)
    """,
    "funcache": """
        import time, numpy
        from funcache_ipy.store import open_store
        t = time.perf_counter(); a = open_store({path!r}).get({key!r}); a[0] += 1
        print(time.perf_counter() - t)
    """,
}
# The same through each tool's decorator: a module in a fresh process, first call hits.
_DECORATED_MODULE = """
import joblib
import numpy as np

import funcache_ipy


def make(n):
    return np.arange(n, dtype=np.float64)


by_funcache = funcache_ipy.cache(directory={funcache_dir!r})(make)
by_joblib = joblib.Memory({joblib_dir!r}, verbose=0).cache(make)
"""
_DECORATED_SNIPPET = """
    import sys, time
    sys.path.insert(0, {root!r})
    import bigresult
    t = time.perf_counter(); a = bigresult.{wrapper}({n}); a[0] += 1
    print(time.perf_counter() - t)
"""


def in_new_process(snippet: str) -> float:
    """Seconds reported by ``snippet`` run in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(snippet)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.split()[-1])


def interleaved(actions: dict[str, Callable[[int], float]], repeats: int) -> dict[str, float]:
    """Median seconds of each action (called with the attempt number), taking turns.

    Taking turns spreads background load and the kernel's writeback of earlier writes
    evenly over the tools, instead of billing it to whichever runs last.
    """
    samples: dict[str, list[float]] = {name: [] for name in actions}
    for attempt in range(repeats):
        for name, action in actions.items():
            samples[name].append(action(attempt))
    return {name: statistics.median(times) for name, times in samples.items()}


def bench_big_result(root: Path) -> str:
    """Store and new-process load of a 256 MB array: funcache vs joblib vs numpy."""
    array = np.random.default_rng(1).random(RESULT_BYTES // 8)
    store = open_store(root / "big")
    meta = EntryMeta("bench", time.time(), 0.0, 0, {})

    def timed_write(write: Callable[[], object]) -> float:
        os.sync()  # NB. start from no dirty pages, so no tool pays for another's writeback
        started = time.perf_counter()
        if write() is False:
            raise RuntimeError("funcache could not store the array")
        return time.perf_counter() - started

    repeats = 5
    saved = interleaved(
        {
            "numpy": lambda i: timed_write(lambda: np.save(root / f"a{i}.npy", array)),
            "joblib": lambda i: timed_write(lambda: joblib.dump(array, root / f"a{i}.joblib")),
            "funcache": lambda i: timed_write(lambda: store.set(f"a{i}", array, meta)),
        },
        repeats,
    )
    last = repeats - 1
    loaded = interleaved(
        {
            "numpy": lambda _: in_new_process(
                _LOAD_SNIPPETS["numpy"].format(path=str(root / f"a{last}.npy"))
            ),
            "joblib": lambda _: in_new_process(
                _LOAD_SNIPPETS["joblib"].format(path=str(root / f"a{last}.joblib"))
            ),
            "funcache": lambda _: in_new_process(
                _LOAD_SNIPPETS["funcache"].format(path=str(store.directory), key=f"a{last}")
            ),
        },
        repeats,
    )

    module = _DECORATED_MODULE.format(
        funcache_dir=str(root / "dec-funcache"), joblib_dir=str(root / "dec-joblib")
    )
    (root / "bigresult.py").write_text(module)
    sys.path.insert(0, str(root))
    import bigresult  # written just above

    n = RESULT_BYTES // 8
    bigresult.by_funcache(n)
    bigresult.by_joblib(n)
    decorated = interleaved(
        {
            wrapper: lambda _, wrapper=wrapper: in_new_process(
                _DECORATED_SNIPPET.format(root=str(root), wrapper=wrapper, n=n)
            )
            for wrapper in ("by_funcache", "by_joblib")
        },
        repeats,
    )

    def row(label: str, ours: float, joblib_s: float, numpy_s: float | None) -> tuple[str, ...]:
        """One table row; the decorator row has no numpy time of its own and uses np.load."""
        base = loaded["numpy"] if numpy_s is None else numpy_s
        shown = "" if numpy_s is None else f"{numpy_s * 1000:.0f}"
        return (
            label,
            f"{ours * 1000:.0f}",
            f"{joblib_s * 1000:.0f}",
            shown,
            f"{ours / base:.2f}",
            f"{joblib_s / base:.2f}",
        )

    rows = [
        row("store (same process)", saved["funcache"], saved["joblib"], saved["numpy"]),
        row("load in a new process", loaded["funcache"], loaded["joblib"], loaded["numpy"]),
        row(
            "decorator hit in a new process",
            decorated["by_funcache"],
            decorated["by_joblib"],
            None,
        ),
    ]
    header = (
        "256 MB float64 result",
        "funcache ms",
        "joblib ms",
        "numpy ms",
        "funcache ÷ numpy",
        "joblib ÷ numpy",
    )
    return table(header, rows) + (
        "\n\nnumpy = np.save / np.load of a .npy file; funcache = Store.set / Store.get "
        "(authenticated envelope); joblib = joblib.dump / joblib.load. Loads are timed inside "
        "the new interpreter after `import numpy`; the decorator row (first call after "
        "importing the module) adds fingerprinting the function and hashing the argument."
    )


# ------------------------------------------------------------------------------- main


def main() -> int:
    """Run every section in a throw-away directory and print the tables."""
    root = Path(tempfile.mkdtemp(prefix="funcache-bench-"))
    os.environ["XDG_CONFIG_HOME"] = str(root / "config")  # the HMAC key, too, is temporary
    try:
        started = time.perf_counter()
        print(
            f"# funcache_ipy vs peers (Python {sys.version.split()[0]}, numpy {np.__version__})\n"
        )
        small_text, small_us = bench_small_hit(root)
        sections: list[tuple[str, Callable[[], str]]] = [
            ("1. Warm hit, small call", lambda: small_text),
            ("2. Warm hit through 100 notebook helpers", lambda: bench_helpers(root, small_us)),
            ("3. Hashing a 512 MB argument", bench_hashing),
            ("4. A 256 MB array result", lambda: bench_big_result(root)),
        ]
        for title, run in sections:
            print(f"## {title}\n\n{run()}\n", flush=True)
        print(f"(total {time.perf_counter() - started:.0f} s)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
