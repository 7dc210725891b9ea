"""Large results: read and checksummed in one pass, into memory of their own, one copy.

Value files are read a chunk at a time and each chunk is checksummed as it arrives, so
these tests damage bytes in every part of a multi-chunk file and check that a load is
still a warned miss; and load in a new process to check that one copy is all it takes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from funcache_ipy.store import MISSING, FuncacheWarning, open_store
from tests.store_helpers import meta, reopen, value_file

KEY = "0123456789abcdef0123456789abcdef"
MIB = 2**20


def frame() -> pd.DataFrame:
    """Three columns of 3 MiB + a few bytes: several buffers, each several chunks long."""
    rows = 3 * MIB // 8 + 5
    return pd.DataFrame(
        {
            "x": np.arange(rows, dtype=np.float64),
            "n": np.arange(rows, dtype=np.int64) * 3,
            "t": pd.date_range("2024-01-01", periods=rows, freq="s"),
        }
    )


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_large_frame_comes_back_equal(isolated_cache: Path) -> None:
    value = frame()
    assert open_store().set(KEY, value, meta()) is True
    loaded = reopen(isolated_cache).get(KEY)
    assert isinstance(loaded, pd.DataFrame), f"expected a DataFrame, got {type(loaded)}"
    assert loaded.equals(value) and list(loaded.dtypes) == list(value.dtypes), "wrong frame"


def test_several_large_arrays_come_back_writable_and_unshared(isolated_cache: Path) -> None:
    value = {name: column.to_numpy().copy() for name, column in frame().items()}
    assert open_store().set(KEY, value, meta()) is True
    loaded = reopen(isolated_cache).get(KEY)
    assert isinstance(loaded, dict) and loaded.keys() == value.keys()
    for name, array in loaded.items():
        assert array.dtype == value[name].dtype and np.array_equal(array, value[name]), name
        array[:] = array[-1]  # writable without a copy, as np.load's arrays are
    assert loaded["x"][0] == loaded["x"][-1] and loaded["n"][0] != 0, "arrays share memory"
    again = reopen(isolated_cache).get(KEY)
    assert isinstance(again, dict) and np.array_equal(again["x"], value["x"]), "store changed"


@pytest.mark.parametrize(
    "where", [0.0, 0.2, 0.5, 0.99, 1.0], ids=["start", "first-third", "middle", "end", "last"]
)
def test_flipped_byte_anywhere_in_a_large_file_is_a_warned_miss(
    where: float, isolated_cache: Path
) -> None:
    open_store().set(KEY, frame(), meta())
    path = value_file(isolated_cache, KEY)
    flip(path, min(int(path.stat().st_size * where), path.stat().st_size - 1))
    with pytest.warns(FuncacheWarning, match="unusable") as record:
        assert reopen(isolated_cache).get(KEY) is MISSING, "a damaged entry was served"
    assert KEY in str(record[0].message)
    assert not path.exists(), "the damaged value file was kept"


def test_file_cut_inside_a_buffer_is_a_warned_miss(isolated_cache: Path) -> None:
    open_store().set(KEY, frame(), meta())
    path = value_file(isolated_cache, KEY)
    os.truncate(path, path.stat().st_size - 3 * MIB)
    with pytest.warns(FuncacheWarning, match="truncated envelope"):
        assert reopen(isolated_cache).get(KEY) is MISSING, "a truncated entry was served"


def test_loading_in_a_new_process_holds_a_single_copy(isolated_cache: Path) -> None:
    """Peak memory of a load is the array plus little: no second copy to verify or unpickle."""
    size = 64 * MIB
    open_store().set(KEY, np.ones(size // 8), meta())
    code = f"""
        import json
        import numpy  # imported before, as in the notebook that made the array
        from funcache_ipy.store import open_store

        def memory(field):  # NB. VmHWM, not ru_maxrss: that one counts the forking parent
            with open("/proc/self/status") as status:
                line = next(line for line in status if line.startswith(field))
            return int(line.split()[1]) * 1024

        store = open_store()
        before = memory("VmRSS:")
        array = store.get({KEY!r})
        print(json.dumps([memory("VmHWM:") - before, float(array.sum())]))
        """
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc (Linux)")
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    growth, total = json.loads(out.stdout)
    assert total == size // 8, f"expected a sum of {size // 8}, got {total}"
    assert growth < 1.1 * size, f"a load of {size} bytes grew the peak RSS by {growth}"
