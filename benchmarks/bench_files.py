"""Cost of files as inputs: hits that re-check 0, 10 and 100 files, and hashing speed.

Why: every hit of a function that read files re-checks them, so that check must stay a
``stat`` per file; and a changed file is re-hashed, so hashing must run near memory
speed. The audit hook that records reads is installed on the first tracked run and must
cost nothing measurable afterwards, so the small hit is measured before and after it.

Usage: ``python benchmarks/bench_files.py`` (about 20 s; writes a 1 GiB file, needs
that much free disk and RAM for the page cache). Everything lives under a temporary
directory removed at the end, including the HMAC key.
"""

from __future__ import annotations

import mmap
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from report import median_seconds, per_call_us, table

SIZES = (10, 100)
BIG = 2**30


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="funcache-bench-files-"))
    os.environ["FUNCACHE_IPY_DIR"] = str(root / "cache")
    os.environ["XDG_CONFIG_HOME"] = str(root / "config")
    os.chdir(root)
    try:
        import xxhash

        import funcache_ipy
        from funcache_ipy import files

        @funcache_ipy.cache
        def small(x: int) -> dict[str, int]:
            return {"x": x}

        small(3)
        before_hook = per_call_us(lambda: small(3))

        data = root / "data"
        data.mkdir()
        for i in range(max(SIZES)):
            (data / f"part{i:03d}.csv").write_text(f"a,b\n{i},{i * 2}\n")
        # NB. A file changed less than 3 s ago is "racy": its stat is not trusted yet.
        time.sleep(3.1)

        @funcache_ipy.cache
        def reads(count: int) -> int:
            return sum(len(open(data / f"part{i:03d}.csv").read()) for i in range(count))

        rows = []
        for count in SIZES:
            reads(count)
            if reads(count) != reads.uncached(count):
                raise SystemExit("stale result from reads()")
            rows.append((count, per_call_us(lambda count=count: reads(count))))
        after_hook = per_call_us(lambda: small(3))

        (data / "part000.csv").write_text("a,b\n9,9\n")
        if reads(10) != reads.uncached(10):
            raise SystemExit("a changed file was not noticed")

        big = root / "big.bin"
        block = os.urandom(2**20)
        with open(big, "wb") as f:
            for _ in range(BIG // len(block)):
                f.write(block)
        info = os.stat(big)
        identity = (info.st_size, info.st_mtime_ns, info.st_ino, info.st_ctime_ns)
        # the function behind every re-hash (state_of caches its answer, so call it directly)
        read_hash = median_seconds(lambda: files._hash_file(str(big), identity), 5, warmup=True)

        def mapped() -> None:
            with open(big, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                xxhash.xxh3_128(m).digest()

        mmap_hash = median_seconds(mapped, 5, warmup=True)
        memory_hash = _hash_in_memory(block * (BIG // len(block)))
    finally:
        os.chdir(tempfile.gettempdir())
        shutil.rmtree(root, ignore_errors=True)

    gb = BIG / 1e9
    print(
        table(
            ("measurement", "result"),
            [
                ("small hit, before any tracked run", f"{before_hook:.1f} µs"),
                ("small hit, audit hook installed", f"{after_hook:.1f} µs"),
                *(
                    (
                        f"hit re-checking {n} files",
                        f"{us:.1f} µs (+{(us - after_hook) / n:.2f} µs/file)",
                    )
                    for n, us in rows
                ),
                ("hash 1 GiB file, read() into a buffer", f"{gb / read_hash:.1f} GB/s"),
                ("hash 1 GiB file, mmap (not used: SIGBUS)", f"{gb / mmap_hash:.1f} GB/s"),
                ("xxh3-128 of the same bytes in memory", f"{gb / memory_hash:.1f} GB/s"),
            ],
        )
    )
    return 0


def _hash_in_memory(data: bytes) -> float:
    """Median seconds of xxh3-128 over bytes already in memory: the ceiling."""
    import xxhash

    return median_seconds(lambda: xxhash.xxh3_128(data).digest(), 5)


if __name__ == "__main__":
    sys.exit(main())
