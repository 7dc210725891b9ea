"""Timing and markdown helpers shared by the benchmark scripts.

Medians, not means: one GC pause or scheduler hiccup should not move a number that is
compared across tools in the same run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def per_call_us(
    call: Callable[[], object], *, repeats: int = 21, batch_seconds: float = 0.02
) -> float:
    """Median microseconds per call over ``repeats`` batches of ~``batch_seconds`` each.

    Batching amortizes the timer's own cost for sub-microsecond calls.
    """
    calls = 1
    while True:
        started = time.perf_counter()
        for _ in range(calls):
            call()
        if time.perf_counter() - started >= batch_seconds / 2 or calls >= 2**20:
            break
        calls *= 4
    samples = []
    for _ in range(repeats):
        started_ns = time.perf_counter_ns()
        for _ in range(calls):
            call()
        samples.append((time.perf_counter_ns() - started_ns) / calls / 1000)
    return statistics.median(samples)


def median_seconds(action: Callable[[], object], repeats: int, *, warmup: bool = False) -> float:
    """Median wall time of ``action`` over ``repeats`` runs (for the big, slow operations)."""
    if warmup:
        action()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def interleaved(actions: dict[str, Callable[[], T]], repeats: int) -> dict[str, list[T]]:
    """Samples of each action, taking turns, so background load hits every tool alike."""
    samples: dict[str, list[T]] = {name: [] for name in actions}
    for _ in range(repeats):
        for name, action in actions.items():
            samples[name].append(action())
    return samples


def seconds(action: Callable[[], object]) -> float:
    """Wall time of one run of ``action``."""
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table, first column left-aligned and the others right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *(line(row) for row in rows)])
