"""``%%funcache`` and ``%funcache`` through a real IPython ``InteractiveShell``.

Each test gets a clean namespace with the extension loaded (and unloaded afterwards).
A cell's body counts its real runs with ``tick()``, which appends to ``runs.log`` in
the test's working directory: a side effect no fingerprint sees, so a hit and a run
are told apart without trusting the cache's own notice. ``ip.reset()`` stands in for
a kernel restart (an empty namespace); real kernels are tested in ``test_kernel.py``.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest
from IPython.core.displaypub import CapturingDisplayPublisher
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from funcache_ipy import magics
from funcache_ipy.memory import default_memory
from funcache_ipy.store import FuncacheWarning, open_store
from tests.cell_helpers import TICK, restart, runs
from tests.conftest import run_cell


def cell_magics(ip: InteractiveShell) -> magics.FuncacheMagics:
    registered = ip.magics_manager.registry["FuncacheMagics"]
    assert isinstance(registered, magics.FuncacheMagics)
    return registered


def error_of(ip: InteractiveShell, code: str) -> BaseException | None:
    result = ip.run_cell(code, store_history=True)
    return result.error_in_exec or result.error_before_exec


# ------------------------------------------------------------------ hits and misses


def test_rerun_hits_and_restores_bound_names(ip: InteractiveShell) -> None:
    cell = "%%funcache\ntick()\nx = 2\ny = x * 21\n"
    run_cell(ip, cell)
    ip.user_ns.update(x=0, y=0)
    run_cell(ip, cell)
    assert runs() == 1, "second run should be a hit"
    assert (ip.user_ns["x"], ip.user_ns["y"]) == (2, 42)


def test_last_value_is_returned_on_hit_and_semicolon_hides_it(ip: InteractiveShell) -> None:
    cell = "%%funcache\ntick()\n[1, 2, 3]\n"
    assert run_cell(ip, cell) == [1, 2, 3]
    assert run_cell(ip, cell) == [1, 2, 3]
    assert runs() == 1
    assert ip.user_ns["_"] == [1, 2, 3], "the value should reach Out like any result"
    assert run_cell(ip, "%%funcache\n[1, 2, 3];\n") is None


def test_input_variable_change_misses(ip: InteractiveShell) -> None:
    cell = "%%funcache\ntick()\ntotal = SCALE * 4\n"
    run_cell(ip, "SCALE = 2")
    run_cell(ip, cell)
    run_cell(ip, "SCALE = 3")
    run_cell(ip, cell)
    total = ip.user_ns["total"]
    assert total == 12, f"expected 12, got {total} (stale cache)"
    run_cell(ip, "SCALE = 2")
    run_cell(ip, cell)
    assert ip.user_ns["total"] == 8
    assert runs() == 2, "reverting the input should hit the first entry again"


@pytest.mark.parametrize(
    ("edited", "hits"),
    [
        ("%%funcache\n# a comment\ntick()\n\n\nvalue = 7  # why seven\n", True),
        ("%%funcache\ntick()\nvalue = (7)\n", True),
        ("%%funcache\ntick()\nvalue = 8\n", False),
        ("%%funcache\ntick()\nvalue = 7.0\n", False),
    ],
)
def test_code_edits_miss_but_comments_and_blank_lines_do_not(
    ip: InteractiveShell, edited: str, hits: bool
) -> None:
    run_cell(ip, "%%funcache\ntick()\nvalue = 7\n")
    run_cell(ip, edited)
    assert runs() == (1 if hits else 2)
    assert ip.user_ns["value"] == eval(edited.rsplit("=", 1)[1].split("#")[0])


def test_a_cell_under_an_ast_transformer_is_keyed_by_the_code_it_runs(
    ip: InteractiveShell,
) -> None:
    """IPython's AST transformers may change what a cell's text means between runs."""

    class Scale(ast.NodeTransformer):
        factor = 1

        def visit_Constant(self, node: ast.Constant) -> ast.Constant:
            if node.value != 2:
                return node
            return ast.copy_location(ast.Constant(2 * self.factor), node)

    scale = Scale()
    ip.ast_transformers.append(scale)
    try:
        run_cell(ip, "%%funcache\ntick()\nvalue = 2\n")
        scale.factor = 5
        run_cell(ip, "%%funcache\ntick()\nvalue = 2\n")
    finally:
        ip.ast_transformers.remove(scale)
    assert ip.user_ns["value"] == 10, f"expected 10, got {ip.user_ns['value']} (stale cache)"
    assert runs() == 2


def test_in_place_mutation_of_an_input_is_restored(ip: InteractiveShell) -> None:
    cell = "%%funcache\ntick()\ndata.append(4)\n"
    run_cell(ip, "data = [1, 2, 3]")
    run_cell(ip, cell)
    assert ip.user_ns["data"] == [1, 2, 3, 4]
    run_cell(ip, "data = [1, 2, 3]")  # back to the input the entry was stored for
    run_cell(ip, cell)
    assert runs() == 1, "same input content: should be a hit"
    assert ip.user_ns["data"] == [1, 2, 3, 4], "the hit must restore the mutation"
    run_cell(ip, cell)  # data is [1, 2, 3, 4] now: a different input
    assert runs() == 2
    assert ip.user_ns["data"] == [1, 2, 3, 4, 4]


def test_mutated_input_is_restored_in_place_keeping_aliases(ip: InteractiveShell) -> None:
    setup = "data = [1, 2]\nholder = {'d': data}"
    cell = "%%funcache\ntick()\ndata.append(3)\nsame = data\n"
    run_cell(ip, setup)
    run_cell(ip, cell)
    restart(ip)
    run_cell(ip, setup)
    run_cell(ip, cell)
    assert runs() == 1, "same input content: should be a hit"
    ns = ip.user_ns
    assert ns["data"] == [1, 2, 3]
    assert ns["holder"]["d"] is ns["data"], "the hit replaced data instead of updating it"
    assert ns["same"] is ns["data"], "a name bound to the mutated object must stay an alias"


@pytest.mark.parametrize(
    ("body", "base"),
    [("v[0] = 7.0", [7.0, 0.0, 0.0, 0.0]), ("v += 7.0", [7.0, 7.0, 0.0, 0.0])],
)
def test_mutated_numpy_view_updates_its_base_on_hit(
    ip: InteractiveShell, body: str, base: list[float]
) -> None:
    """``v += 7`` rebinds ``v`` to the same array: that counts as a change in place."""
    setup = "import numpy as np\na = np.zeros(4)\nv = a[:2]"
    cell = f"%%funcache\ntick()\n{body}\n"
    run_cell(ip, setup)
    run_cell(ip, cell)
    restart(ip)
    run_cell(ip, setup)
    run_cell(ip, cell)
    assert runs() == 1
    got = ip.user_ns["a"].tolist()
    assert got == base, f"expected {base}, got {got} (view restored as a copy)"
    assert ip.user_ns["v"].base is ip.user_ns["a"]


CONFIG = """
class Config:
    def __init__(self):
        self.params = [1]
        self.extra = [0]

