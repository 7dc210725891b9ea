"""What keys a ``%%funcache`` cell before it runs: its whole code, local imports and files.

Two callers key a cell: :class:`funcache_ipy.cell.CellCache` to look it up, and
:func:`funcache_ipy.housekeeping.explain_next_cell` to tell, without running it, whether
it would hit. Both take these pieces from here, so the two keys cannot drift apart. The
manifest labels of a cell's code and declared files live here too: they are also how a
listing tells a cell's entries from a function's.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import pathlib
import sys
import types
from collections.abc import Callable, Sequence

from funcache_ipy import file_sets, files
from funcache_ipy.analysis import CellAnalysis
from funcache_ipy.entry_meta import EntryMeta
from funcache_ipy.files import FileState
from funcache_ipy.origins import find_spec_quietly, is_local_file

__all__ = [
    "CODE_LABEL",
    "FILES_LABEL",
    "Compile",
    "import_ahead",
    "is_cell_entry",
    "key_files",
    "manifest",
    "whole_code",
]

CODE_LABEL = "cell code"  # manifest label of the cell's own code
FILES_LABEL = "--files"  # manifest label of the declared patterns

Compile = Callable[[ast.mod, str], types.CodeType]
"""``compile(tree, mode)`` -> code object; IPython's compiler, with the cell's filename."""


def is_cell_entry(meta: EntryMeta) -> bool:
    """Whether a store entry was written by ``%%funcache`` (not by a cached function)."""
    return CODE_LABEL in meta.manifest


def import_ahead(analysis: CellAnalysis) -> None:
    """Import the local modules of the cell's leading imports before keying it.

    The key covers the code of the local modules a cell imports. Imported first, they are
    fingerprinted live on every run; otherwise a cell's first run in a kernel would see
    source files and its second the loaded module, and miss once for nothing. Only
    imports that nothing but other definitions precede are moved ahead: a cell that sets
    ``os.environ`` or ``sys.path`` before importing must import what it would import.
    Libraries are left alone: they count by version whether loaded or not.
    """
    for statement in analysis.body:
        if isinstance(statement, ast.Import):
            names = [alias.name for alias in statement.names]
        elif isinstance(statement, ast.ImportFrom) and statement.module and not statement.level:
            names = [statement.module] + [f"{statement.module}.{a.name}" for a in statement.names]
        elif isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        else:
            return
        for module_name in names:
            spec = None if module_name in sys.modules else find_spec_quietly(module_name)
            origin = getattr(spec, "origin", None)
            if origin and is_local_file(origin):
                with contextlib.suppress(Exception):  # NB. the cell will show the real error
                    importlib.import_module(module_name)


def key_files(declared: Sequence[str], paths: Sequence[str]) -> tuple[list[FileState], list[str]]:
    """Files counted before the run: ``--files`` matches and the ``Path`` values the cell
    (or code it calls) reads by name; and those that could not be read."""
    states, failed = files.states_of(files.named_files(map(pathlib.Path, paths)))
    if declared:
        matched, failed_matches = files.declared_states(declared)
        known = {state.path for state in states}
        states += [state for state in matched if state.path not in known]
        failed += failed_matches
    return states, failed


def whole_code(analysis: CellAnalysis, compiler: Compile) -> types.CodeType:
    """The cell's code as one module: its imports and ``mod.attr`` uses, for the key."""
    statements = list(analysis.body)
    if analysis.result is not None:
        statements.append(ast.Expr(analysis.result))
    return compiler(ast.fix_missing_locations(ast.Module(statements, [])), "exec")


def manifest(
    inputs: dict[str, list[str]],
    analysis: CellAnalysis,
    source: str,
    declared: Sequence[str],
    key_files: Sequence[FileState],
) -> dict[str, list[str]]:
    """What a run of the cell is stored with, for ``explain``: its inputs' lines, its code
    (``source``: the text shown in a diff), the ``--files`` patterns and the key's files."""
    lines = {**inputs, CODE_LABEL: [analysis.code_digest, source]}
    if declared:
        lines[FILES_LABEL] = [" ".join(declared), ", ".join(declared)]
    lines.update(file_sets.manifest_of(key_files))
    return lines
