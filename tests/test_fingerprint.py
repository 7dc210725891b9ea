"""Stale-result classes, run as real cells: every edit must miss, every no-op edit must hit.

Each case defines a cached ``f`` and what it depends on, calls ``f(2)``, applies an edit,
and calls ``f(2)`` again. A must-miss edit changes the true result, so a stale cache is
caught by value; a must-hit edit leaves the result alone and must be served from disk.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import run_cell

PRELUDE = "import funcache_ipy, functools\n"

MUST_MISS = {
    "global constant": ("SCALE = 2\n@funcache_ipy.cache\ndef f(x): return x * SCALE", "SCALE = 3"),
    "helper body": (
        "def helper(x): return x + 1\n@funcache_ipy.cache\ndef f(x): return helper(x)",
        "def helper(x): return x + 2",
    ),
    "helper's global": (
        "K = 1\ndef helper(x): return x + K\n@funcache_ipy.cache\ndef f(x): return helper(x)",
        "K = 5",
    ),
    "helper referenced, not called": (
        "def helper(x): return x + 1\n@funcache_ipy.cache\ndef f(x): return list(map(helper, [x]))[0]",
        "def helper(x): return x + 2",
    ),
    "helper stored in a dict": (
        "def helper(x): return x + 1\nOPS = {'op': helper}\n"
        "@funcache_ipy.cache\ndef f(x): return OPS['op'](x)",
        "def helper(x): return x + 2\nOPS = {'op': helper}",
    ),
    "helper only in a comprehension": (
        "def helper(x): return x + 1\n@funcache_ipy.cache\ndef f(x): return sum([helper(i) for i in range(x)])",
        "def helper(x): return x + 2",
    ),
    "helper only in a lambda": (
        "def helper(x): return x + 1\n@funcache_ipy.cache\ndef f(x): return (lambda v: helper(v))(x)",
        "def helper(x): return x + 2",
    ),
    "helper only in an inner function": (
        "def helper(x): return x + 1\n@funcache_ipy.cache\n"
        "def f(x):\n    def inner(v): return helper(v)\n    return inner(x)",
        "def helper(x): return x + 2",
    ),
    "global lambda": (
        "g = lambda v: v * 2\n@funcache_ipy.cache\ndef f(x): return g(x)",
        "g = lambda v: v * 3",
    ),
    "closure contents": (
        "def make(k):\n    def helper(x): return x * k\n    return helper\n"
        "helper = make(2)\n@funcache_ipy.cache\ndef f(x): return helper(x)",
        "helper = make(3)",
    ),
    "closure cell rebound in place": (
        "def make():\n    k = 2\n    def helper(x): return x * k\n"
        "    def bump():\n        nonlocal k\n        k += 1\n    return helper, bump\n"
        "helper, bump = make()\n@funcache_ipy.cache\ndef f(x): return helper(x)",
        "bump()",
    ),
    "helper default": (
        "def helper(x, k=2): return x * k\n@funcache_ipy.cache\ndef f(x): return helper(x)",
        "def helper(x, k=3): return x * k",
    ),
    "helper keyword-only default": (
        "def helper(x, *, k=2): return x * k\n@funcache_ipy.cache\ndef f(x): return helper(x)",
        "def helper(x, *, k=3): return x * k",
    ),
    "defaults assigned in place": (
        "def helper(x, k=2): return x * k\n@funcache_ipy.cache\ndef f(x): return helper(x)",
        "helper.__defaults__ = (3,)",
    ),
    "code swapped in place (autoreload)": (
        "def helper(x): return x + 1\n@funcache_ipy.cache\ndef f(x): return helper(x)",
        "def _new(x): return x + 2\nhelper.__code__ = _new.__code__",
    ),
    "functools.partial": (
        "import operator\nhp = functools.partial(operator.mul, 2)\n@funcache_ipy.cache\ndef f(x): return hp(x)",
        "hp = functools.partial(operator.mul, 3)",
    ),
    "wraps-decorated helper": (
        "def deco(fn):\n    @functools.wraps(fn)\n    def inner(*a): return fn(*a)\n    return inner\n"
        "@deco\ndef helper(x): return x + 1\n@funcache_ipy.cache\ndef f(x): return helper(x)",
        "@deco\ndef helper(x): return x + 2",
    ),
    "library decorator around a helper": (
        "import contextlib\n@contextlib.contextmanager\ndef helper(x): yield x + 1\n"
        "@funcache_ipy.cache\ndef f(x):\n    with helper(x) as v: return v",
        "@contextlib.contextmanager\ndef helper(x): yield x + 2",
    ),
    "lru_cache-wrapped helper": (
        "@functools.lru_cache\ndef helper(x): return x + 1\n@funcache_ipy.cache\ndef f(x): return helper(x)",
        "@functools.lru_cache\ndef helper(x): return x + 2",
    ),
    "class method body": (
        "class M:\n    def apply(self, x): return x + 1\n@funcache_ipy.cache\ndef f(x): return M().apply(x)",
        "class M:\n    def apply(self, x): return x + 2",
    ),
    "class attribute set in place": (
        "class M:\n    k = 1\n    def apply(self, x): return x + self.k\n"
        "@funcache_ipy.cache\ndef f(x): return M().apply(x)",
        "M.k = 5",
    ),
    "base class method": (
        "class B:\n    def k(self): return 1\nclass M(B):\n    def apply(self, x): return x + self.k()\n"
        "@funcache_ipy.cache\ndef f(x): return M().apply(x)",
        "B.k = lambda self: 7",
    ),
    "staticmethod body": (
        "class M:\n    @staticmethod\n    def g(x): return x + 1\n@funcache_ipy.cache\ndef f(x): return M.g(x)",
        "class M:\n    @staticmethod\n    def g(x): return x + 2",
    ),
    "abstract base class method": (
        "import abc\nclass Base(abc.ABC):\n    @abc.abstractmethod\n    def k(self): ...\n"
        "class M(Base):\n    def k(self): return 1\n@funcache_ipy.cache\ndef f(x): return x + M().k()",
        "class M(Base):\n    def k(self): return 5",
    ),
    "dataclass default": (
        "import dataclasses\n@dataclasses.dataclass\nclass Cfg:\n    k: int = 1\n    tags: list = dataclasses.field(default_factory=list, metadata={'unit': 's'})\n"
        "@funcache_ipy.cache\ndef f(x): return x + Cfg().k",
        "@dataclasses.dataclass\nclass Cfg:\n    k: int = 4\n    tags: list = dataclasses.field(default_factory=list, metadata={'unit': 's'})",
    ),
    "cached_property body": (
        "class M:\n    @functools.cached_property\n    def k(self): return 1\n@funcache_ipy.cache\ndef f(x): return x + M().k",
        "class M:\n    @functools.cached_property\n    def k(self): return 3",
    ),
    "function attribute": (
        "def helper(x): return x * helper.scale\nhelper.scale = 2\n@funcache_ipy.cache\ndef f(x): return helper(x)",
        "helper.scale = 3",
    ),
    "singledispatch registration": (
        "@functools.singledispatch\ndef fmt(v): return 'obj'\n@funcache_ipy.cache\ndef f(x): return fmt(x)",
        "@fmt.register\ndef _(v: int): return 'int'",
    ),
    "metaclass method": (
        "class Meta(type):\n    def __getattr__(cls, n): return 1\nclass Foo(metaclass=Meta): pass\n"
        "@funcache_ipy.cache\ndef f(x): return x + Foo.anything",
        "Meta.__getattr__ = lambda cls, n: 2",
    ),
    "global instance state": (
        "class Cfg:\n    def __init__(self): self.k = 2\ncfg = Cfg()\n@funcache_ipy.cache\ndef f(x): return x * cfg.k",
        "cfg.k = 3",
    ),
    "list appended in place": (
        "W = [1, 2]\n@funcache_ipy.cache\ndef f(x): return x * sum(W)",
        "W.append(4)",
    ),
    "dict updated in place": (
        "D = {'k': 1}\n@funcache_ipy.cache\ndef f(x): return x + D['k']",
        "D['k'] = 9",
    ),
    "bound method of a global dict": (
        "D = {'k': 1}\nget = D.get\n@funcache_ipy.cache\ndef f(x): return x + get('k')",
        "D['k'] = 9",
    ),
    "numpy array element": (
        "import numpy as np\narr = np.arange(5.0)\n@funcache_ipy.cache\ndef f(x): return float(arr.sum()) * x",
        "arr[3] = 100",
    ),
    "pandas cell": (
        "import pandas as pd\ndf = pd.DataFrame({'a': [1, 2]})\n@funcache_ipy.cache\ndef f(x): return int(df.a.sum()) * x",
        "df.loc[0, 'a'] = 50",
    ),
    "builtin shadowed": (
        "@funcache_ipy.cache\ndef f(x): return abs(x)",
        "abs = lambda v: v * 10",
    ),
    "shadowing global deleted": (
        "def len(v): return 99\n@funcache_ipy.cache\ndef f(x): return len([x])",
        "del len",
    ),
    "global named like guard internals": (
        "_expected = 2\n@funcache_ipy.cache\ndef f(x): return x * _expected",
        "_expected = 3",
    ),
    "mutual recursion": (
        "def even(n): return n == 0 or odd(n - 1)\ndef odd(n): return n != 0 and even(n - 1)\n"
        "@funcache_ipy.cache\ndef f(x): return (even(x), x)",
        "def odd(n): return 'changed'",
    ),
    "own body (redefined)": (
        "@funcache_ipy.cache\ndef f(x): return x + 1",
        "@funcache_ipy.cache\ndef f(x): return x + 2",
    ),
    "global name that was absent": (
        "def helper(x): return x\n@funcache_ipy.cache\ndef f(x):\n    try:\n        return LATER\n    except NameError:\n        return helper(x)",
        "LATER = 'now defined'",
    ),
}

MUST_HIT = {
    "helper compiled with its import, then alone (LOAD_ATTR vs LOAD_METHOD)": (
        'exec("import math\\ndef helper(x):\\n    return math.floor(x)")\n'
        "@funcache_ipy.cache\ndef f(x): return helper(x)",
        "def helper(x):\n    return math.floor(x)",
    ),
    "helper with a loop and a try, compiled with its import, then alone": (
        'exec("import math\\ndef helper(x):\\n    t = 0\\n    for i in range(x):\\n'
        "        try:\\n            t += math.floor(i / 2)\\n        except ValueError:\\n"
        '            t -= 1\\n    return t")\n'
        "@funcache_ipy.cache\ndef f(x): return helper(x)",
        "def helper(x):\n    t = 0\n    for i in range(x):\n        try:\n"
        "            t += math.floor(i / 2)\n        except ValueError:\n            t -= 1\n    return t",
    ),
    "same value reassigned": (
        "SCALE = 2\n@funcache_ipy.cache\ndef f(x): return x * SCALE",
        "SCALE = 2",
    ),
    "equal list reassigned": (
        "W = [1, 2]\n@funcache_ipy.cache\ndef f(x): return x * sum(W)",
        "W = [1, 2]",
    ),
    "helper comment, docstring and blank lines": (
        "def helper(x): return x + 1\n@funcache_ipy.cache\ndef f(x): return helper(x)",
        'def helper(x):\n    """Now documented."""\n\n    # a comment\n    return x + 1  # trailing',
    ),
    "own docstring and line shift": (
        "@funcache_ipy.cache\ndef f(x): return x + 1",
        '\n\n\n@funcache_ipy.cache\ndef f(x):\n    """Doc."""\n    # why\n    return x + 1',
    ),
    "unrelated global": (
        "SCALE = 2\n@funcache_ipy.cache\ndef f(x): return x * SCALE",
        "OTHER = 99",
    ),
    "edit reverted": (
        "SCALE = 2\n@funcache_ipy.cache\ndef f(x): return x * SCALE",
        "SCALE = 3\nf(2)\nSCALE = 2",
    ),
    "library function re-imported": (
        "import math\n@funcache_ipy.cache\ndef f(x): return math.sqrt(x)",
        "import math",
    ),
}


def _call_twice(shell, setup: str, edit: str) -> tuple[object, object, object, object]:
    run_cell(shell, PRELUDE)
    run_cell(shell, setup)
    first = run_cell(shell, "f(2)")
    run_cell(shell, edit)
    misses = run_cell(shell, "f.cache_info().misses")
    second = run_cell(shell, "f(2)")
    fresh = run_cell(shell, "f.uncached(2)")
    missed = run_cell(shell, "f.cache_info().misses") > misses
    return first, second, fresh, missed


@pytest.mark.parametrize("case", list(MUST_MISS))
def test_edit_misses(shell, case: str) -> None:
    setup, edit = MUST_MISS[case]
    first, second, fresh, missed = _call_twice(shell, setup, edit)
    assert second == fresh, f"expected {fresh!r}, got {second!r} (stale cache)"
    assert first != fresh, "the edit must change the true result, or this case cannot fail"
    assert missed


@pytest.mark.parametrize("case", list(MUST_HIT))
def test_no_op_edit_hits(shell, case: str) -> None:
    setup, edit = MUST_HIT[case]
    first, second, fresh, missed = _call_twice(shell, setup, edit)
    assert first == second == fresh
    assert not missed, "an edit that changes nothing must not recompute"


def _write_module(path: Path, body: str) -> None:
    path.write_text(textwrap.dedent(body))


@pytest.mark.parametrize(
    ("edit", "expect_miss"),
    [
        ("def helper(x):\n    return x + 2\nCONST = 10\n", True),
        ("def helper(x):\n    return x + 1\nCONST = 11\n", True),
        ("# a comment\n\ndef helper(x):\n    '''doc'''\n    return x + 1\nCONST = 10\n", False),
    ],
    ids=["module function", "module constant", "comment only"],
)
@pytest.mark.parametrize("style", ["import mymod", "from mymod import helper, CONST"])
def test_local_module_edit(shell, tmp_path: Path, edit: str, expect_miss: bool, style: str) -> None:
    module_dir = tmp_path / "src"
    module_dir.mkdir()
    _write_module(module_dir / "mymod.py", "def helper(x):\n    return x + 1\nCONST = 10\n")
    call = "mymod.helper(x) + mymod.CONST" if style == "import mymod" else "helper(x) + CONST"
    run_cell(shell, f"import sys; sys.path.insert(0, {str(module_dir)!r})\n{PRELUDE}")
    run_cell(
        shell, f"import importlib, mymod\n{style}\n@funcache_ipy.cache\ndef f(x): return {call}"
    )
    first = run_cell(shell, "f(2)")
    _write_module(module_dir / "mymod.py", edit)
    # A kernel restart re-imports the edited file; reload is the same thing in-process.
    run_cell(shell, f"importlib.reload(mymod)\n{style}")
    misses = run_cell(shell, "f.cache_info().misses")
    second = run_cell(shell, "f(2)")
    assert second == run_cell(shell, "f.uncached(2)"), "stale result after editing mymod.py"
    assert (run_cell(shell, "f.cache_info().misses") > misses) is expect_miss
    assert (first != second) is expect_miss
    run_cell(shell, f"sys.path.remove({str(module_dir)!r}); del sys.modules['mymod']")


def test_shell_reference_does_not_block_caching(shell) -> None:
    run_cell(shell, PRELUDE + "SCALE = 2")
    run_cell(shell, "@funcache_ipy.cache\ndef f(x):\n    get_ipython()\n    return x * SCALE")
    assert run_cell(shell, "f(2), f(2), f.cache_info().hits") == (4, 4, 1)
    run_cell(shell, "SCALE = 3")
    assert run_cell(shell, "f(2)") == 6


@pytest.mark.parametrize("from_import", [False, True], ids=["import mod", "from mod import"])
def test_autoreload_edits_are_seen(shell, tmp_path: Path, from_import: bool) -> None:
    """%autoreload swaps __code__ of the existing function objects in place."""
    module_dir = tmp_path / "src"
    module_dir.mkdir()
    name = f"armod_{int(from_import)}"  # NB. autoreload remembers modules by name
    _write_module(module_dir / f"{name}.py", "def helper(x):\n    return x + 1\n")
    style, call = (
        (f"from {name} import helper", "helper(x)")
        if from_import
        else (f"import {name}", f"{name}.helper(x)")
    )
    run_cell(shell, f"import sys; sys.path.insert(0, {str(module_dir)!r})\n{PRELUDE}")
    run_cell(shell, "%load_ext autoreload\n%autoreload 2")
    run_cell(shell, f"{style}\n@funcache_ipy.cache\ndef f(x): return {call}")
    assert run_cell(shell, "f(2), f(2), f.cache_info().hits") == (3, 3, 1)
    _write_module(module_dir / f"{name}.py", "def helper(x):\n    return x + 2\n")
    later = time.time() + 10  # a newer mtime, even within the same second
    os.utime(module_dir / f"{name}.py", (later, later))
    assert run_cell(shell, "f(2)") == 4, "stale result after an autoreloaded edit"
    run_cell(shell, "%autoreload 0")
    run_cell(shell, f"sys.path.remove({str(module_dir)!r}); del sys.modules[{name!r}]")


def _package(root: Path, layout: dict[str, str]) -> None:
    for relative, text in layout.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_module(path, text)


@pytest.mark.parametrize(
    ("layout", "call", "edit"),
    [
        (  # a folder without __init__.py: a namespace package, still the user's code
            {"nsutils/helpers.py": "def f(x):\n    return x * 2\n"},
            "import nsutils.helpers\n@funcache_ipy.cache\ndef g(x): return nsutils.helpers.f(x)",
            ("nsutils/helpers.py", "def f(x):\n    return x * 7\n"),
        ),
        (  # a relative import inside a package function
            {
                "relpkg/__init__.py": "",
                "relpkg/a.py": "def f(x):\n    from .b import k\n    return k(x)\n",
                "relpkg/b.py": "def k(x):\n    return x * 2\n",
            },
            "import relpkg.a\n@funcache_ipy.cache\ndef g(x): return relpkg.a.f(x)",
            ("relpkg/b.py", "def k(x):\n    return x * 7\n"),
        ),
        (  # a submodule imported with "from pkg import sub" inside the function
            {"subpkg/__init__.py": "", "subpkg/sub.py": "def f(x):\n    return x * 2\n"},
            "@funcache_ipy.cache\ndef g(x):\n    from subpkg import sub\n    return sub.f(x)",
            ("subpkg/sub.py", "def f(x):\n    return x * 7\n"),
        ),
    ],
    ids=["namespace package", "relative import", "from package import submodule"],
)
def test_package_edits_seen_after_restart(
    tmp_path: Path, layout: dict[str, str], call: str, edit: tuple[str, str]
) -> None:
    """Edit a file of a local package between two processes sharing the cache."""
    src = tmp_path / "src"
    _package(src, layout)
    script = tmp_path / "job.py"
    script.write_text(
        f"import sys\nsys.path.insert(0, {str(src)!r})\nimport funcache_ipy\n{call}\n"
        "print(g(1), g.cache_info().hits)\n"
    )
    run = lambda: subprocess.run(  # noqa: E731
        [sys.executable, str(script)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert run() == ["2", "0"]
    assert run() == ["2", "1"], "an unchanged package must hit after a restart"
    _package(src, {edit[0]: edit[1]})
    assert run() == ["7", "0"], "stale result after editing the package"


def test_module_level_resources_do_not_block_caching(shell, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _package(src, {"resmod.py": "import threading\n_lock = threading.Lock()\nK = 2\n"})
    run_cell(shell, f"import sys; sys.path.insert(0, {str(src)!r})\n{PRELUDE}import resmod")
    run_cell(
        shell,
        "@funcache_ipy.cache\ndef f(x):\n    mod = resmod  # a bare use: the whole module counts\n    return x * mod.K",
    )
    assert run_cell(shell, "f(2), f(2), f.cache_info().hits") == (4, 4, 1)
    run_cell(shell, "resmod.K = 3")
    assert run_cell(shell, "f(2)") == 6
    run_cell(shell, f"sys.path.remove({str(src)!r}); del sys.modules['resmod']")


def test_module_imported_inside_the_body(shell, tmp_path: Path) -> None:
    module_dir = tmp_path / "src"
    module_dir.mkdir()
    _write_module(module_dir / "lazymod.py", "def g(x):\n    return x + 1\n")
    run_cell(shell, f"import sys, importlib; sys.path.insert(0, {str(module_dir)!r})\n{PRELUDE}")
    run_cell(shell, "@funcache_ipy.cache\ndef f(x):\n    import lazymod\n    return lazymod.g(x)")
    assert run_cell(shell, "f(2), f(2), f(2)") == (3, 3, 3)
    _write_module(module_dir / "lazymod.py", "def g(x):\n    return x + 2\n")
    run_cell(shell, "import lazymod; importlib.reload(lazymod)")
    assert run_cell(shell, "f(2)") == 4, "stale result after editing a module imported in the body"
    run_cell(shell, f"sys.path.remove({str(module_dir)!r}); del sys.modules['lazymod']")


def test_explain_names_the_changed_global(shell) -> None:
    run_cell(shell, PRELUDE + "SCALE = 2\ndef helper(x): return x\n")
    run_cell(shell, "@funcache_ipy.cache\ndef f(x): return helper(x) * SCALE")
    run_cell(shell, "f(2)")
    run_cell(shell, "SCALE = 3")
    text = str(run_cell(shell, "f.explain(2)"))
    assert "miss" in text and "global `SCALE` changed: 2 → 3" in text
    run_cell(shell, "f(2)\ndef helper(x): return -x")
    text = str(run_cell(shell, "f.explain(2)"))
    assert "function `helper` changed" in text and "SCALE" not in text
    run_cell(shell, "f(2)")
    assert "function `helper` changed" in str(run_cell(shell, "f.explain_last()"))
    assert str(run_cell(shell, "f.explain(2)")).endswith("hit")
    assert "argument `x` changed: 2 → 5" in str(run_cell(shell, "f.explain(5)"))
