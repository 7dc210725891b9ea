"""Memory a large entry is read into: numpy's allocator when numpy is loaded, else a mapping.

Either way a loaded array owns writable memory no other load shares, and a raw buffer
(a file a run wrote, stored as a ``PickleBuffer``) comes back bytes-like, as the code
writing files back expects. Each case runs in a fresh interpreter, with and without numpy
imported, since which allocator is used depends on that.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

MIB = 2**20

_CHECK = """
    import json, pickle, sys
    {imports}
    from funcache_ipy.store import EntryMeta, Store, open_store

    meta = EntryMeta("test", 0.0, 0.0, 0, {{}})
    raw = bytes(range(256)) * (3 * {mib} // 256 + 1)  # several chunks, above one huge page
    writer = open_store()
    assert writer.set("raw" * 11, pickle.PickleBuffer(bytearray(raw)), meta)
    assert writer.set("blob" * 8, bytearray(raw), meta)
    reader = Store(writer.directory)  # another process, as far as the store can tell
    first, second = reader.get("raw" * 11), reader.get("raw" * 11)
    blob = reader.get("blob" * 8)
    report = {{
        "numpy": "numpy" in sys.modules,
        "bytes_like": isinstance(first, (bytes, bytearray, memoryview)),
        "equal": bytes(first) == raw and bytes(blob) == raw,
        "blob_type": type(blob).__name__,
    }}
    view = memoryview(first).cast("B")
    view[0] ^= 0xFF  # writable, and no later load sees it
    report["unshared"] = bytes(second) == raw and bytes(reader.get("raw" * 11)) == raw
    print(json.dumps(report))
"""


@pytest.mark.parametrize("with_numpy", [True, False], ids=["numpy-loaded", "no-numpy"])
def test_a_large_raw_buffer_comes_back_bytes_like_writable_and_unshared(
    with_numpy: bool, isolated_cache: Path
) -> None:
    code = _CHECK.format(imports="import numpy" if with_numpy else "", mib=MIB)
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.splitlines()[-1])
    assert report["numpy"] is with_numpy, f"numpy loaded: {report['numpy']}, expected {with_numpy}"
    assert report["bytes_like"], "a stored PickleBuffer came back as something not bytes-like"
    assert report["equal"], "a large raw buffer came back with other bytes"
    assert report["blob_type"] == "bytearray", f"a bytearray came back as {report['blob_type']}"
    assert report["unshared"], "two loads of one entry share memory (a write showed through)"
