"""A value a hit restores keys exactly as the value the run produced (issue 6).

scikit-learn's ``Bunch`` sets an attribute in ``__init__`` that its ``__setstate__``
ignores, so its pickled copy hashes apart from it. Without stand-ins, every cell or cached
function reading a restored ``Bunch`` recomputed once after each restart. These tests drive
the decorator and real cells: the value a run stored keys as the copy a hit will return,
and nothing else changes (a value changed since it was stored, or never stored, keys as
itself). Bodies report their runs by printing (see ``test_decorator``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from IPython.core.interactiveshell import InteractiveShell

import funcache_ipy
from funcache_ipy.fingerprint import fingerprint_names
from funcache_ipy.hashing import UnhashableError
from funcache_ipy.memory import default_memory
from tests.conftest import run_cell
from tests.test_roundtrip import BunchLike


def runs(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Lines printed by function bodies and cells since the last call (hit notices left out)."""
    lines = capsys.readouterr().out.splitlines()
    return [line for line in lines if not line.startswith("funcache:")]


@funcache_ipy.cache
def load(n: int) -> BunchLike:
    print("ran load")
    return BunchLike(data=np.arange(n), name="digits")


@funcache_ipy.cache
def total(bunch: BunchLike, scale: int) -> int:
    print("ran total")
    return int(bunch["data"].sum()) * scale


@funcache_ipy.cache
def extra_keys(bunch: BunchLike) -> list[str]:
    print("ran extra_keys")
    return sorted(vars(bunch))


# ------------------------------------------------------------------ decorator


def test_a_restored_result_hits_the_next_cached_function(
    capsys: pytest.CaptureFixture[str],
) -> None:
    produced = load(5)
    assert total(produced, 2) == 20
    assert runs(capsys) == ["ran load", "ran total"]

    restored = load(5)  # a hit: an unpickled copy, as after a restart
    assert restored is not produced and "_warnings" not in vars(restored)
    assert total(restored, 2) == 20
    assert runs(capsys) == [], "the copy a hit returned keyed apart from the run's value"


def test_a_stored_result_mutated_afterwards_misses(capsys: pytest.CaptureFixture[str]) -> None:
    produced = load(4)
    assert total(produced, 1) == 6
    produced["data"] = np.arange(10)
    assert total(produced, 1) == 45, "expected 45, got a result for the old data (stale cache)"
    produced.__dict__["_warnings"] = {"a": "b"}  # the part a copy drops
    assert extra_keys(produced) == ["_warnings"]
    assert runs(capsys) == ["ran load", "ran total", "ran total", "ran extra_keys"]


def test_unstored_values_differing_in_what_a_copy_drops_do_not_collide(
    capsys: pytest.CaptureFixture[str],
) -> None:
    plain, marked = BunchLike(a=1), BunchLike(a=1)
    marked.__dict__["_warnings"] = {"note": "x"}
    del plain.__dict__["_warnings"]
    assert extra_keys(plain) == []
    assert extra_keys(marked) == ["_warnings"], "two different values shared one key"
    assert runs(capsys) == ["ran extra_keys", "ran extra_keys"]


def test_an_argument_keys_apart_from_the_arguments_before_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """References inside an argument do not depend on what the arguments before it hold,
    so only the argument that changed is named (and only it could be stood in for)."""

    @funcache_ipy.cache
    def pair(first: object, second: list[list[int]]) -> int:
        print("ran pair")
        return len(second)

    inner = [1]
    assert pair([[2], [3]], [inner, inner]) == pair([[2]], [inner, inner]) == 2
    explanation = pair.explain_last()
    assert explanation is not None
    assert explanation.reasons == ("argument `first` changed",), explanation.reasons
    assert pair([inner], [inner, inner]) == 2  # aliasing between arguments still counts
    assert runs(capsys) == ["ran pair"] * 3


# ------------------------------------------------------------------ cells


# A cell's printed output is replayed on a hit, so cells report their runs in a file.
TICK = """
def tick(name):
    with open("runs.log", "a") as log:
        log.write(name + " ")
"""


def ticks() -> list[str]:
    """The names cells passed to ``tick()`` so far, in order."""
    log = Path("runs.log")
    return log.read_text().split() if log.exists() else []


@pytest.fixture
def ip(shell: InteractiveShell) -> Iterator[InteractiveShell]:
    shell.extension_manager.load_extension("funcache_ipy")
    restart(shell)
    yield shell
    shell.extension_manager.unload_extension("funcache_ipy")
    default_memory.enabled = True


def restart(ip: InteractiveShell) -> None:
    """An empty namespace, as after a kernel restart; the plain cells run again."""
    ip.reset(new_session=False)
    run_cell(ip, TICK)
    ip.user_ns["BunchLike"] = BunchLike


