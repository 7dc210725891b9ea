"""A team sharing one remote cache: real S3 (moto's server on 127.0.0.1) and a shared folder.

Each user is a separate process with their own config directory (so their own secret
and signing keys) and their own local cache directory, as on separate machines. They
run the same script; what it prints says whether the function body ran and what it
returned. On S3 the server enforces IAM: writers get read-write keys, the read-only user
keys that may only get and list.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")
pytest.importorskip("cryptography")

BUCKET = "team"
# ``scale`` returns an array (its bytes travel as a pickle buffer) and a label; the body
# counts its runs in RUNS. The result says how many times it ran and whether the returned
# array is writable (a hit from the remote must give a normal, writable array).
FUNCTION = """
RUNS = []

@funcache_ipy.cache{options}
def scale(n, factor):
    RUNS.append(n)
    return {{"label": f"scale({{n}})", "data": np.arange(n, dtype=np.float64) * factor}}
"""
USER_SCRIPT = (
    """
import json, os, sys
import numpy as np
import funcache_ipy
"""
    + FUNCTION.format(options="")
    + """
n, factor = int(sys.argv[1]), float(sys.argv[2])
result = scale(n, factor)
result["data"][0] = 1.0  # raises if a hit returned a read-only array
print(json.dumps({
    "ran": len(RUNS),
    "label": result["label"],
    "total": float(result["data"][1:].sum()),
}))
"""
)

# The same function sent to a Dask worker with the remote given as ``remote=`` (not in
# the environment), so it reaches the worker with the pickled function.
DASK_SCRIPT = (
    """
import json, os, sys
os.environ.pop("FUNCACHE_IPY_REMOTE")  # NB. so the workers learn it from the function
import numpy as np
import funcache_ipy
from dask.distributed import Client, LocalCluster
"""
    + FUNCTION.format(options="(remote=sys.argv[3])")
    + """
def job(n, factor):
    result = scale(n, factor)
    info = scale.cache_info()
    return result["label"], float(result["data"][1:].sum()), info.misses

if __name__ == "__main__":
    n, factor = int(sys.argv[1]), float(sys.argv[2])
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        label, total, ran = client.submit(job, n, factor, pure=False).result()
    print(json.dumps({"ran": ran, "label": label, "total": total}))
"""
)

# The same function run by joblib's (loky) or a process pool's workers, remote= given as in
# DASK_SCRIPT. The worker reports its own misses: the parent never computes.
POOL_SCRIPT = (
    """
import json, os, sys
os.environ.pop("FUNCACHE_IPY_REMOTE")
import numpy as np
import funcache_ipy
"""
    + FUNCTION.format(options="(remote=sys.argv[3])")
    + """
def job(n, factor):
    result = scale(n, factor)
    return result["label"], float(result["data"][1:].sum()), scale.cache_info().misses

if __name__ == "__main__":
    n, factor, pool = int(sys.argv[1]), float(sys.argv[2]), os.environ["POOL"]
    if pool == "joblib":
        from joblib import Parallel, delayed
        [(label, total, ran)] = Parallel(n_jobs=2)([delayed(job)(n, factor)])
    else:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(max_workers=1) as executor:
            label, total, ran = executor.submit(job, n, factor).result()
    print(json.dumps({"ran": ran, "label": label, "total": total}))
"""
)


@dataclass
class S3Server:
    endpoint: str
    writer: tuple[str, str]
    reader: tuple[str, str]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _post(url: str, body: bytes) -> None:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "text/plain"}
    )
    urllib.request.urlopen(request, timeout=10).close()


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 API on a free port, a bucket, and IAM keys: read-write and read-only.

    Authentication is switched on (``reset-auth``) only once the keys exist, so from then
    on a request signed with the reader's keys may get and list but never put.
    """
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"moto server did not start: {log.read_text()}") from None
                time.sleep(0.1)
        anonymous = {
            "endpoint_url": endpoint,
            "region_name": "us-east-1",
            "aws_access_key_id": "setup",
            "aws_secret_access_key": "setup",
        }
        boto3.client("s3", **anonymous).create_bucket(Bucket=BUCKET)
        iam = boto3.client("iam", **anonymous)
        keys = {}
        for user, actions in [("writer", ["s3:*"]), ("reader", ["s3:GetObject", "s3:ListBucket"])]:
            iam.create_user(UserName=user)
            policy = {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
            }
            iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps(policy))
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
        _post(endpoint + "/moto-api/reset-auth", b"0")
        yield S3Server(endpoint, keys["writer"], keys["reader"])
    finally:
        server.terminate()
        server.wait(timeout=30)


