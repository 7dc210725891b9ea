"""One line per cached function after a notebook cell: what a hit saved, why a call ran.

Cells get a notice when ``%%funcache`` restores them; a decorated function called in a
cell would otherwise hit or recompute silently. After each cell, the functions it called
get one line each: ``funcache: build_features hit x3 (saved 41.2 s)`` and, for a function
that recomputed although entries of it are stored, the first reason
``build_features recomputed: function `add_ratio` changed``. A first call says nothing:
that it runs is no news.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from funcache_ipy.decorator import CachedFunction, Tally
from funcache_ipy.keys import NOTHING_STORED
from funcache_ipy.notices import format_seconds


def lines(tallies: dict[CachedFunction[Any, Any], Tally]) -> list[str]:
    """The report of the calls in ``tallies``, one line per hitting or recomputed function."""
    report = []
    for function, tally in tallies.items():
        name = function.__qualname__
        if tally.hits:
            counts = Counter(tally.hits)
            saved = sum(function.seconds_saved([key]) * count for key, count in counts.items())
            times = f" x{len(tally.hits)}" if len(tally.hits) > 1 else ""
            report.append(f"funcache: {name} hit{times} (saved {format_seconds(saved)})")
        if tally.misses > 0:
            why = function.explain_last()
            if why is not None and not why.hit and why.reasons[:1] != (NOTHING_STORED,):
                reason = why.reasons[0] if why.reasons else "its key changed"
                report.append(f"funcache: {name} recomputed: {reason}")
    return report
