"""Where objects come from: user code is walked, libraries count by name and version.

A fingerprint inlines everything reachable from user code (``__main__``, notebook cells,
modules loaded from the user's own files) but stops at installed libraries and the
stdlib, whose internals would be slow to walk and change only with their version.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import site
import sys
import sysconfig
import types
from collections.abc import Mapping
from pathlib import Path

import xxhash


@functools.lru_cache(maxsize=1)
def _library_roots() -> tuple[str, ...]:
    """Directories whose modules are libraries (stdlib, site-packages), not user code.

    NB. Only these exact directories, never a whole prefix: a system Python's prefix is
    ``/usr``, and a project in ``/usr/src/app`` must still count as the user's code.
    """
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots.update(site.getsitepackages())
    roots.add(site.getusersitepackages())
    roots.add(str(Path(__file__).resolve().parent))  # funcache_ipy itself is a library
    return tuple(os.path.realpath(r) + os.sep for r in roots)


@functools.lru_cache(maxsize=4096)
def is_local_file(path: str) -> bool:
    return not os.path.realpath(path).startswith(_library_roots())


def is_local_module(module_name: str | None) -> bool:
    """True for ``__main__`` and modules loaded from files outside stdlib/site-packages."""
    if module_name is None:
        return False
    if module_name == "__main__":
        return True
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    return bool(path) and is_local_file(path)


def is_local_code(code: types.CodeType) -> bool:
    """Where a function's code lives decides whether it is walked (not ``__module__``,
    which ``functools.wraps`` copies from the wrapped function onto library wrappers).
    Cells and ``exec``'d code have pseudo file names such as ``<ipython-input-1>``."""
    filename = code.co_filename
    return filename.startswith("<") or is_local_file(filename)


@functools.lru_cache(maxsize=1)
def _distributions_by_package() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


_PYTHON_VERSION = f"python{sys.version_info[0]}.{sys.version_info[1]}"


@functools.lru_cache(maxsize=1024)
def _library_version(top_level: str) -> str:
    """Version of whatever provides a top-level package, cheapest source first.

    NB. The full scan of installed distributions costs ~60 ms, which would land on the
    first hit of every new kernel; the stdlib, ``__version__`` and a distribution named
    like its package answer almost every case without it.
    """
    if top_level in sys.stdlib_module_names or top_level in sys.builtin_module_names:
        return _PYTHON_VERSION
    version = getattr(sys.modules.get(top_level), "__version__", None)
    if isinstance(version, str):
        return version
    for dist in (top_level, *_distributions_by_package().get(top_level, ())):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def library_digest(module_name: str, qualname: str) -> bytes:
    """Libraries count by name + version only: their internals are never walked."""
    top = module_name.partition(".")[0]
    return xxhash.xxh3_128(
        f"lib:{module_name}:{qualname}:{_library_version(top)}".encode()
    ).digest()