cfg = Config()
params = cfg.params
extra = cfg.extra
"""


@pytest.mark.parametrize(
    ("body", "params", "extra"),
    [
        ("cfg.params.append(2)", [1, 2], [0]),
        # a rebound attribute: the old list, still named `extra`, must keep its content
        ("cfg.extra = [9]\ncfg.params.append(2)", [1, 2], [0]),
    ],
)
def test_mutated_object_is_restored_in_place(
    ip: InteractiveShell, body: str, params: list[int], extra: list[int]
) -> None:
    cell = f"%%funcache\ntick()\n{body}\n"
    run_cell(ip, CONFIG)
    run_cell(ip, cell)
    expected = {n: ip.user_ns[n] for n in ("params", "extra")}
    expected["cfg"] = dict(vars(ip.user_ns["cfg"]))
    restart(ip)
    run_cell(ip, CONFIG)
    run_cell(ip, "kept = cfg")
    run_cell(ip, cell)
    assert runs() == 1
    ns = ip.user_ns
    assert ns["kept"] is ns["cfg"]
    assert vars(ns["cfg"]) == expected["cfg"]
    assert ns["cfg"].params is ns["params"], "cfg.params no longer is the list named params"
    assert (ns["params"], ns["extra"]) == (params, extra)


def test_list_reordered_by_the_cell_keeps_its_elements_content(ip: InteractiveShell) -> None:
    """Elements are matched by identity before and after the run, not by position."""
    setup = "rows = [{'a': 1}, {'a': 2}]\nfirst = rows[0]"
    cell = "%%funcache\ntick()\nrows.insert(0, {'a': 0})\nrows[2]['a'] = 3\n"
    run_cell(ip, setup)
    run_cell(ip, cell)
    restart(ip)
    run_cell(ip, setup)
    run_cell(ip, cell)
    assert runs() == 1
    ns = ip.user_ns
    assert ns["rows"] == [{"a": 0}, {"a": 1}, {"a": 3}]
    assert ns["first"] is ns["rows"][1] and ns["first"] == {"a": 1}


def test_mutated_object_that_cannot_be_updated_in_place_is_rebound(
    ip: InteractiveShell,
) -> None:
    """Slots live outside ``__dict__``: the object is replaced by its stored copy."""
    setup = "class Slotted:\n    __slots__ = ('v',)\n\ns = Slotted()\ns.v = [1]\nfirst_id = id(s)"
    cell = "%%funcache\ntick()\ns.v.append(2)\n"
    run_cell(ip, setup)
    run_cell(ip, cell)
    restart(ip)
    run_cell(ip, setup)
    run_cell(ip, cell)
    assert runs() == 1
    ns = ip.user_ns
    assert ns["s"].v == [1, 2] and id(ns["s"]) != ns["first_id"]


def test_mutated_object_another_name_shares_runs_uncached(ip: InteractiveShell) -> None:
    """Rebinding ``s`` to a copy would leave ``before`` unchanged: such a cell runs."""
    setup = "class Slotted:\n    __slots__ = ('v',)\n\ns = Slotted()\ns.v = [1]\nbefore = s"
    cell = "%%funcache\ntick()\ns.v.append(2)\n"
    for _ in range(2):
        run_cell(ip, setup)
        with pytest.warns(FuncacheWarning, match="`s` changed in place and `before`"):
            run_cell(ip, cell)
        assert ip.user_ns["before"].v == [1, 2], "the other name must see the change"
        restart(ip)
    assert runs() == 2


def test_global_mutated_through_a_called_function_is_restored(ip: InteractiveShell) -> None:
    run_cell(ip, "LOG = []\ndef log(item):\n    LOG.append(item)")
    cell = "%%funcache\ntick()\nlog('ran')\n"
    run_cell(ip, cell)
    run_cell(ip, "LOG = []")  # back to the state the entry was stored for
    run_cell(ip, cell)
    assert runs() == 1, "same inputs: should be a hit"
    assert ip.user_ns["LOG"] == ["ran"], "the hit must restore what log() appended"


def test_deleted_names_are_deleted_on_hit(ip: InteractiveShell) -> None:
    cell = "%%funcache\ntick()\nkept = scratch * 2\ndel scratch\n"
    run_cell(ip, "scratch = 5")
    run_cell(ip, cell)
    run_cell(ip, "scratch = 5")
    run_cell(ip, cell)
    assert runs() == 1
    assert "scratch" not in ip.user_ns
    assert ip.user_ns["kept"] == 10


MUST_MISS = {  # setup, cell, edit, name, its fresh value
    "edited helper function": (
        "def helper(v):\n    return v + 1",
        "%%funcache\ntick()\nresult = helper(3)\n",
        "def helper(v):\n    return v * 10",
        "result",
        30,
    ),
    "name bound only in a branch is an input": (
        "RECOMPUTE = False\nfeatures = [1, 2]",
        "%%funcache\ntick()\nif RECOMPUTE:\n    features = [0]\nmodel = sum(features)\n",
        "features = [10, 20]",
        "model",
        30,
    ),
    "global read by a function of the cell is an input": (
        "FACTOR = 2",
        "%%funcache\ntick()\ndef scaled(v):\n    return v * FACTOR\nresult = scaled(2)\n",
        "FACTOR = 5",
        "result",
        10,
    ),
}


@pytest.mark.parametrize("case", list(MUST_MISS))
def test_edit_of_what_the_cell_reads_misses(ip: InteractiveShell, case: str) -> None:
    setup, cell, edit, name, expected = MUST_MISS[case]
    run_cell(ip, setup)
    run_cell(ip, cell)
    run_cell(ip, edit)
    run_cell(ip, cell)
    got = ip.user_ns[name]
    assert got == expected, f"expected {expected}, got {got} (stale cache)"
    assert runs() == 2


def test_global_bound_after_a_call_of_the_cells_function_is_an_input(
    ip: InteractiveShell,
) -> None:
    """``f()`` runs before the cell binds ``X``, so it reads ``X`` from the namespace."""
    cell = "%%funcache\ntick()\ndef f():\n    return X\ny = f()\nX = 5\n"
    run_cell(ip, "X = 1")
    run_cell(ip, cell)
    restart(ip)
    run_cell(ip, "X = 2")
    run_cell(ip, cell)
    y = ip.user_ns["y"]
    assert y == 2, f"expected 2, got {y} (stale cache)"
    assert runs() == 2


def test_names_read_by_a_line_magic_are_inputs(ip: InteractiveShell) -> None:
    cell = "%%funcache\ntick()\n%time y = x * 10\n"
    run_cell(ip, "x = 2")
    run_cell(ip, cell)
    run_cell(ip, "x = 3")
    run_cell(ip, cell)
    assert ip.user_ns["y"] == 30, "x inside a %magic line must be part of the key"
    run_cell(ip, "x = 2")
    run_cell(ip, cell)
    assert (runs(), ip.user_ns["y"]) == (2, 20)


# -------------------------------------------------------------- restoring after restart


def test_definitions_and_imports_work_after_restart(ip: InteractiveShell) -> None:
    cell = """%%funcache
