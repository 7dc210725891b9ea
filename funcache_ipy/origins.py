"""Where objects come from: user code is walked, libraries count by name and version.

A fingerprint inlines everything reachable from user code (``__main__``, notebook cells,
modules loaded from the user's own files) but stops at installed libraries and the
stdlib, whose internals would be slow to walk and change only with their version.
"""

from __future__ import annotations

import ast
import functools
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import site
import sys
import sysconfig
import types
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
    """True for ``__main__`` and modules loaded from files outside stdlib/site-packages.

    A namespace package (a folder without ``__init__.py``, common in notebook projects)
    has no ``__file__``; it is local when one of its folders is.
    """
    if module_name is None:
        return False
    if module_name == "__main__":
        return True
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if path:
        return is_local_file(path)
    folders = getattr(module, "__path__", None) or ()
    return any(is_local_file(os.path.join(folder, "")) for folder in folders)


def find_spec_quietly(name: str) -> importlib.machinery.ModuleSpec | None:
    """Where ``name`` would be imported from, without importing it or its parents.

    ``importlib.util.find_spec("pkg.sub")`` runs ``pkg/__init__.py``; a fingerprint must
    not execute user code.
    """
    module = sys.modules.get(name)
    if module is not None:
        return getattr(module, "__spec__", None)
    parent, _, _ = name.rpartition(".")
    if not parent:
        return importlib.machinery.PathFinder.find_spec(name)
    parent_spec = find_spec_quietly(parent)
    locations = parent_spec.submodule_search_locations if parent_spec else None
    return importlib.machinery.PathFinder.find_spec(name, list(locations)) if locations else None


def source_digest(name: str) -> bytes | None:
    """Digest of a not-yet-imported local module's source and the local modules it imports.

    ``None`` if ``name`` is not a local module (a library, or not found). Comment edits
    change it too: without the live module there is no bytecode to compare, and a
    needless miss is the safe side.
    """
    h = xxhash.xxh3_128()
    pending, seen = [name], set()
    found_local = False
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        spec = find_spec_quietly(current)
        origin = getattr(spec, "origin", None)
        if spec is None or not origin or not os.path.isfile(origin) or not is_local_file(origin):
            continue
        found_local = True
        source = Path(origin).read_bytes()
        h.update(current.encode() + b"\0" + len(source).to_bytes(8, "little") + source)
        package = current if spec.submodule_search_locations else current.rpartition(".")[0]
        pending.extend(_imported_names(source, package))
    return h.digest() if found_local else None


def _imported_names(source: bytes, package: str) -> list[str]:
    """Absolute names of the modules a source file imports (relative ones resolved)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                try:
                    base = importlib.util.resolve_name("." * node.level + base, package)
                except (ImportError, ValueError):
                    continue
            names.append(base)
            names.extend(f"{base}.{alias.name}" for alias in node.names)  # maybe submodules
    return names


def is_local_function(fn: types.FunctionType) -> bool:
    """Whether a function is user code, to be walked, or a library's, named by version.

    Where its code lives decides (not ``__module__``, which ``functools.wraps`` copies
    from the wrapped function onto library wrappers). Cells and ``exec``'d code have
    pseudo file names such as ``<ipython-input-1>``.

    NB. cloudpickle names every file it copies code from ``<dynamic-code>``: in a worker,
    a library function copied by value (IPython's ``open``, whose wrapped name does not
    resolve) is then told by its module, so the worker keys it as the parent did.
    """
    filename = fn.__code__.co_filename
    if filename == "<dynamic-code>":
        module = fn.__module__
        return module not in sys.modules or is_local_module(module)
    return filename.startswith("<") or is_local_file(filename)
