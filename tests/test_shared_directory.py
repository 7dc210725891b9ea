"""Several Unix users sharing one local cache directory (setgid, group-writable).

The real test creates two users and a group (we run as root in CI's container) and runs
each user's calls in a forked child that drops to that user's uid and gids, with the
usual umask 022: the interpreter lives under /root, so a child cannot exec it afresh as
another user, but a fork that has imported everything already runs on. Without root,
the same story runs with two secrets under one uid (what distinguishes users to the
cache is their secret), which leaves out the permission half.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import funcache_ipy
from funcache_ipy.cache_directory import ENV_VAR
from funcache_ipy.store import open_store

RUNS: list[int] = []


@funcache_ipy.cache
def label(n: int) -> str:
    RUNS.append(n)
    # 64 KiB: stored in a value file, so sub-directories get created, by either user.
    return f"label {n} " + "x" * 2**16


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    config: Path


def _call(user: User | None, config: Path, directory: Path, action: str) -> dict[str, object]:
    """Run ``action`` in a forked child (as ``user`` if given); its runs, value, warnings."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns to pytest
        status = 1
        try:
            os.close(read)
            os.umask(0o022)
            if user is not None:
                _warm_up()
                os.setgroups([user.gid])
                os.setgid(user.gid)
                os.setuid(user.uid)
            os.environ["XDG_CONFIG_HOME"] = str(config)
            os.environ[ENV_VAR] = str(directory)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                RUNS.clear()
                if action == "clear":
                    value: object = open_store().clear()
                else:
                    value = label(3)[:7]
            report = {
                "runs": len(RUNS),
                "value": value,
                "warnings": [str(w.message) for w in caught],
            }
            os.write(write, json.dumps(report).encode())
            status = 0
        except BaseException as exc:  # shown by the parent
            os.write(write, json.dumps({"error": repr(exc)}).encode())
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    report: dict[str, object] = json.loads(data)
    assert "error" not in report, f"child failed: {report['error']}"
    return report


def _warm_up() -> None:
    """Call ``label`` once in a scratch directory, so that every module it needs is
    imported while the interpreter's files under /root are still readable."""
    scratch = tempfile.mkdtemp(prefix="funcache-warm-")
    os.environ["XDG_CONFIG_HOME"] = scratch
    os.environ[ENV_VAR] = scratch + "/cache"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        label(3)
    shutil.rmtree(scratch)


def _run(*command: str) -> bool:
    return subprocess.run(command, capture_output=True, check=False).returncode == 0


@pytest.fixture
def team() -> Iterator[tuple[list[User], Path]]:
    """Two fresh users in a fresh group, and a setgid group directory they share."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("creating Unix users needs root and useradd")
    tag = uuid.uuid4().hex[:8]
    group, names = f"fct{tag}", [f"fca{tag}", f"fcb{tag}"]
    base = Path(tempfile.mkdtemp(prefix="funcache-team-"))
    made: list[str] = []
    try:
        if not _run("groupadd", group):
            pytest.skip(f"groupadd {group} failed")
        for name in names:
            if not _run("useradd", "-M", "-N", "-g", group, "-s", "/usr/sbin/nologin", name):
                pytest.skip(f"useradd {name} failed")
            made.append(name)
        base.chmod(0o755)
        shared = base / "shared"
        shared.mkdir()
        users = []
        for name in names:
            info = subprocess.run(["id", "-u", name], capture_output=True, text=True, check=True)
            gid = int(subprocess.run(["id", "-g", name], capture_output=True, text=True).stdout)
            config = base / f"{name}-config"
            config.mkdir(mode=0o700)
            os.chown(config, int(info.stdout), gid)
            users.append(User(name, int(info.stdout), gid, config))
        os.chown(shared, 0, users[0].gid)
        shared.chmod(0o2770)
        yield users, shared
    finally:
        for name in made:
            _run("userdel", name)
        _run("groupdel", group)
        shutil.rmtree(base, ignore_errors=True)


def test_two_unix_users_share_a_setgid_directory(team: tuple[list[User], Path]) -> None:
    (alice, bob), shared = team
    steps = [
        (alice, "call", 1),  # computes and stores
        (bob, "call", 1),  # cannot verify alice's entry: computes and stores his own
        (alice, "call", 0),  # her entry was neither deleted nor overwritten by bob
        (bob, "call", 0),  # nor his by her
    ]
    for user, action, expected in steps:
        report = _call(user, user.config, shared, action)
        assert report["warnings"] == [], f"{user.name}: unexpected warnings {report['warnings']}"
        assert report["value"] == "label 3", f"{user.name}: wrong value {report['value']!r}"
        assert report["runs"] == expected, (
            f"{user.name}: expected {expected} run(s), got {report['runs']} "
            "(a teammate's entry deleted or overwritten, or the directory not writable)"
        )
    cleared = _call(bob, bob.config, shared, "clear")
    assert cleared["value"] == 1, f"bob's clear removed {cleared['value']} entries, expected 1"
    again = _call(alice, alice.config, shared, "call")
    assert again["runs"] == 0, "bob's clear() deleted alice's entry"
    for path in [shared, *shared.rglob("*")]:
        mode = path.stat().st_mode
        assert mode & 0o060 == 0o060 or path.name == ".gitignore", (
            f"{path} is {stat.filemode(mode)}: not group-writable, so a teammate cannot use it"
        )
        if path.is_dir():
            assert mode & stat.S_ISGID, f"{path} is {stat.filemode(mode)}: lost the setgid bit"


def test_two_secrets_share_a_setgid_directory(tmp_path: Path) -> None:
    """One uid, two secrets: the part of the story that needs no root (see the docstring)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o2770)
    configs = [tmp_path / "alice", tmp_path / "bob"]
    for config in configs:
        config.mkdir(mode=0o700)
    for config, expected in zip(configs * 2, [1, 1, 0, 0], strict=True):
        report = _call(None, config, shared, "call")
        assert report["warnings"] == [], f"unexpected warnings {report['warnings']}"
        assert report["runs"] == expected, (
            f"{config.name}: expected {expected} run(s), got {report['runs']} "
            "(a teammate's entry was deleted or overwritten)"
        )


def test_world_writable_setgid_directory_still_warns(tmp_path: Path) -> None:
    shared = tmp_path / "open"
    shared.mkdir()
    shared.chmod(0o2777)
    report = _call(None, tmp_path, shared, "call")
    assert any("writable by others" in text for text in report["warnings"]), (
        f"no warning for a world-writable directory: {report['warnings']}"
    )
