"""``Memory``: one owner for the cache's settings, usable from a plain script."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import funcache_ipy
from funcache_ipy import Memory, default_memory
from funcache_ipy.store import open_store

SCRIPT = """
import io
import sys
import time
from funcache_ipy import Memory

memory = Memory("cache", size_limit=2**30)

def runs():
    return sys.stdout.getvalue().count("run")  # NB. a global list would be a dependency

@memory.cache
def double(x):
    print("run")
    return 2 * x

@memory.cache
def square(x):
    print("run")
    return x * x

real_stdout, sys.stdout = sys.stdout, io.StringIO()
assert [double(1), double(1), square(3)] == [2, 2, 9], "wrong values"
assert runs() == 2, f"expected 2 runs, got {runs()} (cache not used)"
text = str(memory.info())
assert "(caching on)" in text and "__main__.double" in text and "__main__.square" in text, text

memory.enabled = False
assert double(1) == 2 and runs() == 3, f"off should just run, got {runs()} runs"
assert "(caching off)" in str(memory.info())
memory.enabled = True

SCALE = 1  # a new version of triple for each SCALE
@memory.cache
def triple(x):
    return 3 * x * SCALE
triple(1)
time.sleep(0.01)  # NB. versions are ordered by when they were stored
SCALE = 2
triple(1)
pruned = memory.prune("triple")
assert pruned.entries == 1, f"expected the older version of triple pruned, got {pruned}"
assert memory.clear("square") == 1, "expected square's one entry removed"
assert memory.clear() == 2, "expected double's and triple's entries removed"
assert double(1) == 2 and runs() == 4, f"expected a recompute after clear: {runs()} runs"
assert "IPython" not in sys.modules, "a script must not import IPython"
sys.stdout = real_stdout
print("ok")
"""


def test_a_script_lists_clears_prunes_and_switches_off_without_ipython(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(SCRIPT))
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    assert (tmp_path / "cache").is_dir(), "the memory's directory was not used"


def test_a_new_directory_applies_to_functions_decorated_before(tmp_path: Path) -> None:
    memory = Memory(str(tmp_path / "first"))

    @memory.cache
    def half(x: int) -> float:
        return x / 2

    half(4)
    memory.directory = str(tmp_path / "second")
    half(4)
    assert len(open_store(tmp_path / "second").entries()) == 1, "the new directory was ignored"
    assert len(open_store(tmp_path / "first").entries()) == 1


def test_a_function_directory_overrides_its_memory_but_keeps_its_limits(tmp_path: Path) -> None:
    memory = Memory(str(tmp_path / "shared"), size_limit=2**20)

    @memory.cache(directory=str(tmp_path / "own"))
    def negate(x: int) -> int:
        return -x

    assert negate(5) == -5
    own = open_store(tmp_path / "own")
    assert len(own.entries()) == 1 and own.size_limit == 2**20
    assert not (tmp_path / "shared").exists(), "the memory's directory was used"


def test_the_package_decorator_is_the_default_memorys(isolated_cache: Path) -> None:
    assert funcache_ipy.cache == default_memory.cache

    @funcache_ipy.cache
    def increment(x: int) -> int:
        return x + 1

    assert increment.memory is default_memory
    increment(1)
    assert [meta.name for _, meta in open_store(isolated_cache).entries()] == [
        f"{__name__}.test_the_package_decorator_is_the_default_memorys.<locals>.increment"
    ]
