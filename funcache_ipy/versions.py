"""Versions of installed libraries: how a fingerprint names code it never walks.

A library counts by its top-level package's name and the version of the distribution
that installed it, so upgrading pandas recomputes what used it. Finding that version
must be cheap, because it lands on the first call of every new kernel:
``importlib.metadata.packages_distributions()`` reads every installed distribution's
``RECORD`` (60 ms and more), and the import name often differs from the distribution's
(``sklearn`` is ``scikit-learn``, ``PIL`` is ``Pillow``).

So the versions are read per *folder* a package was loaded from (a ``site-packages``):
one scan of its ``*.dist-info`` directories maps each top-level name to the versions of
the distributions providing it, and the map is kept on disk beside the secret key, keyed
by the folder's ``mtime_ns``. Installing, upgrading or removing a distribution adds or
removes a ``name-version.dist-info`` directory, which changes that mtime, so a kept map
is never stale; a new kernel then pays one ``stat`` and one small JSON read.

NB. A map built less than :data:`_RACY_NS` after the folder last changed is not kept: an
install finishing within the same timestamp tick would leave the mtime unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import xxhash

from funcache_ipy.envelope import secret_path
from funcache_ipy.origins import find_spec_quietly

_PYTHON_VERSION = f"python{sys.version_info[0]}.{sys.version_info[1]}"
_RACY_NS = 3_000_000_000
_MEMO_NAME = "installed.json"
_MEMO_FORMAT = 1


@functools.lru_cache(maxsize=1024)
def library_version(top_level: str) -> str:
    """Version of whatever provides the top-level package ``top_level``.

    ``pythonX.Y`` for the standard library; ``"a==1;b==2"`` when several distributions
    provide one name (namespace packages); ``"unknown"`` when nothing says.
    """
    if top_level in sys.stdlib_module_names or top_level in sys.builtin_module_names:
        return _PYTHON_VERSION
    folder = _folder_of(top_level)
    if folder is not None:
        found = _installed_in(folder).get(top_level)
        if found:
            return found
    try:  # an egg, a zip or a path hook: the slow, general way
        return importlib.metadata.version(top_level)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        pass
    # NB. Last: ``__version__`` exists only once imported, and must not make a loaded and
    # a not-yet-loaded library count differently.
    version = getattr(sys.modules.get(top_level), "__version__", None)
    return version if isinstance(version, str) else "unknown"


def library_digest(module_name: str, qualname: str) -> bytes:
    """Libraries count by name + version only: their internals are never walked."""
    top = module_name.partition(".")[0]
    return xxhash.xxh3_128(f"lib:{module_name}:{qualname}:{library_version(top)}".encode()).digest()


def _folder_of(top_level: str) -> str | None:
    """The directory ``top_level`` is imported from (its package's or module's parent)."""
    spec = find_spec_quietly(top_level)
    if spec is None:
        return None
    locations = list(spec.submodule_search_locations or ())
    if locations:
        return os.path.dirname(os.path.abspath(locations[0]))
    if spec.origin and os.path.isabs(spec.origin):
        return os.path.dirname(spec.origin)
    return None


def _installed_in(folder: str) -> dict[str, str]:
    """Top-level name -> version(s), for the distributions installed in ``folder``."""
    try:
        mtime_ns = os.stat(folder).st_mtime_ns
    except OSError:
        return {}
    return _installed_at(folder, mtime_ns)


@functools.lru_cache(maxsize=64)
def _installed_at(folder: str, mtime_ns: int) -> dict[str, str]:
    memo = _read_memo()
    kept = memo.get(folder)
    if isinstance(kept, dict) and kept.get("mtime_ns") == mtime_ns:
        tops = kept.get("tops")
        if isinstance(tops, dict) and all(isinstance(v, str) for v in tops.values()):
            return tops
    started = time.time_ns()
    tops = _scan(folder)
    if mtime_ns < started - _RACY_NS:
        memo[folder] = {"mtime_ns": mtime_ns, "tops": tops}
        _write_memo(memo)
    return tops


def _scan(folder: str) -> dict[str, str]:
    """Read each ``*.dist-info`` of ``folder``: its version, and the top-level names it
    provides (``top_level.txt``, else the first part of each path in ``RECORD``)."""
    versions: dict[str, list[str]] = {}
    for info in _dist_infos(folder):
        name, _, version = info.name[: -len(".dist-info")].partition("-")
        if not version:
            continue
        for top in _top_levels(info):
            versions.setdefault(top, []).append(f"{name}=={version}")
    return {
        top: found[0].partition("==")[2] if len(found) == 1 else ";".join(sorted(found))
        for top, found in versions.items()
    }


def _dist_infos(folder: str) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            yield from (e for e in entries if e.name.endswith(".dist-info") and e.is_dir())
    except OSError:
        return


def _top_levels(info: os.DirEntry[str]) -> set[str]:
    listed = _read_lines(os.path.join(info.path, "top_level.txt"))
    if listed is not None:
        return {line.strip() for line in listed if line.strip()}
    tops = set()
    for line in _read_lines(os.path.join(info.path, "RECORD")) or ():
        path = line.partition(",")[0]
        first = path.partition("/")[0]
        if first.endswith(".py"):
            tops.add(first[:-3])
        elif "/" in path and not _is_metadata(first):
            tops.add(first)
    return tops


def _read_lines(path: str) -> list[str] | None:
    try:
        with open(path, encoding="utf-8") as file:
            return file.readlines()
    except (OSError, UnicodeDecodeError):
        return None


def _is_metadata(part: str) -> bool:
    return part.endswith((".dist-info", ".data")) or part in ("..", "__pycache__")


def _memo_path() -> Path:
    return secret_path().parent / _MEMO_NAME


def _read_memo() -> dict[str, object]:
    with contextlib.suppress(OSError, ValueError):
        memo = json.loads(_memo_path().read_text(encoding="utf-8"))
        if isinstance(memo, dict) and memo.get("format") == _MEMO_FORMAT:
            folders = memo.get("folders")
            if isinstance(folders, dict):
                return folders
    return {}


def _write_memo(folders: dict[str, object]) -> None:
    """Keep the maps for the next kernel; best effort (a read-only home just costs a scan)."""
    path = _memo_path()
    with contextlib.suppress(OSError):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{_MEMO_NAME}.", dir=path.parent)
        try:
            with open(descriptor, "w", encoding="utf-8") as file:
                json.dump({"format": _MEMO_FORMAT, "folders": folders}, file)
            os.replace(temporary, path)
        except OSError:
            os.unlink(temporary)
            raise
