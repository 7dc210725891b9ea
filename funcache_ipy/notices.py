"""How funcache_ipy's messages reach a notebook: one plain line, not a warning block.

funcache_ipy says what it did not cache (and why) through :class:`FuncacheWarning`, so
scripts see real warnings and ``warnings`` filters work as everywhere (``error`` raises,
``ignore`` hides, ``catch_warnings`` records). Shown the default way in a notebook, a
warning reads like an error: a temporary file path (``/tmp/ipykernel_1/2.py:1:``), the
category, and the cell's whole source as an escaped ``run_cell_magic(...)`` call.

Inside IPython, :func:`show_plainly` therefore replaces only how a FuncacheWarning is
*displayed*: the message alone, on stdout, beside the hit notices. Every other warning
goes to the display it had.
"""

from __future__ import annotations

import functools
import sys
import warnings
from typing import Any, TextIO

from funcache_ipy.warning import FuncacheWarning

_PREFIX = "funcache: "


@functools.cache
def show_plainly() -> None:
    """Display FuncacheWarnings as one line from now on (installed once per process)."""
    shown = warnings.showwarning

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if not issubclass(category, FuncacheWarning):
            shown(message, category, filename, lineno, file, line)
            return
        text = str(message)
        print(text if text.startswith(_PREFIX) else _PREFIX + text, file=sys.stdout)

    warnings.showwarning = show


def in_ipython() -> bool:
    """Whether an IPython shell (a kernel or the terminal) runs this process."""
    module: Any = sys.modules.get("IPython")
    return module is not None and module.get_ipython() is not None


def format_seconds(seconds: float) -> str:
    """``41.2 s``, ``350 ms``, ``2 min 5 s``: a duration as a notice shows it."""
    if seconds < 0.001:
        return "<1 ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"
