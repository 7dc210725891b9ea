"""FuncacheWarning, and the one way to issue it so that it blames the user's code.

Every part of funcache_ipy that gives up on caching (never on a result) says so with a
:class:`FuncacheWarning`; :func:`warn` gives it the ``stacklevel`` of the first frame
outside this package, so the warning points at the user's call or cell rather than at
funcache_ipy's internals. One helper, so the stack levels cannot drift apart.
"""

from __future__ import annotations

import os
import sys
import warnings
from types import FrameType

__all__ = ["FuncacheWarning", "stacklevel", "warn"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class FuncacheWarning(UserWarning):
    """Something went wrong with caching, never with the result: it was still returned."""


def stacklevel() -> int:
    """Stack level of the first frame outside this package, so warnings blame user code."""
    level = 1
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    return level


def warn(message: str) -> None:
    """Issue a :class:`FuncacheWarning` pointing at the user's code."""
    warnings.warn(message, FuncacheWarning, stacklevel=stacklevel())
