"""An exhausted iterator a ``%%funcache`` cell binds comes back exhausted in the same way.

*A Whirlwind Tour of Python* binds ``z = zip(L1, L2)`` and prints ``*z`` in one cell.
Pickled as is, the exhausted iterators inside ``z`` came back as iterators over an
empty sequence at position 0: equal in use, but hashed otherwise, so a cell reading
``z`` after the hit missed. Each test runs a producing and a reading cell, restarts,
and expects both to hit, with ``z`` as the run left it.
"""

from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell

from tests.cell_helpers import run_twice, runs
from tests.conftest import run_cell

EXHAUSTED = {
    "zip": "zip((1, 2, 3), ('a', 'b', 'c'))",
    "map over a list": "map(abs, [1, -2])",
    "list iterator": "iter([1, 2])",
    "reversed tuple": "reversed((1, 2))",
    "str iterator": "iter('\u00e9t\u00e9')",
    "dict items": "iter({'k': 1}.items())",
    "set iterator": "iter({1, 2})",
    "enumerate": "enumerate('ab')",
}


@pytest.mark.parametrize("case", EXHAUSTED, ids=list(EXHAUSTED))
def test_a_cell_reading_an_exhausted_iterator_hits_after_its_producer_hit(
    ip: InteractiveShell, case: str
) -> None:
    cells = [
        f"%%funcache\ntick()\nz = {EXHAUSTED[case]}\nprint(*z)",
        "%%funcache\ntick()\nrest = (type(z).__name__, list(z))",
    ]
    ran, hit = run_twice(ip, cells, "rest")
    assert runs() == 2, f"expected both cells to hit after the restart, {runs() - 2} ran again"
    assert hit == ran, "the reading cell restored another value"
    assert run_cell(ip, "(type(z).__name__, list(z))") == ran, "z is no longer exhausted"


def test_an_iterator_not_exhausted_keeps_its_position(ip: InteractiveShell) -> None:
    cells = ["%%funcache\ntick()\nz = zip((1, 2, 3), 'abc')\nfirst = next(z)", "rest = list(z)"]
    ran, hit = run_twice(ip, cells, "(first, rest)")
    assert runs() == 1, "the producing cell should hit"
    assert hit == ran == ((1, "a"), [(2, "b"), (3, "c")])
