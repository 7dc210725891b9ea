"""Listing the shared tier: ``%funcache info --remote`` and ``Memory.info(remote=True)``.

The team (separate users, each with their own keys and local cache, on moto's S3 server or
a shared folder) is the one of :mod:`tests.test_remote`. The listing must come from the
small signed ``.meta`` objects alone: values are never downloaded to list them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from funcache_ipy import Memory
from funcache_ipy.housekeeping import HousekeepingError
from funcache_ipy.store import FuncacheWarning
from tests import test_remote
from tests.conftest import run_cell
from tests.test_remote import Team, User

pytest.importorskip("s3fs")
pytest.importorskip("cryptography")

# The fixtures of the team, under their own names (assigned, not imported: a test's
# parameter of the same name is then not read as shadowing an unused import).
s3_server = test_remote.s3_server
team = test_remote.team

# Alice stores scale(1)..scale(N) and offset(1); the last line is what User.run reads.
ALICE_SCRIPT = """
import json, sys
import funcache_ipy

@funcache_ipy.cache
def scale(n):
    return list(range(n)) * 100

@funcache_ipy.cache
def offset(n):
    return n + 1

values = [scale(n) for n in range(1, int(sys.argv[1]) + 1)] + [offset(1)]
print(json.dumps({"ran": len(values)}))
"""

# Carol, who does not trust alice, stores offset(1) herself and lists, in plain Python.
CAROL_SCRIPT = """
import sys
import funcache_ipy

@funcache_ipy.cache
def offset(n):
    return n + 1

offset(1)
print(funcache_ipy.default_memory.info(remote=True))
assert "IPython" not in sys.modules, "a script must not import IPython"
"""

MINE = """
import funcache_ipy
@funcache_ipy.cache
def mine(x):
    return x * 2
mine(1)
"""


def signer_shown(user: User) -> str:
    """How a listing names ``user``: the start of the public key they hand out."""
    key = user.public_key()
    assert key.startswith("ed25519:"), key
    return key[:16] + "…"


def shared_rows(text: str) -> dict[tuple[str, str], tuple[int, str]]:
    """``(name, signer) -> (entries, size)`` from the shared section of an info listing."""
    assert "\nshared: " in text, f"no shared section in the listing:\n{text}"
    section = text[text.index("\nshared: ") :].splitlines()
    rows: dict[tuple[str, str], tuple[int, str]] = {}
    header = [i for i, line in enumerate(section) if line.startswith("name ")]
    for line in section[header[0] + 1 :] if header else []:
        name, _kind, signer, entries, size, _stored = re.split(r"\s{2,}", line.strip())
        rows[name, signer] = (int(entries), size)
    return rows


@pytest.fixture
def as_bob(team: Team, monkeypatch: pytest.MonkeyPatch) -> Team:
    """This process is bob (keys and local cache of the test), on the team's remote."""
    import s3fs

    # NB. fsspec reuses an S3 filesystem made with the same arguments, whatever the
    # endpoint in the environment: one made for another module's server would be stale.
    s3fs.S3FileSystem.clear_instance_cache()
    for name, value in team.aws.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FUNCACHE_IPY_REMOTE", team.remote)
    return team


