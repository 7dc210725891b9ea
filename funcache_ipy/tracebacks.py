"""Errors funcache_ipy raises to the user, shown with the user's frames only.

``UnhashableError`` from a call deep inside the wrapper reads best as an error *of the
user's line*: IPython hides frames marked ``__tracebackhide__`` but always shows the
last one, which is funcache_ipy's own ``raise``. An exception with a
``_render_traceback_`` method is rendered by IPython through it instead, so these
errors drop every frame of this package and let the shell format the rest as usual.
Outside IPython (scripts, pytest) nothing changes: the full traceback stays, which is
what a bug report needs.
"""

from __future__ import annotations

import os
import sys
import types
from typing import Any

_PACKAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "")


class ShownAsUserError(Exception):
    """Mixed into errors about the user's input; IPython shows them without our frames."""

    def _render_traceback_(self) -> list[str]:
        ipython: Any = sys.modules["IPython"]  # NB. only IPython calls this method
        shell = ipython.get_ipython()
        trimmed = without_own_frames(self.__traceback__)
        # NB. Not a list of frames IPython could skip: it always shows the last one.
        lines: list[str] = shell.InteractiveTB.structured_traceback(type(self), self, trimmed)
        return lines


class CellSyntaxError(ShownAsUserError):
    """A ``%%funcache`` cell that does not parse, shown as IPython shows a plain cell's.

    The cell is parsed inside the magic, so a plain ``SyntaxError`` would come with the
    frames of IPython's magic machinery and of this package (IPython shows every frame
    of a ``SyntaxError`` raised while code runs, and never asks it to render itself).
    This one renders as the ``SyntaxError`` alone: ``Cell In[n], line 2``, the line,
    the caret. The cell still counts as failed, so "Run All" stops there. NB. It cannot
    itself be a ``SyntaxError`` (IPython would show the frames again), so a kernel
    reports its name, ``CellSyntaxError``, where a plain cell's says ``SyntaxError``.
    """

    def __init__(self, error: SyntaxError) -> None:
        super().__init__(error.msg)
        self.error = error

    def _render_traceback_(self) -> list[str]:
        ipython: Any = sys.modules["IPython"]  # NB. only IPython calls this method
        lines: list[str] = ipython.get_ipython().SyntaxTB.structured_traceback(
            type(self.error), self.error, []
        )
        return lines


def without_own_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    """``tb`` without the frames of funcache_ipy's modules."""
    kept = []
    while tb is not None:
        if not tb.tb_frame.f_code.co_filename.startswith(_PACKAGE):
            kept.append(tb)
        tb = tb.tb_next
    trimmed = None
    for entry in reversed(kept):
        trimmed = types.TracebackType(trimmed, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return trimmed