tick()
import math
from collections import OrderedDict as OD

class Point:
    def __init__(self, x):
        self.x = x

    def double(self):
        return Point(self.x * 2)

def area(r):
    return math.pi * r**2

p = Point(2).double()
table = OD(a=area(1))
"""
    run_cell(ip, cell)
    restart(ip)
    run_cell(ip, cell)
    assert runs() == 1
    ns = ip.user_ns
    assert isinstance(ns["p"], ns["Point"]), "instances must unpickle against the new class"
    assert ns["p"].double().x == 8
    assert ns["area"](2) == pytest.approx(4 * ns["math"].pi)
    assert list(ns["table"].items()) == [("a", pytest.approx(ns["math"].pi))]
    assert ns["OD"] is __import__("collections").OrderedDict


def test_module_bound_outside_a_top_level_import_is_reimported(ip: InteractiveShell) -> None:
    cell = "%%funcache\ntick()\ntry:\n    import json as codec\nexcept ImportError:\n    codec = None\n"
    run_cell(ip, cell)
    restart(ip)
    run_cell(ip, cell)
    assert runs() == 1
    assert ip.user_ns["codec"] is sys.modules["json"]


def test_import_made_possible_by_sys_path_in_the_cell_hits(
    ip: InteractiveShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``sys.path`` the run left is back before a hit re-runs the cell's imports."""
    Path("src").mkdir()
    Path("src", "fc_local_mod.py").write_text("def load():\n    return [1, 2]\n")
    monkeypatch.setattr(sys, "path", list(sys.path))
    cell = "%%funcache --name loader\ntick()\nimport sys\nsys.path.insert(0, 'src')\nimport fc_local_mod\ndata = fc_local_mod.load()\n"
    try:
        run_cell(ip, cell)
        for _ in range(2):
            restart(ip)
            sys.path.remove("src")
            del sys.modules["fc_local_mod"]
            with warnings.catch_warnings():
                warnings.simplefilter("error", FuncacheWarning)
                run_cell(ip, cell)
            assert ip.user_ns["data"] == [1, 2]
    finally:
        sys.modules.pop("fc_local_mod", None)
    assert runs() == 1, "both restarts must hit"


