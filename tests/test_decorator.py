"""The ``@cache`` decorator's contract: keys, helpers, kinds of callables, faults."""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import funcache_ipy
from funcache_ipy.hashing import UnhashableError
from funcache_ipy.memory import default_memory
from funcache_ipy.store import FuncacheWarning
from tests.conftest import run_cell

# NB. Bodies report their runs by printing: a list they appended to would be a global
# (or closure) they read, hence part of their key, and every call would rightly miss.


def runs(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Lines printed by function bodies since the last call."""
    return capsys.readouterr().out.split()


def test_hit_returns_stored_value_without_running(isolated_cache: Path, capsys) -> None:
    @funcache_ipy.cache
    def double(x):
        print("ran")
        return {"value": x * 2}

    assert double(3) == {"value": 6}
    assert double(3) == {"value": 6}
    assert runs(capsys) == ["ran"]
    assert double.cache_info()[:3] == (1, 1, 1)
    assert isolated_cache.is_dir()


def test_signature_binding_gives_one_key(capsys) -> None:
    @funcache_ipy.cache
    def add(a, b=2, *rest, scale=1, **options):
        print("ran")
        return (a + b) * scale

    assert add(1, 2) == add(1, b=2) == add(a=1) == add(1) == 3
    assert runs(capsys) == ["ran"]
    assert add(1, 2, 3) == add(1, 2, 3) == 3 and add(1, k=1, j=2) == add(1, j=2, k=1)
    assert runs(capsys) == ["ran", "ran"]


def test_argument_types_are_distinct_keys() -> None:
    @funcache_ipy.cache
    def kind(x):
        return type(x).__name__

    assert [kind(1), kind(1.0), kind(True), kind("1"), kind(None)] == [
        "int",
        "float",
        "bool",
        "str",
        "NoneType",
    ]


def test_wrapper_keeps_name_doc_signature() -> None:
    def load(path: str, *, verbose: bool = False) -> int:
        """Load it."""
        return 1

    cached = funcache_ipy.cache(ignore=["verbose"])(load)
    assert cached.__name__ == "load" and cached.__doc__ == "Load it."
    assert inspect.signature(cached) == inspect.signature(load)
    assert cached.__wrapped__ is load and cached.uncached is load


def test_none_is_cached_and_exceptions_are_not(capsys) -> None:
    @funcache_ipy.cache
    def maybe(x):
        print(x)
        if x < 0:
            raise ValueError("negative")
        return None

    assert maybe(1) is None and maybe(1) is None
    for _ in range(2):
        with pytest.raises(ValueError, match="negative"):
            maybe(-1)
    assert runs(capsys) == ["1", "-1", "-1"]


def test_mutating_a_result_does_not_change_the_next_hit() -> None:
    @funcache_ipy.cache
    def make():
        return [1, 2, 3]

    make().append(4)
    hit = make()
    hit.append(5)
    assert make() == [1, 2, 3]


def test_ignore_leaves_parameter_out_and_rejects_unknown_names(capsys) -> None:
    @funcache_ipy.cache(ignore=["verbose"])
    def f(x, verbose=False):
        print(x)
        return x

    f(1, verbose=True)
    f(1, verbose=False)
    assert runs(capsys) == ["1"]
    with pytest.raises(TypeError, match=r"ignore= names \['nope'\].*parameters are \['x'\]"):
        funcache_ipy.cache(ignore=["nope"])(lambda x: x)


def test_version_salt_forces_recompute(monkeypatch: pytest.MonkeyPatch) -> None:
    def source():
        return os.environ["FUNCACHE_TEST_SOURCE"]  # a dependency funcache_ipy cannot see

    monkeypatch.setenv("FUNCACHE_TEST_SOURCE", "old")
    assert funcache_ipy.cache(version="v1")(source)() == "old"
    monkeypatch.setenv("FUNCACHE_TEST_SOURCE", "new")
    assert funcache_ipy.cache(version="v1")(source)() == "old"
    assert funcache_ipy.cache(version="v2")(source)() == "new"


def test_unhashable_argument_is_named_never_ignored() -> None:
    @funcache_ipy.cache
    def use(x, conn):
        return x

    lock = threading.Lock()
    with pytest.raises(UnhashableError, match=r"argument 'conn' of .*use\(\) .*ignore=\['conn'\]"):
        use(1, lock)


def test_unhashable_global_is_named() -> None:
    ns = {"funcache_ipy": funcache_ipy, "threading": threading}
    exec("LOCK = threading.Lock()\n@funcache_ipy.cache\ndef f(x):\n    with LOCK: return x", ns)
    with pytest.raises(UnhashableError, match=r"global `LOCK`.*reached from f\(\).*ignore="):
        ns["f"](1)


def test_generator_functions_are_refused_at_decoration() -> None:
    def gen():
        yield 1

    with pytest.raises(TypeError, match=r"cannot cache generator function .*gen\(\)"):
        funcache_ipy.cache(gen)


def test_async_function_caches_awaited_value(capsys) -> None:
    @funcache_ipy.cache
    async def fetch(x):
        print(x)
        await asyncio.sleep(0)
        return x * 10

    assert asyncio.run(fetch(2)) == 20
    assert asyncio.run(fetch(2)) == 20
    assert runs(capsys) == ["2"]
    assert asyncio.run(fetch.refresh(2)) == 20 and runs(capsys) == ["2"]


def test_method_keys_on_instance_state_and_class_code(capsys) -> None:
    class Scaler:
        def __init__(self, k):
            self.k = k

        @funcache_ipy.cache
        def apply(self, x):
            print(self.k)
            return self.k * x

    assert Scaler(2).apply(3) == 6
    assert Scaler(2).apply(3) == 6
    assert Scaler(5).apply(3) == 15
    assert runs(capsys) == ["2", "5"]
    Scaler.extra = "changes the class"
    assert Scaler(2).apply(3) == 6 and runs(capsys) == ["2"]


def test_helpers_clear_refresh_uncached(capsys) -> None:
    @funcache_ipy.cache
    def f(x):
        print(x)
        return x

    f(1), f(2), f(1)
    assert f.cache_info().entries == 2 and f.cache_info().bytes > 0
    assert f.refresh(1) == 1 and f.uncached(1) == 1
    assert runs(capsys) == ["1", "2", "1", "1"]
    assert f.cache_info()[:2] == (1, 2)
    assert f.cache_clear() == 2 and f.cache_info() == (0, 0, 0, 0), "counts reset too"
    f(1)
    assert runs(capsys) == ["1"]


def test_off_switch_bypasses_the_cache(capsys) -> None:
    @funcache_ipy.cache
    def f(x):
        print(x)
        return x

    default_memory.enabled = False
    try:
        f(1), f(1)
    finally:
        default_memory.enabled = True
    assert runs(capsys) == ["1", "1"] and f.cache_info().entries == 0


def test_nothing_after_the_body_can_lose_its_result(capsys) -> None:
    """Arguments are hashed once, before the call; the manifest comes from that pass."""

    @funcache_ipy.cache
    def digits(n):
        print("ran")
        return len(str(n)) if n < 10**4000 else -1

    huge = 10**5000  # repr() refuses it (int-to-str limit)
    assert digits(huge) == -1
    assert digits(huge) == -1
    assert runs(capsys) == ["ran"]
    assert digits.explain(huge + 1).reasons == ("argument `n` changed",)

    @funcache_ipy.cache
    def collect(bag):
        bag.append(threading.Lock())  # the argument can no longer be hashed after the call
        return len(bag)

    assert collect([1, 2]) == 3
    assert collect([1, 2]) == 3, "the entry stored before must hit"


def test_explain_names_the_argument_that_changed() -> None:
    @funcache_ipy.cache
    def scale(values, factor):
        return [v * factor for v in values]

    scale([1, 2], 3)
    scale([1, 2], 4)
    assert str(scale.explain_last()).splitlines()[1:] == ["  - argument `factor` changed: 3 → 4"]
    scale([1, 5], 4)
    assert str(scale.explain_last()).splitlines()[1:] == ["  - argument `values` changed"]


def test_unpicklable_result_is_returned_and_warned() -> None:
    @funcache_ipy.cache
    def make_lock(x):
        return threading.Lock()

    with pytest.warns(FuncacheWarning, match="lock"):
        lock = make_lock(1)
    assert hasattr(lock, "acquire")


def test_store_failure_never_loses_the_result(isolated_cache: Path) -> None:
    isolated_cache.parent.mkdir(exist_ok=True)
    isolated_cache.write_text("a file where the cache directory should be")

    @funcache_ipy.cache
    def f(x):
        return x + 1

    with pytest.warns(FuncacheWarning, match=str(isolated_cache)):
        assert f(1) == 2


def test_entry_is_shared_across_processes_and_hash_seeds(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(
            """
            import funcache_ipy
            WEIGHTS = {"a": [1.5, 2.5], "b": {"x", "y", "z"}}

            @funcache_ipy.cache
            def total(rows):
                print("computing")
                return sum(WEIGHTS["a"]) * len(rows) + len(WEIGHTS["b"])

            print(total([{"k": i} for i in range(3)]), total.cache_info().hits)
            """
        )
    )
    outputs = []
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        done = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, env=env, check=True
        )
        outputs.append(done.stdout.split())
    assert outputs[0] == ["computing", "15.0", "0"]
    assert outputs[1] == ["15.0", "1"], "a second process must reuse the entry"


def test_import_does_not_import_ipython() -> None:
    code = "import sys, funcache_ipy; print('IPython' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_cached_function_defined_in_a_cell_survives_reset(shell) -> None:
    code = "import funcache_ipy\n@funcache_ipy.cache\ndef f(x):\n    print('running')\n    return x * 2"
    run_cell(shell, code)
    assert run_cell(shell, "f(21)") == 42
    shell.reset(new_session=False)  # a restart, as far as the namespace can tell
    run_cell(shell, code)
    assert run_cell(shell, "f.cache_info().hits, f(21), f.cache_info().hits") == (0, 42, 1)