CELLS = [
    "%%funcache\nimport numpy as np\ndigits = BunchLike(data=np.arange(6))\ntick('load')",
    "%%funcache\nsize = len(digits['data'])\ntick('size')",
    "%%funcache\nlabels = sorted(digits)\ntick('labels')",
]


def test_every_cell_hits_after_a_restart(ip: InteractiveShell) -> None:
    for cell in CELLS:
        run_cell(ip, cell)
    assert ticks() == ["load", "size", "labels"]
    restart(ip)
    for cell in CELLS:  # the first hits and restores a copy; the others must hit too
        run_cell(ip, cell)
    assert ticks() == ["load", "size", "labels"], "a cell reading the restored copy ran again"
    assert ip.user_ns["size"] == 6 and ip.user_ns["labels"] == ["data"]


def test_a_cell_reading_a_stored_value_changed_since_runs(ip: InteractiveShell) -> None:
    run_cell(ip, CELLS[0])
    run_cell(ip, CELLS[1])
    run_cell(ip, "digits['data'] = np.arange(9)")
    run_cell(ip, CELLS[1])
    assert ip.user_ns["size"] == 9, f"expected 9, got {ip.user_ns['size']} (stale cache)"
    assert ticks() == ["load", "size", "size"]


WIDTH = """
import funcache_ipy

@funcache_ipy.cache
def width():
    tick("width")
    return len(digits["data"])
"""


def test_a_cached_function_reading_a_stored_global_hits_after_a_restart(
    ip: InteractiveShell,
) -> None:
    """A global read by a cached function's code is a top level of its key too."""
    for cell in (CELLS[0], WIDTH, "w = width()"):
        run_cell(ip, cell)
    restart(ip)
    for cell in (CELLS[0], WIDTH, "w = width()"):  # digits is now the copy
        run_cell(ip, cell)
    assert ip.user_ns["w"] == 6
    assert ticks() == ["load", "width"], "the function ran again for the restored copy"


def test_sklearn_bunch_cells_hit_after_a_restart(ip: InteractiveShell) -> None:
    pytest.importorskip("sklearn")
    cells = [
        "%%funcache\nfrom sklearn.datasets import load_iris\niris = load_iris()\ntick('load')",
        "%%funcache\nrows = iris.data.shape[0]\ntick('rows')",
    ]
    for cell in cells:
        run_cell(ip, cell)
    restart(ip)
    for cell in cells:
        run_cell(ip, cell)
    assert ip.user_ns["rows"] == 150
    assert ticks() == ["load", "rows"], "a cell reading the restored Bunch ran again"


# ------------------------------------------------------------------ figures stay linear


FIGURE = "fig, ax = plt.subplots()\nfor i in range(50):\n    ax.plot([1, 2, 3], [i, i + 1, i])\n"
# NB. Generous: hashing a figure takes well under a second; exponential hashing never ends.
_BOUND = 30.0


@pytest.fixture
def pyplot(ip: InteractiveShell) -> Iterator[None]:
    pytest.importorskip("matplotlib")
    run_cell(ip, "import matplotlib\nmatplotlib.use('agg')\nimport matplotlib.pyplot as plt")
    run_cell(ip, "plt.close('all')")
    yield
    run_cell(ip, "plt.close('all')")


def key_inputs(ip: InteractiveShell, names: list[str]) -> None:
    with contextlib.suppress(UnhashableError):  # what counts here is that keying ends
        fingerprint_names(ip.user_ns, names)


@pytest.mark.filterwarnings("ignore:funcache. cell .* ran uncached")  # a figure may be unhashable
def test_a_figure_as_a_cell_input_is_keyed_in_bounded_time(
    ip: InteractiveShell, pyplot: None
) -> None:
    run_cell(ip, FIGURE)
    started = time.perf_counter()
    key_inputs(ip, ["fig"])
    key_inputs(ip, ["ax"])
    run_cell(ip, "%%funcache\nlines = len(ax.lines)")
    assert ip.user_ns["lines"] == 50
    elapsed = time.perf_counter() - started
    assert elapsed < _BOUND, f"keying a figure took {elapsed:.0f} s (exponential hashing?)"


def test_a_stored_figure_is_not_copied(ip: InteractiveShell, pyplot: None) -> None:
    """A copy of a pyplot figure would register itself with pyplot as a new figure."""
    started = time.perf_counter()
    run_cell(ip, "%%funcache\n" + FIGURE)
    numbers = run_cell(ip, "plt.get_fignums()")
    assert numbers == [1], f"storing the figure made pyplot figures {numbers}"
    elapsed = time.perf_counter() - started
    assert elapsed < _BOUND, f"storing a figure took {elapsed:.0f} s"
