"""Cost of the shared tier on a local S3 API: remote hits against a raw get of the same bytes.

Why: a remote hit should cost about what downloading the object costs (bar: at most 1.2x
a raw ``s3fs`` get of the same object), and once a remote hit has filled the local tier,
the next hit is a plain local hit (bar: as fast as a hit on an entry computed locally).
Signature verification hashes every byte with SHA-256, so its cost on 256 MB is shown
beside the download it guards.

Usage: ``python benchmarks/bench_remote.py`` (about a minute; needs ``moto[server]``,
``s3fs``, ``cryptography`` and ~2 GB of RAM). It starts moto's S3 server on 127.0.0.1;
caches, keys and the bucket are temporary. A remote hit is measured after deleting the
local entry (``Store.clear()``, not timed), so each one downloads; hits and raw gets take
turns, so the machine's load weighs on both alike.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from report import interleaved, median_seconds, seconds, table

BIG = 256 * 2**20
REPEATS = 5


def start_server(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    with open(log, "wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    for _ in range(300):
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).close()
            return server, endpoint
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto did not start: {log.read_text()}")


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="funcache-bench-remote-"))
    server, endpoint = start_server(root / "moto.log")
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(root / "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(root / "aws-credentials"),
        XDG_CONFIG_HOME=str(root / "config"),
        FUNCACHE_IPY_DIR=str(root / "cache"),
    )
    os.chdir(root)
    try:
        import numpy as np
        import s3fs

        import funcache_ipy
        from funcache_ipy.signing import KIND_VALUE
        from funcache_ipy.store import open_store

        fs = s3fs.S3FileSystem()
        fs.mkdir("bench")

        def small(x: int) -> dict[str, int]:
            return {"x": x, "y": x * 2}

        def big(n: int) -> np.ndarray:
            return np.full(n // 8, 1.5)

        local_small, local_big = funcache_ipy.cache(small), funcache_ipy.cache(big)
        local_small(3), local_big(BIG)
        today_small = median_seconds(lambda: local_small(3), 51, warmup=True)
        today_big = median_seconds(lambda: local_big(BIG), REPEATS, warmup=True)

        url = "s3://bench/team"
        shared_small = funcache_ipy.cache(small, directory=str(root / "filled"), remote=url)
        shared_big = funcache_ipy.cache(big, directory=str(root / "filled"), remote=url)
        shared_small(3), shared_big(BIG)
        store = open_store(str(root / "filled"), url)
        tier = store.remote
        assert tier is not None and tier.flush(600) == 0, "uploads did not finish"
        objects = {path: fs.size(path) for path in fs.find("bench/team")}
        values = {p: s for p, s in objects.items() if not p.endswith(".meta")}
        big_path = max(values, key=values.__getitem__)
        small_path = min(values, key=values.__getitem__)

        def remote_hit(function: object, argument: int) -> float:
            store.clear()
            return seconds(lambda: function(argument))  # type: ignore[operator]

        def raw_against_hit(
            path: str, function: object, argument: int, repeats: int
        ) -> tuple[float, float]:
            """Medians of a raw get and a remote hit of ``path``, taking turns after a warm-up."""
            samples = interleaved(
                {
                    "raw": lambda: seconds(lambda: fs.cat_file(path)),
                    "hit": lambda: remote_hit(function, argument),
                },
                repeats + 1,
            )
            return statistics.median(samples["raw"][1:]), statistics.median(samples["hit"][1:])

        raw_small, hit_small = raw_against_hit(small_path, shared_small, 3, 51)
        raw_big, hit_big = raw_against_hit(big_path, shared_big, BIG, REPEATS)
        filled_big = median_seconds(lambda: shared_big(BIG), REPEATS, warmup=True)
        filled_small = median_seconds(lambda: shared_small(3), 51, warmup=True)

        data = bytearray(fs.cat_file(big_path))
        key = big_path.rpartition("/")[2]
        verify = median_seconds(
            lambda: tier.signer.public.verify(data, KIND_VALUE, key), REPEATS, warmup=True
        )
        size = f"{values[big_path] / 2**20:.0f} MB"
        measured = [
            ("remote small hit / raw s3fs get", hit_small, raw_small),
            (f"remote {size} hit / raw s3fs get", hit_big, raw_big),
            ("local small hit after remote fill / local hit today", filled_small, today_small),
            (f"local {size} hit after remote fill / local hit today", filled_big, today_big),
            (f"verify signature of {size} / raw s3fs get", verify, raw_big),
        ]
        rows = [[name, _ms(value), _ms(ref), _x(value, ref)] for name, value, ref in measured]
        print(table(["measure", "funcache_ipy", "reference", "ratio"], rows))
        print(f"\nSHA-256 + Ed25519 verification: {values[big_path] / verify / 2**30:.2f} GiB/s")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(root, ignore_errors=True)
    return 0


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def _x(value: float, reference: float) -> str:
    return f"{value / reference:.2f}x"


if __name__ == "__main__":
    sys.exit(main())