def test_import_made_possible_otherwise_by_the_cell_warns_once(
    ip: InteractiveShell, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A cell that writes the module it imports: the hit's import fails; say so, then run.

    NB. In a hidden folder, which is not an output a hit puts back (``test_outputs``).
    """
    Path(".generated").mkdir()
    monkeypatch.syspath_prepend(str(Path.cwd() / ".generated"))
    cell = "%%funcache --name writer\ntick()\nfrom pathlib import Path\nPath('.generated/fc_written.py').write_text('X = 3')\nimport fc_written\nx = fc_written.X\n"

    def run_after_restart(same_session: bool = False) -> list[str]:
        if same_session:  # the namespace emptied by hand (%reset), the module deleted
            ip.reset(new_session=False)
            run_cell(ip, TICK)
        else:
            restart(ip)
        Path(".generated/fc_written.py").unlink()
        del sys.modules["fc_written"]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run_cell(ip, cell)
        assert ip.user_ns["x"] == 3
        return [str(w.message) for w in caught if w.category is FuncacheWarning]

    try:
        run_cell(ip, cell)
        first, second = run_after_restart(), run_after_restart(same_session=True)
    finally:
        sys.modules.pop("fc_written", None)
    assert runs() == 3
    assert len(first) == 1 and "importing fc_written failed" in first[0], first
    assert "move that into an earlier cell" in first[0]
    assert second == [], "the warning should show once per session"
    capsys.readouterr()
    run_cell(ip, "%funcache explain --last writer")
    assert "re-running its imports failed: No module named 'fc_written'" in capsys.readouterr().out


def test_lambda_bound_to_a_name_is_recreated_on_a_hit(ip: InteractiveShell) -> None:
    """Pickle cannot store a lambda; like a ``def``, it is re-run instead."""
    cell = "%%funcache\ntick()\nscale = 3\nsquare = lambda x, k=2: x ** k\ntriple = lambda x: x * scale\n"
    with warnings.catch_warnings():
        warnings.simplefilter("error", FuncacheWarning)
        run_cell(ip, cell)
        restart(ip)
        run_cell(ip, cell)
    assert runs() == 1, "the cell must hit"
    assert run_cell(ip, "square(3), triple(2)") == (9, 6)


def test_cached_decorated_function_defined_in_a_cell(ip: InteractiveShell) -> None:
    cell = "%%funcache\ntick()\nimport funcache_ipy\n\n@funcache_ipy.cache\ndef double(v):\n    return v * 2\n"
    run_cell(ip, cell)
    restart(ip)
    run_cell(ip, cell)
    assert runs() == 1
    assert run_cell(ip, "double(21)") == 42
    assert run_cell(ip, "double.cache_name") == "__main__.double"


# ------------------------------------------------------------------- replayed output


def test_stdout_and_stderr_are_replayed(
    ip: InteractiveShell, capsys: pytest.CaptureFixture
) -> None:
    cell = "%%funcache\ntick()\nimport sys\nprint('hello')\nprint('oops', file=sys.stderr)\n"
    run_cell(ip, cell)
    first = capsys.readouterr()
    assert (first.out, first.err) == ("hello\n", "oops\n"), "a miss shows its output live"
    run_cell(ip, cell)
    second = capsys.readouterr()
    assert runs() == 1
    notice, replayed = second.out.split("\n", 1)
    assert re.fullmatch(
        r"funcache: restored the cell's output \(re-ran 1 import/def\) from cache in "
        r"[<\d.]+ m?s \(original run [<\d.]+ m?s\)",
        notice,
    ), notice
    assert (replayed, second.err) == ("hello\n", "oops\n")


def test_display_data_is_replayed(ip: InteractiveShell, monkeypatch: pytest.MonkeyPatch) -> None:
    publisher = CapturingDisplayPublisher()
    monkeypatch.setattr(ip, "display_pub", publisher)
    cell = "%%funcache\ntick()\nfrom IPython.display import HTML, display\ndisplay(HTML('<b>hi</b>'))\n"
    run_cell(ip, cell)
    live = [output["data"] for output in publisher.outputs]
    publisher.outputs.clear()
    run_cell(ip, cell)
    assert runs() == 1
    assert live and live[0]["text/html"] == "<b>hi</b>"
    assert [output["data"] for output in publisher.outputs] == live


def test_inline_figures_are_captured_and_replayed(
    ip: InteractiveShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    """matplotlib's inline backend shows figures after the cell; they are flushed into it.

    NB. matplotlib is not a test dependency: a stand-in backend module displays a PNG
    bundle when flushed, as ``matplotlib_inline.backend_inline.flush_figures`` does.
    """
    publisher = CapturingDisplayPublisher()
    monkeypatch.setattr(ip, "display_pub", publisher)
    figure = {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}
    backend = types.ModuleType("matplotlib_inline.backend_inline")
    backend.flush_figures = lambda: ip.display_pub.publish(figure, {})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, backend.__name__, backend)
    run_cell(ip, "%%funcache\ntick()\nplotted = True\n")
    publisher.outputs.clear()
    run_cell(ip, "%%funcache\ntick()\nplotted = True\n")
    assert runs() == 1
    assert [output["data"] for output in publisher.outputs] == [figure]


@pytest.mark.parametrize("how", ["-q", "--quiet", "config"])
def test_quiet_hides_the_hit_notice(
    ip: InteractiveShell, capsys: pytest.CaptureFixture, how: str
) -> None:
    if how == "config":
        run_cell(ip, "%config FuncacheMagics.quiet = True")
    flag = "" if how == "config" else how
    cell = f"%%funcache {flag}\ntick()\nprint('result')\n"
    run_cell(ip, cell)
    capsys.readouterr()
    run_cell(ip, cell)
    assert runs() == 1
    assert capsys.readouterr().out == "result\n"


# --------------------------------------------------------------------- not cached


def test_raising_cell_is_not_cached(ip: InteractiveShell) -> None:
    cell = "%%funcache\ntick()\npartial = 1\nraise ValueError('boom')\n"
    assert isinstance(error_of(ip, cell), ValueError)
    assert isinstance(error_of(ip, cell), ValueError), "the error must show again"
    assert runs() == 2
    assert open_store().entries() == []


def test_unpicklable_variable_is_named_and_nothing_is_stored(ip: InteractiveShell) -> None:
    cell = "%%funcache\ntick()\nimport threading\nsize = 3\nlock = threading.Lock()\nlog = open('f.txt', 'w')\nrows = (i for i in range(3))\n"
    culprits = r"`lock` \(type lock\), `log` \(file\) and `rows` \(generator\) cannot be pickled"
    for _ in range(2):
        with pytest.warns(FuncacheWarning, match=r"not cached: " + culprits):
            run_cell(ip, cell)
        run_cell(ip, "log.close()")
    assert runs() == 2
    assert open_store().entries() == []
    assert ip.user_ns["size"] == 3


def test_definition_reading_a_computed_value_is_not_cached(ip: InteractiveShell) -> None:
    cell = "%%funcache\ntick()\nm = 3\ndef scaled(v, m=m):\n    return m * v\n"
    with pytest.warns(FuncacheWarning, match="`scaled` is defined from `m`, which the cell"):
        run_cell(ip, cell)
    assert run_cell(ip, "scaled(2)") == 6
    assert open_store().entries() == []


def test_function_defined_inside_a_block_is_not_cached(ip: InteractiveShell) -> None:
    cell = "%%funcache\ntick()\nif True:\n    def inner():\n        return 1\n"
    with pytest.warns(FuncacheWarning, match="`inner` is a function or class defined inside"):
        run_cell(ip, cell)
    assert open_store().entries() == []


def test_unusable_cache_directory_runs_the_cell_with_a_warning(
    ip: InteractiveShell, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    run_cell(ip, f"%config FuncacheMagics.directory = {str(blocker / 'cache')!r}")
    with pytest.warns(FuncacheWarning, match="ran uncached: cannot open"):
        assert run_cell(ip, "%%funcache\ntick()\n41 + 1\n") == 42
    assert runs() == 1


def test_unhashable_input_runs_uncached_with_a_warning(ip: InteractiveShell) -> None:
    run_cell(ip, "import threading\nlock = threading.Lock()")
    cell = "%%funcache\ntick()\nheld = lock.locked()\n"
    for _ in range(2):
        with pytest.warns(FuncacheWarning, match="ran uncached: .*lock"):
            run_cell(ip, cell)
    assert runs() == 2
    assert ip.user_ns["held"] is False


def test_top_level_await_is_a_usage_error(ip: InteractiveShell) -> None:
    error = error_of(ip, "%%funcache\nimport asyncio\nawait asyncio.sleep(0)\n")
    assert isinstance(error, UsageError)
    assert "top-level await" in str(error)


# ---------------------------------------------------------------- options and controls


def test_refresh_runs_and_overwrites(ip: InteractiveShell, monkeypatch: pytest.MonkeyPatch) -> None:
    """An environment variable is invisible to the key: --refresh is how to pick it up."""
    monkeypatch.setenv("FUNCACHE_TEST_VALUE", "1")
    cell = "%%funcache {}\ntick()\nimport os\nvalue = int(os.environ['FUNCACHE_TEST_VALUE'])\n"
    run_cell(ip, cell.format(""))
    monkeypatch.setenv("FUNCACHE_TEST_VALUE", "2")
    run_cell(ip, cell.format(""))
    assert (runs(), ip.user_ns["value"]) == (1, 1)
    for flag in ("--refresh", "-r"):
        run_cell(ip, cell.format(flag))
    assert (runs(), ip.user_ns["value"]) == (3, 2)
    run_cell(ip, "value = 0")
    run_cell(ip, cell.format(""))
    assert (runs(), ip.user_ns["value"]) == (3, 2), "the refreshed entry should now hit"


def test_off_makes_cells_run_and_on_caches_again(ip: InteractiveShell) -> None:
    cell = "%%funcache\ntick()\nv = 1\n"
    run_cell(ip, "%funcache off")
    assert default_memory.enabled is False, "%funcache off left caching on"
    run_cell(ip, cell)
    run_cell(ip, cell)
    assert runs() == 2
    assert open_store().entries() == []
    run_cell(ip, "%funcache on")
    run_cell(ip, cell)
    run_cell(ip, cell)
    assert runs() == 3


def test_directory_and_size_limit_are_configurable(
    ip: InteractiveShell, tmp_path: Path, isolated_cache: Path
) -> None:
    target = tmp_path / "elsewhere"
    run_cell(ip, f"%config FuncacheMagics.directory = {str(target)!r}")
    run_cell(ip, "%config FuncacheMagics.size_limit = 2**20")
    run_cell(ip, "%%funcache\nv = 1\n")
    assert len(open_store(target).entries()) == 1
    assert open_store(target).size_limit == 2**20
    assert open_store(isolated_cache).entries() == []


def test_size_limit_reaches_cached_functions_before_any_cell_runs(ip: InteractiveShell) -> None:
    run_cell(ip, "%config FuncacheMagics.size_limit = 2**17")
    run_cell(
        ip, "import funcache_ipy\n@funcache_ipy.cache\ndef blob(i):\n    return bytes([i]) * 2**16"
    )
    run_cell(ip, "for i in range(8):\n    blob(i)")
    kept = len(open_store().entries())
    assert kept < 8, f"{kept} results of 64 KiB kept under a 128 KiB limit (limit ignored)"


def test_directory_also_governs_cached_functions(
    ip: InteractiveShell, tmp_path: Path, isolated_cache: Path
) -> None:
    """One setting for both: ``@cache`` functions without ``directory=`` follow it."""
    target = tmp_path / "shared"
    run_cell(ip, f"%config FuncacheMagics.directory = {str(target)!r}")
    run_cell(ip, "import funcache_ipy\n@funcache_ipy.cache\ndef twice(v):\n    return 2 * v")
    assert run_cell(ip, "twice(21)") == 42
    assert [meta.name for _, meta in open_store(target).entries()] == ["__main__.twice"]
    assert open_store(isolated_cache).entries() == [], "the function ignored the setting"
    run_cell(ip, "%config FuncacheMagics.directory = None")
    assert run_cell(ip, "twice(4)") == 8
    assert len(open_store(isolated_cache).entries()) == 1, "None should put it back"


def test_profile_directory_applies_at_load_and_unload_puts_it_back(
    ip: InteractiveShell, tmp_path: Path, isolated_cache: Path
) -> None:
    ip.extension_manager.unload_extension("funcache_ipy")
    ip.config.FuncacheMagics.directory = str(tmp_path / "profile")  # as ipython_config.py does
    ip.extension_manager.load_extension("funcache_ipy")
    assert default_memory.directory == str(tmp_path / "profile")
    ip.extension_manager.unload_extension("funcache_ipy")
    assert default_memory.directory is None, "unloading should put the default back"
    assert default_memory.store().directory == isolated_cache


def session_totals(text: str) -> tuple[int, int]:
    """Hits and misses from ``%funcache info``; other tests' functions may still be alive."""
    found = re.search(r"this session: (\d+) hits?, (\d+) miss(?:es)?", text)
    assert found, text
    return int(found[1]), int(found[2])


def test_info_lists_cells_and_functions(ip: InteractiveShell, capsys) -> None:
    run_cell(ip, "%funcache info")
    hits, misses = session_totals(capsys.readouterr().out)
    run_cell(ip, "import funcache_ipy\n@funcache_ipy.cache\ndef twice(v):\n    return 2 * v")
    run_cell(ip, "twice(1); twice(1)")
    for _ in range(2):
        run_cell(ip, "%%funcache --name prep\nv = 1\n")
    capsys.readouterr()
    run_cell(ip, "%funcache info")
    text = capsys.readouterr().out
    assert f"funcache: {open_store().directory} (caching on)" in text
    assert "2 entries" in text and session_totals(text) == (hits + 2, misses + 2)
    rows = {line.split()[0]: line.split() for line in text.splitlines()[3:]}
    assert rows["prep"][1:3] == ["cell", "1"] and rows["prep"][-2:] == ["1", "1"]
    assert rows["__main__.twice"][1:3] == ["function", "1"]


def test_clear_all_or_by_name(ip: InteractiveShell, capsys) -> None:
    for name in ("a", "b"):
        run_cell(ip, f"%%funcache --name {name}\ntick()\n{name}_value = 1\n")
    run_cell(ip, "%funcache clear a")
    assert "removed 1 entry of a" in capsys.readouterr().out
    assert [meta.name for _, meta in open_store().entries()] == ["b"]
    run_cell(ip, "%funcache clear")
    assert "removed 1 entry from" in capsys.readouterr().out
    run_cell(ip, "%%funcache --name b\ntick()\nb_value = 1\n")
    assert runs() == 3
    error = error_of(ip, "%funcache clear nosuch")
    assert isinstance(error, UsageError)
    assert "named 'nosuch' is cached; known: a, b" in str(error)


def test_explain_names_the_changed_input_of_a_cell(ip: InteractiveShell, capsys) -> None:
    run_cell(ip, "data = [1, 2]")
    run_cell(ip, "%%funcache --name totals\ntotal = sum(data)\n")
    run_cell(ip, "data = [1, 2, 3]")
    run_cell(ip, "%%funcache --name totals\ntotal = sum(data)\n")
    capsys.readouterr()
    run_cell(ip, "%funcache explain --last totals")
    assert capsys.readouterr().out == "totals: miss\n  - global `data` changed\n"
    run_cell(ip, "%%funcache --name totals\ntotal = sum(data) + 0\n")
    run_cell(ip, "%funcache explain --last totals")
    assert (
        "cell code changed:\n-total = sum(data)\n+total = sum(data) + 0" in capsys.readouterr().out
    )
    run_cell(ip, "%%funcache --name totals -q\ntotal = sum(data) + 0\n")
    run_cell(ip, "%funcache explain --last totals")
    assert capsys.readouterr().out == "totals: hit\n"


def test_explain_a_function_and_usage_errors(ip: InteractiveShell, capsys) -> None:
    run_cell(
        ip, "import funcache_ipy\nSCALE = 2\n@funcache_ipy.cache\ndef f(v):\n    return v * SCALE"
    )
    run_cell(ip, "f(1)")
    run_cell(ip, "SCALE = 3")
    run_cell(ip, "f(1)")
    capsys.readouterr()
    run_cell(ip, "%funcache explain --last f")
    out = capsys.readouterr().out
    assert out.startswith("__main__.f: miss") and "SCALE" in out and "2 → 3" in out
    run_cell(ip, "%funcache clear f")
    assert capsys.readouterr().out == "funcache: removed 2 entries of __main__.f\n"
    for line, culprit in [
        ("%funcache explain", "needs a function or cell name"),
        ("%funcache explain g", "no function or cell named 'g' ran in this session or is stored"),
        ("%funcache info --last", "--last goes with %funcache explain, not info"),
        ("%funcache prune --keep 0", "--keep takes 1 or more"),
        ("%funcache prune --older 3w", "like 30d, 12h, 90m"),
        ("%funcache clear --older 3d", "go with %funcache prune, not clear"),
        ("%funcache info extra", "takes no name (got 'extra')"),
        ("%funcache frob", "invalid choice: 'frob'"),
        ("%%funcache --nope\nv = 1\n", "unrecognized arguments: --nope"),
        ("%%funcache --name 'my cell'\nv = 1\n", "--name takes a word"),
    ]:
        error = error_of(ip, line)
        assert isinstance(error, UsageError) and culprit in str(error), (line, error)


FUNCTION_READING = """
import funcache_ipy
SCALE = {scale}

def load(path):
    with open(path) as file:
        return int(file.read())

@funcache_ipy.cache
def f(v):
    return v * SCALE + load("data.txt")
"""


def test_explain_before_the_first_call_compares_with_stored_entries(
    ip: InteractiveShell, capsys, tmp_path: Path
) -> None:
    """After a restart (or a re-run def), a function has no last call to go by."""

    def explain_after_restart(scale: int) -> str:
        restart(ip)
        run_cell(ip, FUNCTION_READING.format(scale=scale))
        capsys.readouterr()
        run_cell(ip, "%funcache explain f")
        return str(capsys.readouterr().out)

    run_cell(ip, FUNCTION_READING.format(scale=2))
    assert explain_after_restart(2).startswith("next run of __main__.f: would recompute: no")
    Path("data.txt").write_text("10")
    run_cell(ip, "f(1)")
    run_cell(ip, "f(5)")
    out = explain_after_restart(2)
    assert out.startswith("next run of __main__.f with a stored call's arguments: would hit"), out
    out = explain_after_restart(3)
    assert "would recompute: global `SCALE` changed: 2 → 3" in out, out
    Path("data.txt").write_text("11")
    out = explain_after_restart(2)
    assert "would recompute: file `data.txt` changed" in out, out


def test_help_is_the_magic_arguments_docstring(ip: InteractiveShell) -> None:
    manager = ip.magics_manager
    cell_help = manager.magics["cell"]["funcache"].__doc__
    line_help = manager.magics["line"]["funcache"].__doc__
    assert "%%funcache [-r] [-q] [--name NAME]" in cell_help
    assert "--refresh" in cell_help and "restores its results" in cell_help
    assert "%funcache [--remote] [--last] [--keep N] [--older AGE]" in line_help


# ----------------------------------------------------------------- load and unload


def test_loading_twice_keeps_one_instance(ip: InteractiveShell) -> None:
    first = cell_magics(ip)
    magics.load_ipython_extension(ip)
    run_cell(ip, "%load_ext funcache_ipy")
    assert cell_magics(ip) is first
    assert sum(isinstance(c, magics.FuncacheMagics) for c in ip.configurables) == 1


def test_unload_removes_magics_and_configurable(ip: InteractiveShell) -> None:
    ip.extension_manager.unload_extension("funcache_ipy")
    assert "funcache" not in ip.magics_manager.magics["cell"]
    assert "funcache" not in ip.magics_manager.magics["line"]
    assert not any(isinstance(c, magics.FuncacheMagics) for c in ip.configurables)
    assert error_of(ip, "%%funcache\nv = 1\n") is not None
    ip.extension_manager.load_extension("funcache_ipy")
    run_cell(ip, "%%funcache\nv = 1\n")
    assert ip.user_ns["v"] == 1


def test_extension_loads_from_ipython_config(tmp_path: Path) -> None:
    """``c.InteractiveShellApp.extensions`` and ``c.FuncacheMagics.*`` from the command line."""
    env = {**os.environ, "IPYTHONDIR": str(tmp_path / "ipython")}
    command = [
        sys.executable,
        "-m",
        "IPython",
        "--no-banner",
        "--InteractiveShellApp.extensions=['funcache_ipy']",
        "--FuncacheMagics.quiet=True",
        "-c",
        "print('quiet:', get_ipython().magics_manager.registry['FuncacheMagics'].quiet)",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert "quiet: True" in done.stdout, done.stderr


@pytest.mark.parametrize(
    ("cell", "runs_after_two"),
    [
        ("%%funcache\nimport cellmod\ntick()\ny = cellmod.f(10)\n", 1),
        ("%%funcache\nfrom cellmod import f\ntick()\ny = f(10)\n", 1),
        ("%%funcache\nfrom cellpkg import cellmod\ntick()\ny = cellmod.f(10)\n", 1),
        # imported after other statements: not moved ahead, so one extra run as below
        ("%%funcache\ntick()\nimport cellmod\ny = cellmod.f(10)\n", 2),
        # NB. imported only when g() runs: keyed on the source first, then on the live
        # module, so the first session pays one extra run (see the README's limitations)
        (
            "%%funcache\ntick()\ndef g():\n    import cellmod\n    return cellmod.f(10)\ny = g()\n",
            2,
        ),
    ],
    ids=["import", "from-import", "submodule from package", "late import", "import in a function"],
)
def test_local_module_imported_by_the_cell_is_part_of_its_key(
    ip: InteractiveShell, tmp_path: Path, cell: str, runs_after_two: int
) -> None:
    src = tmp_path / "src"
    (src / "cellpkg").mkdir(parents=True)
    (src / "cellpkg" / "__init__.py").write_text("")
    body = "import threading\n_lock = threading.Lock()\ndef f(x):\n    return x * {}\n"
    modules = [src / "cellmod.py", src / "cellpkg" / "cellmod.py"]
    for module in modules:
        module.write_text(body.format(2))
    sys.path.insert(0, str(src))
    forget = lambda: [sys.modules.pop(m, None) for m in ("cellmod", "cellpkg", "cellpkg.cellmod")]  # noqa: E731
    try:
        run_cell(ip, cell)
        run_cell(ip, cell)
        assert runs() == runs_after_two
        for module in modules:
            module.write_text(body.format(3))
        forget()
        restart(ip)  # a new kernel imports the edited file
        run_cell(ip, cell)
        assert ip.user_ns["y"] == 30, f"expected 30, got {ip.user_ns['y']} (stale cache)"
        forget()
        restart(ip)
        run_cell(ip, cell)
        assert runs() == runs_after_two + 1, "after a restart the unchanged module must hit"
    finally:
        sys.path.remove(str(src))
        forget()


def test_statements_before_an_import_still_run_first(ip: InteractiveShell, tmp_path: Path) -> None:
    """A cell setting the environment before importing must import what it would import."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "settings.py").write_text("import os\nMODE = os.environ.get('APP_MODE', 'prod')\n")
    sys.path.insert(0, str(src))
    try:
        cell = "%%funcache\nimport os\nos.environ['APP_MODE'] = 'test'\nimport settings\nmode = settings.MODE\n"
        run_cell(ip, cell)
        assert ip.user_ns["mode"] == "test"
    finally:
        sys.path.remove(str(src))
        sys.modules.pop("settings", None)
        os.environ.pop("APP_MODE", None)


def test_hit_notice_names_data_first_and_counts_what_it_re_ran(
    ip: InteractiveShell, capsys: pytest.CaptureFixture
) -> None:
    cell = "%%funcache\ntick()\nimport json\ndef helper():\n    return 1\nclf = 1\nX_tr = 2\na, b, c, d, e = 3, 4, 5, 6, 7\n"
    run_cell(ip, cell)
    capsys.readouterr()
    run_cell(ip, cell)
    notice = capsys.readouterr().out
    assert runs() == 1
    assert notice.startswith(
        "funcache: restored clf, X_tr, a, b, c, d (+1 more; re-ran 2 imports/defs) from cache in "
    ), notice


def test_help_reads_as_plain_text(ip: InteractiveShell) -> None:
    """``%%funcache?`` shows the docstrings as they are: no reST markup in them."""
    for text in (ip.find_cell_magic("funcache").__doc__, ip.find_line_magic("funcache").__doc__):
        assert text and "``" not in text and "::" not in text, text


def test_config_sets_the_default_memory_and_unloading_puts_it_back(
    ip: InteractiveShell, tmp_path: Path
) -> None:
    """The traitlets are the %config face of ``funcache_ipy.default_memory``."""
    settings = {
        "directory": str(tmp_path / "configured"),
        "size_limit": 2**21,
        "output_limit": 2**10,
        "remote": (tmp_path / "shared").as_uri(),
    }
    for name, value in settings.items():
        run_cell(ip, f"%config FuncacheMagics.{name} = {value!r}")
    now = {name: getattr(default_memory, name) for name in settings}
    assert now == settings, f"expected the default memory configured, got {now}"
    ip.extension_manager.unload_extension("funcache_ipy")
    assert (default_memory.directory, default_memory.size_limit) == (None, 16 * 2**30)
    assert (default_memory.output_limit, default_memory.remote) == (2**30, None)
    ip.extension_manager.load_extension("funcache_ipy")


def test_off_switches_the_default_memory_and_it_switches_the_magics(
    ip: InteractiveShell, capsys
) -> None:
    run_cell(ip, "%funcache off")
    assert default_memory.enabled is False, "%funcache off left the default memory on"
    run_cell(ip, "import funcache_ipy\nfuncache_ipy.default_memory.enabled = True")
    run_cell(ip, "%funcache info")
    assert "(caching on)" in capsys.readouterr().out
    run_cell(ip, "funcache_ipy.default_memory.enabled = False")
    run_cell(ip, "%%funcache\ntick()\n")
    run_cell(ip, "%%funcache\ntick()\n")
    assert runs() == 2, f"expected cells to just run when the memory is off, got {runs()} runs"
