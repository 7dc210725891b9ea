"""The MISSING sentinel: "not in the cache", distinct from a cached ``None``.

Every tier, the decorator and the cell pipeline compare against this one object, so it
lives below all of them.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MISSING", "Missing"]


class Missing:
    """Type of :data:`MISSING`; ``None`` is a valid cached value, so a miss needs its own."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = Missing()
