"""A warm hit re-checks every name its fingerprint read: rebinding any of them recomputes.

The check is generated code, one identity test per name; these edits rebind names at
every position of a long list and names that look like the generated code's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import funcache_ipy

HELPERS = 100


def notebook(directory: Path, names: list[str]) -> dict[str, Any]:
    """Globals standing in for a notebook's: helpers ``names`` and a cached ``total``."""
    helpers = "".join(f"def {name}(x):\n    return x + {i}\n" for i, name in enumerate(names))
    source = (
        f"{helpers}\n@funcache_ipy.cache(directory={str(directory)!r})\n"
        f"def total(x):\n    return sum(h(x) for h in ({', '.join(names)},))\n"
    )
    namespace: dict[str, Any] = {"__name__": "__main__", "funcache_ipy": funcache_ipy}
    exec(compile(source, "<notebook cell>", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("edited", [0, 57, HELPERS - 1], ids=["first", "middle", "last"])
def test_rebinding_any_of_many_helpers_recomputes(tmp_path: Path, edited: int) -> None:
    names = [f"h{i}" for i in range(HELPERS)]
    ns = notebook(tmp_path, names)
    base = sum(range(HELPERS))
    assert ns["total"](0) == base and ns["total"](0) == base
    assert ns["total"].cache_info().hits == 1, "an unchanged notebook must hit"
    exec(f"def h{edited}(x):\n    return x + 1000 + {edited}\n", ns)
    got = ns["total"](0)
    assert got == base + 1000, f"expected {base + 1000}, got {got} (stale cache)"


@pytest.mark.parametrize("name", ["_seen0", "_seen_0", "_seen", "bind", "check"])
def test_helpers_named_like_the_generated_check_are_still_checked(
    tmp_path: Path, name: str
) -> None:
    ns = notebook(tmp_path, [name, "other"])
    assert ns["total"](0) == 1 and ns["total"](0) == 1
    exec(f"def {name}(x):\n    return x + 10\n", ns)
    got = ns["total"](0)
    assert got == 11, f"expected 11, got {got} (stale cache)"