class User:
    """One person: their own config (keys) and local cache, the team's remote."""

    def __init__(self, home: Path, remote: str, aws: dict[str, str]) -> None:
        self.home = home
        self.remote = remote
        self.aws = aws
        self.trust: list[str] = []
        (home / "work").mkdir(parents=True)

    def env(self) -> dict[str, str]:
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("AWS_", "FUNCACHE_IPY_"))
        }
        env.update(self.aws)
        env.update(
            XDG_CONFIG_HOME=str(self.home / "config"),
            FUNCACHE_IPY_DIR=str(self.home / "cache"),
            FUNCACHE_IPY_REMOTE=self.remote,
            FUNCACHE_IPY_TRUST=",".join(self.trust),
            PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), *sys.path]),
        )
        return env

    def public_key(self) -> str:
        return self._python(["-m", "funcache_ipy", "key"]).stdout.strip()

    def run(self, n: int, factor: float = 2.0, script: str = USER_SCRIPT) -> dict[str, object]:
        """Run ``scale(n, factor)`` in a fresh process; what it printed, plus its warnings."""
        done = self._python(["-c", script, str(n), str(factor), self.remote])
        result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
        result["stderr"] = done.stderr
        return result

    def _python(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, *args],
            cwd=self.home / "work",
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, f"user process failed:\n{done.stdout}\n{done.stderr}"
        return done


def expected(n: int, factor: float = 2.0) -> dict[str, object]:
    return {"label": f"scale({n})", "total": float(sum(range(1, n)) * factor)}


def check(result: dict[str, object], ran: int, n: int, who: str, factor: float = 2.0) -> None:
    values = {"label": result["label"], "total": result["total"]}
    assert values == expected(n, factor), f"{who}: expected {expected(n, factor)}, got {values}"
    assert result["ran"] == ran, (
        f"{who}: expected the body to run {ran} time(s), it ran {result['ran']}"
        + (" (needless recompute)" if ran == 0 else " (served without computing)")
        + f"\n{result['stderr']}"
    )


class Team:
    """Users of one remote, and raw access to its objects (to inspect and tamper)."""

    def __init__(self, root: Path, remote: str, aws: dict[str, str], fs: object) -> None:
        self.root, self.remote, self.aws, self.fs = root, remote, aws, fs

    def user(self, name: str, aws: dict[str, str] | None = None) -> User:
        return User(self.root / name, self.remote, aws or self.aws)

    def objects(self) -> dict[str, bytes]:
        """Every object under the remote's prefix (value and metadata), by path."""
        prefix = self.remote.split("://", 1)[1].rstrip("/")
        fs = self.fs
        paths = [p for p in fs.find(prefix) if not p.endswith(".tmp")]  # type: ignore[attr-defined]
        return {path: bytes(fs.cat_file(path)) for path in paths}  # type: ignore[attr-defined]


def _aws(server: S3Server, keys: tuple[str, str], home: Path) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": server.endpoint,
        "AWS_ACCESS_KEY_ID": keys[0],
        "AWS_SECRET_ACCESS_KEY": keys[1],
        "AWS_DEFAULT_REGION": "us-east-1",
        # NB. never read the developer's ~/.aws
        "AWS_CONFIG_FILE": str(home / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
    }


@pytest.fixture(params=["s3", "file"])
def team(request: pytest.FixtureRequest, tmp_path: Path) -> Team:
    """A team on the S3 server (its own prefix per test) or on a shared folder."""
    import fsspec

    if request.param == "file":
        shared = tmp_path / "shared"
        return Team(tmp_path, f"file://{shared}", {}, fsspec.filesystem("file"))
    server: S3Server = request.getfixturevalue("s3_server")
    aws = _aws(server, server.writer, tmp_path)
    fs = fsspec.filesystem(
        "s3", key=server.writer[0], secret=server.writer[1], endpoint_url=server.endpoint
    )
    return Team(tmp_path, f"s3://{BUCKET}/{tmp_path.name}", aws, fs)


def test_trusted_teammate_hits_untrusted_one_recomputes_without_evicting(team: Team) -> None:
    alice, bob, carol = team.user("alice"), team.user("bob"), team.user("carol")
    bob.trust = [alice.public_key()]

    check(alice.run(1000), ran=1, n=1000, who="alice (first ever)")
    shared = team.objects()
    assert len(shared) == 2, f"expected alice's value and .meta objects, got {list(shared)}"
    check(bob.run(1000), ran=0, n=1000, who="bob (trusts alice)")
    check(bob.run(1000), ran=0, n=1000, who="bob again (local tier, filled by the remote hit)")

    check(carol.run(1000), ran=1, n=1000, who="carol (does not trust alice)")
    after = team.objects()
    assert {p: after[p] for p in shared} == shared, "carol changed or evicted alice's entry"
    assert len(after) == 4, f"expected carol's entry beside alice's, got {list(after)}"


