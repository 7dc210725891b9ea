"""What a ``%%funcache`` hit prints: the line saying what it restored, and the transient
"restoring ..." line shown while a slow restore works.

The wording (which names come first, how many before "+N more", sizes, durations) is
the user's view of a hit; it reads best apart from the restore that gathers its facts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from funcache_ipy.analysis import CellAnalysis
from funcache_ipy.files import display_path
from funcache_ipy.notices import format_seconds
from funcache_ipy.store import Store

__all__ = ["hit_notice", "restoring_notice"]

_NOTICE_NAMES = 6  # names listed in the hit notice before "+N more"


def restoring_notice(store: Store, entry_key: str, analysis: CellAnalysis, name: str) -> str:
    """``funcache: restoring model, X (29.6 MiB) ...``: what a slow restore is doing.

    The size only from 1 MiB up: a small entry is slow because of what it re-runs.
    """
    meta = store.meta(entry_key)
    size = f" ({meta.size / 2**20:.1f} MiB)" if meta is not None and meta.size >= 2**20 else ""
    names = [n for n in analysis.bound if n not in analysis.replayed][:_NOTICE_NAMES]
    what = ", ".join(names) if names else f"cell {name}"
    return f"funcache: restoring {what}{size} ..."


def hit_notice(
    values: Mapping[str, object],
    original_seconds: float,
    analysis: CellAnalysis,
    restored: Sequence[str],
    seconds: float,
) -> str:
    """The one line a hit prints: the data it restored first, then how many imports and
    definitions it re-ran, the files it wrote back, how long it took and the run saved:
    ``funcache: restored clf, X_tr (+3 more; re-ran 2 imports/defs) from cache in 12 ms
    (original run 41.2 s)``."""
    data = [n for n in analysis.bound if n in values and n not in analysis.replayed]
    data += [n for n in values if n not in data and n not in analysis.replayed]
    rerun = [n for n in analysis.bound if n in analysis.replayed]
    what = ", ".join(data[:_NOTICE_NAMES]) if data else "the cell's output"
    extra = []
    if len(data) > _NOTICE_NAMES:
        extra.append(f"+{len(data) - _NOTICE_NAMES} more")
    if rerun:
        plural = "s" if len(rerun) > 1 else ""
        extra.append(f"re-ran {len(rerun)} import{plural}/def{plural}")
    if extra:
        what += f" ({'; '.join(extra)})"
    wrote = ""
    if restored:
        wrote = "; wrote back " + ", ".join(display_path(path) for path in restored[:_NOTICE_NAMES])
        if len(restored) > _NOTICE_NAMES:
            wrote += f" (+{len(restored) - _NOTICE_NAMES} more)"
    took, original = format_seconds(seconds), format_seconds(original_seconds)
    return f"funcache: restored {what} from cache in {took} (original run {original}){wrote}"