def test_info_remote_lists_trusted_signers_per_name_and_never_untrusted_ones(
    as_bob: Team,
    ip: InteractiveShell,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alice, carol = as_bob.user("alice"), as_bob.user("carol")
    alice.run(2, script=ALICE_SCRIPT)
    alice_shown = signer_shown(alice)
    monkeypatch.setenv("FUNCACHE_IPY_TRUST", alice.public_key())

    run_cell(ip, MINE)
    capsys.readouterr()
    run_cell(ip, "%funcache info --remote")
    listing = capsys.readouterr().out
    local = listing[: listing.index("\nshared: ")]
    assert "__main__.mine" in local and "__main__.scale" not in local, (
        f"expected the local listing (bob's own function only) first:\n{listing}"
    )
    assert f"shared: {as_bob.remote} (entries by you and 1 signer you trust)" in listing, listing
    rows = shared_rows(listing)
    expected = {
        ("__main__.mine", "you"),
        ("__main__.scale", alice_shown),
        ("__main__.offset", alice_shown),
    }
    assert set(rows) == expected, f"expected rows {sorted(expected)}, got {sorted(rows)}"
    counts = {name: rows[name, signer][0] for name, signer in rows}
    assert counts == {"__main__.mine": 1, "__main__.scale": 2, "__main__.offset": 1}, (
        f"expected 1 entry of mine (you), 2 of scale and 1 of offset (alice), got {counts}"
    )

    # Carol does not trust alice: her own offset(1) is listed, nothing of alice's.
    done = carol._python(["-c", CAROL_SCRIPT])
    carol_rows = shared_rows(done.stdout)
    assert set(carol_rows) == {("__main__.offset", "you")}, (
        f"expected carol's own offset only, got {sorted(carol_rows)}:\n{done.stdout}"
    )
    assert carol_rows["__main__.offset", "you"][0] == 1, carol_rows
    assert alice_shown not in done.stdout and "__main__.scale" not in done.stdout, (
        f"an untrusted signer's entries were listed:\n{done.stdout}"
    )
    assert "(entries by you and 0 signers you trust)" in done.stdout, done.stdout


def test_listing_reads_only_metadata_objects(as_bob: Team, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = as_bob.user("alice")
    alice.run(2, script=ALICE_SCRIPT)
    alice_shown = signer_shown(alice)
    monkeypatch.setenv("FUNCACHE_IPY_TRUST", alice.public_key())
    memory = Memory(remote=as_bob.remote)

    def listed() -> tuple[dict[tuple[str, str], tuple[int, str]], str]:
        text = repr(memory.info(remote=True))
        return shared_rows(text), text

    before, text = listed()
    assert {name: entries for (name, _), (entries, _) in before.items()} == {
        "__main__.scale": 2,
        "__main__.offset": 1,
    }, f"expected alice's 2 scale and 1 offset entries:\n{text}"
    objects = as_bob.objects()
    values = [path for path in objects if not path.endswith(".meta")]
    metas = [path for path in objects if path.endswith(".meta")]
    fs = as_bob.fs
    for path in values:
        fs.pipe_file(path, b"not a signed value")  # type: ignore[attr-defined]
    assert listed()[0] == before, "the listing changed when the values were replaced by garbage"
    fs.rm(values)  # type: ignore[attr-defined]
    after, text = listed()
    assert after == before, f"the listing changed when the values were deleted:\n{text}"
    assert "skipped" not in text, text

    # A new entry of alice's shows in the same session (no stale listing of her folder).
    alice.run(3, script=ALICE_SCRIPT)
    after, text = listed()
    assert after[("__main__.scale", alice_shown)][0] == 3, f"expected alice's new scale(3):\n{text}"

    # The .meta objects decide: a tampered one is skipped (and said), a deleted one is gone.
    offset_meta = next(path for path in metas if b'"__main__.offset"' in objects[path])
    tampered = bytearray(objects[offset_meta])
    tampered[-3] ^= 0x01
    fs.pipe_file(offset_meta, bytes(tampered))  # type: ignore[attr-defined]
    fs.rm(next(path for path in metas if b'"__main__.scale"' in objects[path]))  # type: ignore[attr-defined]
    after, text = listed()
    assert set(after) == {("__main__.scale", alice_shown)}, f"expected scale only:\n{text}"
    assert after[("__main__.scale", alice_shown)][0] == 2, f"expected 3 - 1 deleted .meta:\n{text}"
    assert "skipped 1 object that could not be verified (left in place)" in text, text
    assert as_bob.objects()[offset_meta] == bytes(tampered), "a tampered .meta was deleted"


def test_memory_info_remote_needs_a_remote_and_survives_an_unreachable_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FUNCACHE_IPY_REMOTE", raising=False)
    with pytest.raises(HousekeepingError, match=r"\$FUNCACHE_IPY_REMOTE or Memory\(remote="):
        Memory().info(remote=True)

    # NB. A regular file where the remote's folder should be: every read of it fails.
    blocked = tmp_path / "blocked"
    blocked.write_text("")
    memory = Memory(remote=blocked.as_uri())
    with pytest.warns(FuncacheWarning) as caught:
        first = repr(memory.info(remote=True))
        again = repr(memory.info(remote=True))
    messages = [str(warning.message) for warning in caught]
    assert len(messages) == 1 and "cannot read the shared cache" in messages[0], messages
    for text in (first, again):
        assert text.startswith("funcache: ") and text.endswith(
            "\nunreachable this session: not listed"
        ), f"expected the local listing, then the remote as not listed:\n{text}"


def test_info_remote_without_a_remote_is_a_usage_error(
    ip: InteractiveShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FUNCACHE_IPY_REMOTE", raising=False)
    with pytest.raises(
        UsageError, match=r"no shared cache is configured \(set \$FUNCACHE_IPY_REMOTE"
    ):
        run_cell(ip, "%funcache info --remote")
    with pytest.raises(UsageError, match="--remote goes with %funcache info or clear, not prune"):
        run_cell(ip, "%funcache prune --remote")
