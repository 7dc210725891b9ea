"""Hashing plain-Python containers: funcache_ipy vs ``pickle.dumps`` + xxh3 of the same value.

Why: a cell's inputs and a cached function's mutable globals are re-hashed on every run,
hits included, so hashing a big list, dict or set must cost about what serializing it
costs. ``pickle.dumps`` (C, protocol 5) followed by xxh3-128 is the reference: the same
content-addressing done at C speed, without type tags, order rules or aliasing.

Usage: ``python benchmarks/bench_hashing.py`` (about a minute, ~1 GB of RAM). Best of 3
runs per case; compare the ratio column, not the absolute times. numpy is imported if
installed, as in most notebooks (``hashing_bulk`` sorts sets of ints with it).
"""

from __future__ import annotations

import contextlib
import pickle
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import xxhash

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout first

from report import table  # noqa: E402

from funcache_ipy.hashing import hash_value  # noqa: E402

with contextlib.suppress(ImportError):
    import numpy  # noqa: F401 - loaded, as in most notebooks: sets of ints sort with it

REPEATS = 3
MIXED = (lambda i: i, lambda i: i * 0.5, lambda i: f"s{i}", lambda i: None, lambda i: i % 2 == 0)


def cases() -> list[tuple[str, Callable[[], object], Callable[[object], object]]]:
    """(name, build the value, make an equal-looking but different value from it)."""
    return [
        ("list of 1M ints", lambda: list(range(1_000_000)), lambda v: [*v[:-1], 1_000_000]),
        (
            "list of 1M floats",
            lambda: [i / 7 for i in range(1_000_000)],
            lambda v: [*v[:-1], -0.0],
        ),
        ("list of 1M str", lambda: [f"s{i}" for i in range(1_000_000)], lambda v: [*v[:-1], b"x"]),
        (
            "list of 1M mixed scalars",
            lambda: [MIXED[i % 5](i) for i in range(1_000_000)],
            lambda v: [*v[:-1], 1],  # True -> 1
        ),
        (
            "list of 100k tuples (int, str, float)",
            lambda: [(i, f"s{i}", i * 0.5) for i in range(100_000)],
            lambda v: [*v[:-1], (v[-1][0], v[-1][1], float(v[-1][0]))],
        ),
        (
            "dict of 200k str -> int",
            lambda: {f"key{i}": i for i in range(200_000)},
            lambda v: {**v, "key0": 0.0},
        ),
        ("set of 1M ints", lambda: set(range(1_000_000)), lambda v: v ^ {0, 1_000_000}),
        (
            "set of 1M random ints",  # set order is not sorted order: the sort shows
            lambda: set(random.Random(0).sample(range(2**40), 1_000_000)),
            lambda v: v ^ {-1},
        ),
        (
            "frozenset of 200k str",
            lambda: frozenset(f"s{i}" for i in range(200_000)),
            lambda v: v - {"s0"},
        ),
    ]


def best_seconds(action: Callable[[], object]) -> float:
    """Best wall time of ``REPEATS`` runs: the least disturbed by other load."""
    samples = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return min(samples)


def main() -> int:
    rows = []
    for name, build, change in cases():
        value = build()
        digest = hash_value(value)
        if hash_value(build()) != digest:
            raise SystemExit(f"{name}: an equal value hashed differently")
        if hash_value(change(value)) == digest:
            raise SystemExit(f"{name}: a changed value hashed the same (stale cache)")
        ours = best_seconds(lambda value=value: hash_value(value))
        reference = best_seconds(
            lambda value=value: xxhash.xxh3_128_digest(pickle.dumps(value, protocol=5))
        )
        rows.append(
            (
                name,
                f"{ours * 1000:.1f} ms",
                f"{reference * 1000:.1f} ms",
                f"{ours / reference:.1f}x",
            )
        )
    print(table(("value", "funcache_ipy", "pickle.dumps + xxh3", "ratio"), rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