def test_tampered_or_misplaced_entries_are_quiet_misses_and_stay(team: Team) -> None:
    alice, carol = team.user("alice"), team.user("carol")
    check(alice.run(500, 3.0), ran=1, n=500, factor=3.0, who="alice")
    alice_objects = team.objects()
    check(carol.run(500, 3.0), ran=1, n=500, factor=3.0, who="carol")
    objects = team.objects()
    alice_value = next(p for p in alice_objects if not p.endswith(".meta"))
    carol_value = next(p for p in objects if p not in alice_objects and not p.endswith(".meta"))

    bob = team.user("bob")
    bob.trust = [alice.public_key()]
    # Alice's folder holds carol's (validly signed, by carol) value: not alice's signature.
    team.fs.pipe_file(alice_value, objects[carol_value])  # type: ignore[attr-defined]
    check(bob.run(500, 3.0), ran=1, n=500, factor=3.0, who="bob (carol's entry in alice's folder)")

    # One flipped byte in the array's buffer, at the end of alice's value.
    tampered = bytearray(objects[alice_value])
    tampered[-8] ^= 0x40
    team.fs.pipe_file(alice_value, bytes(tampered))  # type: ignore[attr-defined]
    dave = team.user("dave")
    dave.trust = [alice.public_key()]
    run = dave.run(500, 3.0)
    check(run, ran=1, n=500, factor=3.0, who="dave (alice's buffer tampered)")
    assert team.objects()[alice_value] == bytes(tampered), "an unverifiable entry was deleted"
    assert "Warning" not in str(run["stderr"]), f"a tampered entry is a quiet miss: {run['stderr']}"


def test_read_only_user_hits_and_keeps_working(s3_server: S3Server, tmp_path: Path) -> None:
    import fsspec

    writer = _aws(s3_server, s3_server.writer, tmp_path)
    fs = fsspec.filesystem(
        "s3",
        key=s3_server.writer[0],
        secret=s3_server.writer[1],
        endpoint_url=s3_server.endpoint,
    )
    team = Team(tmp_path, f"s3://{BUCKET}/{tmp_path.name}", writer, fs)
    ci = team.user("ci")
    check(ci.run(800), ran=1, n=800, who="ci (publishes)")
    published = team.objects()

    reader = team.user("reader", _aws(s3_server, s3_server.reader, tmp_path))
    reader.trust = [ci.public_key()]
    check(reader.run(800), ran=0, n=800, who="read-only user (ci's entry)")
    miss = reader.run(801)
    check(miss, ran=1, n=801, who="read-only user (new argument)")
    assert "read-only for you" in str(miss["stderr"]), f"no read-only warning: {miss['stderr']}"
    assert team.objects() == published, "a read-only user's run changed the bucket"


@pytest.mark.slow
def test_dask_workers_share_the_remote_tier(team: Team) -> None:
    alice, bob = team.user("alice"), team.user("bob")
    bob.trust = [alice.public_key()]
    check(alice.run(700, script=DASK_SCRIPT), ran=1, n=700, who="alice's Dask worker")
    check(bob.run(700), ran=0, n=700, who="bob (hits what alice's worker stored)")
    check(bob.run(900), ran=1, n=900, who="bob (new argument)")
    check(bob.run(900, script=DASK_SCRIPT), ran=0, n=900, who="bob's Dask worker")


