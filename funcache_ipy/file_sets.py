"""The stored record of which file contents each result of one call was computed from.

A result whose run read files is stored under a key derived from the call key *and*
those files' contents (:func:`funcache_ipy.keys.file_set_key`). Beside them, under
:func:`funcache_ipy.keys.file_sets_key`, a small record lists the file sets seen for the
call key, newest first: ccache's "direct mode" manifests. A lookup validates the sets in
turn (a ``stat`` per file) and reads the entry of the first that still holds, so
reverting a file to earlier content hits that content's entry again.

The record is a stored value like any other (pickled plain lists inside an
authenticated envelope), versioned by :data:`FORMAT`: a record of another format
reads as empty, which costs a recomputation, never a wrong hit.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from funcache_ipy.files import FileState, file_label, shown_size
from funcache_ipy.store import EntryMeta

FORMAT = 1
RECORD_LABEL = "file sets"  # the manifest label that marks a record in listings
_SETS_LIMIT = 32  # older sets drop out of the record (their entries stay until evicted)


class FileSet(NamedTuple):
    """One stored result of a call (its key) and the files it read."""

    key: str
    states: tuple[FileState, ...]


def parse(value: object) -> list[FileSet]:
    """The sets in a stored record, newest first; ``[]`` for anything malformed."""
    if not isinstance(value, dict) or value.get("format") != FORMAT:
        return []
    sets = []
    try:
        for key, rows in value["sets"]:
            states = tuple(FileState(*row) for row in rows)
            if type(key) is str and all(_well_typed(state) for state in states):
                sets.append(FileSet(key, states))
    except (KeyError, TypeError, ValueError):
        return []
    return sets


def encode(sets: Sequence[FileSet]) -> dict[str, object]:
    """The record to store: plain lists, so reading it back needs no funcache_ipy class."""
    return {"format": FORMAT, "sets": [[s.key, [list(state) for state in s.states]] for s in sets]}


def added(sets: Sequence[FileSet], new: FileSet) -> list[FileSet]:
    """``sets`` with ``new`` in front (replacing a set with its key), at most the limit."""
    return [new, *(s for s in sets if s.key != new.key)][:_SETS_LIMIT]


def record_meta(name: str) -> EntryMeta:
    """Metadata of a record: its function's name, so clearing the function clears it."""
    return EntryMeta(name, time.time(), 0.0, 0, {RECORD_LABEL: [f"format {FORMAT}", ""]})


def is_record(meta: EntryMeta) -> bool:
    """Whether a listed entry is a file-set record rather than a result."""
    return RECORD_LABEL in meta.manifest


def manifest_of(states: Iterable[FileState]) -> dict[str, list[str]]:
    """Manifest lines for files, so an explanation can say which file changed."""
    return {file_label(s.path): [s.digest, shown_size(s)] for s in states}


def _well_typed(state: FileState) -> bool:
    return (
        type(state.path) is str
        and all(type(n) is int for n in state[1:5])
        and type(state.digest) is str
        and type(state.racy) is bool
    )
