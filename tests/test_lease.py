"""Concurrent misses of one key compute once; a crashed holder never blocks anyone.

Real processes, each a fresh interpreter like a kernel, call one cached function with a
slow body; a count file written by the body tells how often it ran.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = """
import os, sys, time
import funcache_ipy

@funcache_ipy.cache
def slow(x):
    with open(os.environ["COUNT_FILE"], "a") as count:
        count.write(f"{os.getpid()}\\n")
    time.sleep(float(os.environ["BODY_SECONDS"]))
    return x * 10

print(slow(int(sys.argv[1])))
"""


@pytest.fixture
def script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("COUNT_FILE", str(tmp_path / "computed.txt"))
    path = tmp_path / "slow.py"
    path.write_text(SCRIPT)
    return path


def starts(tmp_path: Path) -> list[str]:
    path = tmp_path / "computed.txt"
    return path.read_text().split() if path.exists() else []


def test_processes_missing_one_key_compute_it_once(
    script: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BODY_SECONDS", "1.5")
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(12)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [err for _, err in outputs]
    assert [out.strip() for out, _ in outputs] == [b"40"] * 12, "every process gets the value"
    assert len(starts(tmp_path)) == 1, (
        f"12 processes missing one key computed it {len(starts(tmp_path))} times (expected 1)"
    )
    waiting = [err for _, err in outputs if b"waiting for process" in err]
    assert waiting, "waiters say whom they wait for"


def test_a_killed_holder_does_not_block_the_next(
    script: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BODY_SECONDS", "600")
    holder = subprocess.Popen([sys.executable, str(script), "5"], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not starts(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert starts(tmp_path), "the holder never started computing"

    monkeypatch.setenv("BODY_SECONDS", "0")
    notices = tmp_path / "waiter.err"
    with notices.open("wb") as err_file:
        waiter = subprocess.Popen(
            [sys.executable, str(script), "5"], stdout=subprocess.PIPE, stderr=err_file
        )
        deadline = time.monotonic() + 60
        while b"waiting for process" not in notices.read_bytes():  # it found the lease held
            assert time.monotonic() < deadline and waiter.poll() is None, notices.read_text()
            time.sleep(0.05)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        out, _ = waiter.communicate(timeout=60)
    assert out.strip() == b"50", notices.read_text()
    assert len(starts(tmp_path)) == 2, "the waiter computed once the holder died"


def test_a_planted_leases_link_is_not_followed(isolated_cache: Path, tmp_path: Path) -> None:
    import funcache_ipy

    outside = tmp_path / "outside"
    outside.mkdir()
    isolated_cache.mkdir(mode=0o700)
    (isolated_cache / "leases").symlink_to(outside)

    @funcache_ipy.cache
    def double(x):  # runs while the lease is held: the time to look for its file
        return 2 * x, os.listdir(outside)

    assert double(21) == (42, []), "a lease file was created outside the cache"
    assert list(outside.iterdir()) == []
