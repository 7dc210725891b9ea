"""What a cell reads and binds, decided from its code alone (``funcache_ipy.analysis``).

The magic end to end (keys, hits, restores) is tested through IPython in ``test_magics.py``.
"""

from __future__ import annotations

import re

import pytest

from funcache_ipy.analysis import analyze_cell


@pytest.mark.parametrize(
    ("code", "inputs", "bound"),
    [
        ("x = x + 1", {"x"}, ("x",)),
        ("data.append(4)", {"data"}, ()),
        ("y = 1\nz = y + w", {"w"}, ("y", "z")),
        ("n = (m := 3) + 1\nm", set(), ("m", "n")),
        ("del old", {"old"}, ()),
        ("import os.path\nimport numpy as np\nfrom a import b as c", set(), ("os", "np", "c")),
        ("with open(p) as fh:\n    text = fh.read()\ntext", {"open", "p"}, ("fh", "text")),
        # a binding that may not happen does not shield later reads
        ("for i in xs:\n    last = i\nlast", {"xs", "last"}, ("i", "last")),
        ("last = None\nfor i in xs:\n    last = i\nlast", {"xs"}, ("last", "i")),
        ("while go():\n    w = 1\nw", {"go", "w"}, ("w",)),
        ("if c:\n    y = 1\ny", {"c", "y"}, ("y",)),
        ("if c:\n    y = 1\nelse:\n    y = 2\ny", {"c"}, ("y",)),
        ("try:\n    v = f()\nexcept ValueError:\n    pass\nv", {"f", "ValueError", "v"}, ("v",)),
        ("try:\n    import t\nexcept ImportError:\n    t = None\nt", {"ImportError"}, ("t",)),
        ("a or (b := 1)\nb", {"a", "b"}, ("b",)),
        ("[y for x in xs if (y := f(x))]\ny", {"xs", "f", "y"}, ("y",)),
        (
            "match cmd:\n    case [a]:\n        z = a\n    case _:\n        z = 0\nz",
            {"cmd"},
            ("a", "z"),
        ),
        ("match cmd:\n    case [a]:\n        z = a\nz", {"cmd", "z"}, ("a", "z")),
        # scopes: comprehensions and class bodies run now, function bodies when called
        ("total = sum(x * K for x in xs)", {"sum", "K", "xs"}, ("total",)),
        (
            "class C(B):\n    a = V\n    b = a\n    def m(self):\n        return H\n",
            {"B", "V", "H"},
            ("C",),
        ),
        (
            "def main():\n    return helper() + S\ndef helper():\n    return 1\nmain()",
            {"S"},
            ("main", "helper"),
        ),
        ("def f(v=D):\n    return [v for v in G]\nf()", {"D", "G"}, ("f",)),
        # a function's reads are inputs unless bound before anything could call it
        ("def f():\n    return X\ny = f()\nX = 5", {"X"}, ("f", "y", "X")),
        ("def f():\n    return X\nX = 5\ny = f()", set(), ("f", "X", "y")),
        (
            "def f(a: int | None = None) -> list[int]:\n    return X\nX: float = -1\ny = f()",
            {"int", "list", "float"},
            ("f", "X", "y"),
        ),
        ("def f():\n    return X\nX = g()\ny = f()", {"g", "X"}, ("f", "X", "y")),
        ("@d\ndef f():\n    return X\nX = 5", {"d", "X"}, ("f", "X")),
        ("def f(v=g()):\n    return X\nX = 5", {"g", "X"}, ("f", "X")),
        ("def f():\n    return X\nclass C:\n    v = f()\nX = 5", {"X"}, ("f", "C", "X")),
        ("class C:\n    def m(self):\n        return X\nc = C()\nX = 1", {"X"}, ("C", "c", "X")),
        ("f = lambda: X\ny = f()\nX = 1", {"X"}, ("f", "y", "X")),
        ("if c:\n    def f():\n        return X\nX = 1", {"c", "X"}, ("f", "X")),
        ("X = 1\ndef f():\n    return X\ny = f()", set(), ("X", "f", "y")),
        ("f = lambda q: q + L", {"L"}, ("f",)),
        (
            "def setup():\n    global model\n    model = load()\nsetup()",
            {"load"},
            ("setup", "model"),
        ),
        # %magic and !shell lines, as IPython transforms them
        ("get_ipython().run_line_magic('time', 'y = f(x)')\ny", {"get_ipython", "f", "x"}, ("y",)),
        ("get_ipython().run_line_magic('timeit', '-n 3 f(x)')", {"get_ipython", "n", "f", "x"}, ()),
        ("get_ipython().system('ls {path}')", {"get_ipython", "ls", "path"}, ()),
    ],
)
def test_inputs_and_bound_names(code: str, inputs: set[str], bound: tuple[str, ...]) -> None:
    analysis = analyze_cell(code)
    assert set(analysis.inputs) == inputs
    assert analysis.bound == bound


def test_normalized_code_ignores_comments_blank_lines_and_layout() -> None:
    plain = analyze_cell("x = f(1, 2)\ny = x")
    noisy = analyze_cell("# setup\nx = f( 1,\n      2 )  # call\n\n\ny = x\n")
    changed = analyze_cell("x = f(1, 3)\ny = x")
    assert noisy.normalized == plain.normalized != changed.normalized
    assert noisy.default_name == plain.default_name != changed.default_name
    assert re.fullmatch(r"cell:[0-9a-f]{8}", plain.default_name)


@pytest.mark.parametrize(
    ("code", "shows"),
    [("x", True), ("x;", False), ("x;  # quiet", False), ("x = 1", False), ("f(x) ;\n\n", False)],
)
def test_last_expression_and_semicolon(code: str, shows: bool) -> None:
    assert analyze_cell(code).shows_result is shows


def test_definitions_are_replayed_unless_they_read_computed_values() -> None:
    analysis = analyze_cell(
        "import math\nfrom os import path as p\n"
        "def area(r=math.pi):\n    return r\n"
        "class K:\n    unit = p.sep\n"
        "m = 3\n"
        "def scaled(v, m=m):\n    return v * m\n"
        "import numpy as np\nnp = None\n"
    )
    assert analysis.replayed == {"math", "p", "area", "K", "scaled"}
    assert dict(analysis.entangled) == {"scaled": ("m",)}
    kinds = [type(statement).__name__ for statement in analysis.definitions]
    assert kinds == ["Import", "ImportFrom", "FunctionDef", "ClassDef", "FunctionDef", "Import"]


@pytest.mark.parametrize(
    ("code", "awaits"),
    [
        ("await f()", True),
        ("async for x in y:\n    pass", True),
        ("async with l:\n    pass", True),
        ("[x async for x in y]", True),
        ("async def f():\n    await g()", False),
    ],
)
def test_top_level_await_is_detected(code: str, awaits: bool) -> None:
    assert analyze_cell(code).top_level_await is awaits