@pytest.mark.parametrize("pool", ["joblib", "process pool"])
@pytest.mark.parametrize("team", ["s3"], indirect=True)
def test_pool_workers_share_the_remote_tier(
    team: Team, pool: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POOL", pool)
    alice, bob = team.user("alice"), team.user("bob")
    bob.trust = [alice.public_key()]
    check(alice.run(300, script=POOL_SCRIPT), ran=1, n=300, who=f"alice's {pool} worker")
    check(bob.run(300), ran=0, n=300, who=f"bob (hits what alice's {pool} worker stored)")
    check(bob.run(300, script=POOL_SCRIPT), ran=0, n=300, who=f"bob's {pool} worker")


CELL = """%%funcache --name shared
tick()
answer = 6 * 7
"""


@pytest.mark.filterwarnings("error::funcache_ipy.store.FuncacheWarning")  # a refill must store
def test_cells_share_and_clear_touches_the_remote_only_when_told(
    ip: object, tmp_path: Path
) -> None:
    from funcache_ipy.memory import default_memory
    from tests.cell_helpers import runs
    from tests.conftest import run_cell

    shared = tmp_path / "shared"
    run_cell(ip, f"%config FuncacheMagics.remote = 'file://{shared}'")
    assert default_memory.remote == f"file://{shared}", "%config did not set the memory"
    run_cell(ip, CELL)
    tier = default_memory.store().remote
    assert tier is not None and tier.flush(60) == 0, "the upload did not finish"
    uploaded = sorted(p.name for p in shared.rglob("*") if p.is_file())
    assert uploaded, "the cell's entry was not uploaded"

    run_cell(ip, "%funcache clear")
    assert sorted(p.name for p in shared.rglob("*") if p.is_file()) == uploaded, (
        "%funcache clear without --remote deleted shared entries"
    )
    run_cell(ip, "del answer")
    run_cell(ip, CELL)
    assert runs() == 1, f"expected a hit from the shared folder, the cell ran {runs()} times"
    assert run_cell(ip, "answer") == 42, "expected 42 restored from the shared entry"

    run_cell(ip, "%funcache clear --remote")
    assert not [p for p in shared.rglob("*") if p.is_file()], "own shared entries remain"
    ip.extension_manager.unload_extension("funcache_ipy")  # type: ignore[attr-defined]
    assert default_memory.remote is None, "unloading left the remote configured"
    ip.extension_manager.load_extension("funcache_ipy")  # type: ignore[attr-defined]


def test_without_cryptography_one_clear_message_and_local_caching(tmp_path: Path) -> None:
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    # NB. A None entry in sys.modules makes "import cryptography" raise ImportError.
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['cryptography'] = None\n")
    user = User(tmp_path / "user", f"file://{tmp_path / 'shared'}", {})
    env = user.env()
    env["PYTHONPATH"] = os.pathsep.join([str(blocker), env["PYTHONPATH"]])
    script = USER_SCRIPT + "print(scale(5, 1.0)['label'])\n"
    done = subprocess.run(
        [sys.executable, "-c", script, "5", "1.0"],
        cwd=user.home / "work",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count('pip install "funcache_ipy[s3]"') == 1, done.stderr
    ran = json.loads(done.stdout.splitlines()[0])["ran"]
    assert ran == 1 and done.stdout.splitlines()[1] == "scale(5)", (
        f"expected one run, then a local hit: {done.stdout}"
    )


def test_values_read_by_ranges_verify_and_tampered_chunks_are_quiet_misses(
    team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A value larger than one download chunk arrives by parallel ranged reads, hashed as
    it comes: intact it loads (writable, equal); a flipped byte in any chunk, a cut or an
    empty object is a miss that leaves the object in place and the tier working."""
    import pickle

    import numpy as np

    from funcache_ipy import remote

    monkeypatch.setattr(remote, "_CHUNK", 4096)  # NB. so a 100 kB value spans 25 chunks
    for name, value in team.aws.items():
        monkeypatch.setenv(name, value)
    warnings: list[str] = []
    tier = remote.RemoteTier(remote.RemoteSpec(team.remote, wait=True), warnings.append)
    array = np.arange(12_500, dtype=np.float64)
    buffers: list[pickle.PickleBuffer] = []
    stream = pickle.dumps(array, protocol=5, buffer_callback=buffers.append)
    tier.put("k1", stream, [buffer.raw() for buffer in buffers], '{"name": "f"}')
    tier.put("k2", pickle.dumps("small"), [], '{"name": "g"}')

    def load(key: str) -> object:
        found = tier.get(key)
        assert found is not None, f"expected a hit on {key}, got a miss ({warnings})"
        return pickle.loads(found[0], buffers=found[1])

    hit = load("k1")
    assert isinstance(hit, np.ndarray) and np.array_equal(hit, array), "wrong value read back"
    hit[0] = -1.0  # raises if the hit is read-only
    assert load("k2") == "small", "a one-chunk value did not read back"

    path = next(p for p in team.objects() if p.endswith("/k1"))
    intact = team.objects()[path]
    tampered = [bytearray(intact) for _ in range(2)]
    tampered[0][len(intact) // 2] ^= 0x01  # a chunk in the middle
    tampered[1][-1] ^= 0x01  # the last, partial chunk
    for broken in [*map(bytes, tampered), intact[: 3 * 4096], intact[:-1], b""]:
        team.fs.pipe_file(path, broken)  # type: ignore[attr-defined]
        assert tier.get("k1") is None, f"a broken object ({len(broken)} bytes) was loaded"
        assert team.objects()[path] == broken, "an unverifiable object was deleted"
    assert load("k2") == "small", f"the tier stopped working after broken objects: {warnings}"
    assert not warnings, f"broken objects are quiet misses, got warnings: {warnings}"
