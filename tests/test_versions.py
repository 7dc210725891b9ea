"""Installed libraries count by the version of the distribution that installed them.

Each test builds a real installed library in its own folder: a package ``fancylib``
installed by a distribution named differently (``fancy-dist``, as ``sklearn`` is
``scikit-learn``), whose ``RECORD`` is the only record of what it provides. The folder
is the user site of ``PYTHONUSERBASE``, so funcache_ipy counts it as a library; each
"kernel" is a new Python process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
import time
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import funcache_ipy, fancylib

    @funcache_ipy.cache
    def doubled(x):
        print("computed")
        return fancylib.double(x)

    print(doubled(21))
    print(doubled.explain_last())
    """
)


def install(site: Path, version: str, body: str = "def double(x):\n    return 2 * x\n") -> None:
    """Install (or upgrade to) ``fancy-dist`` ``version`` in ``site``, as pip would."""
    for old in site.glob("fancy_dist-*.dist-info"):
        for file in old.iterdir():
            file.unlink()
        old.rmdir()
    package = site / "fancylib"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(body)
    info = site / f"fancy_dist-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fancy-dist\nVersion: {version}\n")
    (info / "RECORD").write_text(
        f"fancylib/__init__.py,,\nfancy_dist-{version}.dist-info/METADATA,,\n"
        f"fancy_dist-{version}.dist-info/RECORD,,\n"
    )


def kernel(tmp_path: Path, site: Path) -> str:
    """Run the script in a new process; its output."""
    env = {
        **os.environ,
        "PYTHONUSERBASE": str(tmp_path / "userbase"),
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def site(tmp_path: Path, isolated_cache: Path) -> Path:
    scheme = "posix_user" if os.name == "posix" else "nt_user"
    path = sysconfig.get_path("purelib", scheme, vars={"userbase": str(tmp_path / "userbase")})
    return Path(path)


def test_upgrading_a_library_recomputes_and_its_version_is_kept_per_folder(
    tmp_path: Path, site: Path
) -> None:
    install(site, "1.0")
    hour_ago = time.time_ns() - 3600 * 10**9
    os.utime(site, ns=(hour_ago, hour_ago))  # settled: the scan of the folder is kept
    assert kernel(tmp_path, site).startswith("computed\n42\n")
    assert kernel(tmp_path, site) == "42\n__main__.doubled: hit\n", "same version: a hit"

    install(site, "2.0", body="def double(x):\n    return 2 * x + 1\n")  # upgraded
    output = kernel(tmp_path, site)
    assert output.startswith("computed\n43\n"), f"stale after the upgrade: {output!r}"
    assert "module `fancylib` changed" in output, output
    assert kernel(tmp_path, site).startswith("43\n")


def test_library_files_edited_without_a_new_version_still_count_by_version(
    tmp_path: Path, site: Path
) -> None:
    """The documented trade: libraries are not walked, so only a version change counts."""
    install(site, "1.0")
    assert kernel(tmp_path, site).startswith("computed\n42\n")
    (site / "fancylib" / "__init__.py").write_text("def double(x):\n    return 0\n")
    assert kernel(tmp_path, site).startswith("42\n"), "keyed by version, not by its files"
