"""The stored record of which file contents each result of one call was computed from.

A result whose run read files is stored under a key derived from the call key *and*
those files' contents (:func:`funcache_ipy.keys.file_set_key`). Beside them, under
:func:`funcache_ipy.keys.file_sets_key`, a small record lists the file sets seen for the
call key, newest first: ccache's "direct mode" manifests. A lookup validates the sets in
turn (a ``stat`` per file) and reads the entry of the first that still holds, so
reverting a file to earlier content hits that content's entry again.

A set also lists the files its run created or replaced (outputs), with their content
stored beside the entry under :func:`funcache_ipy.keys.output_key` when it is at most
``Store.output_limit`` bytes. Before a set's entry is used, each output that is missing
or differs is written back from that copy, so a hit leaves the disk as a run would; an
output too big to have been kept must still be as the run left it, or the set is not
used (the call runs again and writes it).

:class:`FileSetIndex` is that lookup and its bookkeeping, for ``@cache`` functions and
``%%funcache`` cells alike: both key a run, look it up, and store it by the files it read.

The record is a stored value like any other (pickled plain lists inside an
authenticated envelope), versioned by :data:`FORMAT`: a record of another format
reads as empty, which costs a recomputation, never a wrong hit.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from funcache_ipy import files
from funcache_ipy.entry_meta import EntryMeta
from funcache_ipy.files import (
    ABSENT,
    FileState,
    Output,
    display_path,
    file_label,
    is_file_label,
    shown_size,
)
from funcache_ipy.keys import file_set_key, file_sets_key, files_digest, output_key
from funcache_ipy.missing import MISSING
from funcache_ipy.store import Store

FORMAT = 2  # 2: sets list the files their run wrote; format-1 records still read
RECORD_LABEL = "file sets"  # the manifest label that marks a record in listings
_SETS_LIMIT = 32  # older sets drop out of the record (their entries stay until evicted)
_KNOWN_LIMIT = 4096  # call keys whose sets one index keeps in memory

Fetch = Callable[[str], Any]
"""An entry's value by key, or ``MISSING``: ``Store.get``, or a cell's restore."""


class Written(NamedTuple):
    """A file a stored run created or replaced; ``kept``: its content is stored too."""

    state: FileState
    kept: bool


class FileSet(NamedTuple):
    """One stored result of a call (its key), the files it read and those it wrote."""

    key: str
    states: tuple[FileState, ...]
    written: tuple[Written, ...] = ()


class Found(NamedTuple):
    """What a lookup found: the entry's key and value (``MISSING`` if none).

    ``restored``: outputs written back because they were missing or differed.
    ``rejected``: why a set whose input files held could not be used (its outputs
    could not be put back), for an explanation of the miss.
    """

    key: str
    value: Any
    restored: tuple[str, ...] = ()
    rejected: str | None = None


_NOT_FOUND = Found("", MISSING)


class FileSetIndex:
    """Find and store the results of call keys by the files their runs read.

    One per cached function and one per session of cells: it remembers the sets this
    process last read or wrote for a call key, so a key known to be stored by file set
    skips the lookup of a plain entry, and its sets are tried before the stored record
    is read (and parsed) again. Another process may add sets, never change one.
    """

    def __init__(self) -> None:
        self._known: dict[str, list[FileSet]] = {}

    def find(self, store: Store, key: str, fetch: Fetch) -> Found:
        """The entry of call key ``key``, its outputs put back on disk.

        The plain entry (a run that read and wrote no file), else the entry of the
        newest file set whose files still hold (a ``stat`` per file, a re-hash only
        when it changed) and whose outputs can be put back.
        """
        by_files = key in self._known
        if not by_files:
            value = fetch(key)
            if value is not MISSING:
                return Found(key, value)
        known = self._known.get(key)
        if known:
            hit = _first_valid(store, known, fetch)
            if hit.value is not MISSING:
                return hit
        hit = _first_valid(store, self.stored(store, key), fetch)
        if hit.value is MISSING and by_files:
            value = fetch(key)
            if value is not MISSING:
                return Found(key, value)
        return hit

    def stored(self, store: Store, key: str) -> list[FileSet]:
        """The file sets stored for call key ``key``, newest first."""
        sets = parse(store.get(file_sets_key(key)))
        if sets:
            self._know(key, sets)
        return sets

    def put(
        self,
        store: Store,
        key: str,
        inputs: tuple[FileState, ...],
        value: object,
        meta: EntryMeta,
        outputs: tuple[Output, ...] = (),
    ) -> bool:
        """Store a run of call key ``key`` that read ``inputs`` and wrote ``outputs``;
        whether it was stored.

        A run that read or wrote files goes under :func:`entry_key` and is listed first
        in the call key's record, so the next lookup finds it among the sets. Outputs'
        contents go first, so that an entry is never listed before them.
        """
        entry = entry_key(key, inputs, bool(outputs))
        written = tuple(_keep(store, entry, output, meta.name) for output in outputs)
        if not store.set(entry, value, meta):
            return False
        if entry != key:
            record_key = file_sets_key(key)
            sets = added(parse(store.get(record_key)), FileSet(entry, inputs, written))
            store.set(record_key, encode(sets), record_meta(meta.name))
            self._know(key, sets)
        return True

    def _know(self, key: str, sets: list[FileSet]) -> None:
        if len(self._known) >= _KNOWN_LIMIT:
            self._known.clear()
        self._known[key] = sets


def _first_valid(store: Store, sets: Iterable[FileSet], fetch: Fetch) -> Found:
    rejected = None
    for candidate in sets:
        if not files.unchanged(candidate.states):
            continue
        restored, problem = _put_back(store, candidate)
        if problem is not None:
            rejected = rejected or problem
            continue
        # NB. The outputs go back before the value is read: a value that turns out to be
        # unreadable leaves on disk what a run of these inputs writes anyway.
        value = fetch(candidate.key)
        if value is not MISSING:  # an enclosing tracked run read and wrote these too
            files.note_read(state.path for state in candidate.states)
            files.note_replaced(written.state.path for written in candidate.written)
            return Found(candidate.key, value, restored)
    return _NOT_FOUND._replace(rejected=rejected)


def _put_back(store: Store, candidate: FileSet) -> tuple[tuple[str, ...], str | None]:
    """Write back the outputs of ``candidate`` that are missing or differ.

    Returns:
        The paths written back, or why the set cannot be used (nothing written then).
    """
    now = {w: files.current_digest(w.state) for w in candidate.written}
    stale = [w for w in candidate.written if now[w] != w.state.digest]
    contents = []
    for written in stale:
        label = file_label(written.state.path)
        state = "missing" if now[written] == ABSENT else "changed"
        if not written.kept:
            return (), f"{label} is {state} and was too big to keep a copy of"
        data = store.get(output_key(candidate.key, written.state.digest))
        if not isinstance(data, (bytes, bytearray, memoryview, pickle.PickleBuffer)):
            return (), f"{label} is {state} and its stored copy is gone"
        contents.append(memoryview(data))
    for written, data in zip(stale, contents, strict=True):
        try:
            files.write_back(written.state.path, data)
        except OSError as exc:
            return (), f"{file_label(written.state.path)} cannot be written back: {exc}"
    return tuple(written.state.path for written in stale), None


def would_use(
    store: Store, key: str, stored: Callable[[Store, str], Sequence[FileSet]]
) -> EntryMeta | None:
    """The metadata of the entry a lookup of call key ``key`` would use now, if any.

    ``stored``: the call key's file sets (:meth:`FileSetIndex.stored`). Nothing is
    written back; ``explain`` asks this.
    """
    meta = store.meta(key)
    if meta is not None:
        return meta
    for candidate in stored(store, key):
        meta = _would_hold(store, candidate)
        if meta is not None:
            return meta
    return None


def _would_hold(store: Store, candidate: FileSet) -> EntryMeta | None:
    """The metadata of ``candidate``'s entry if a lookup would use it now (nothing is
    written back), else None."""
    if not files.unchanged(candidate.states):
        return None
    meta = store.meta(candidate.key)
    if meta is None:
        return None
    for w in candidate.written:
        if files.current_digest(w.state) == w.state.digest:
            continue
        if not (w.kept and store.meta(output_key(candidate.key, w.state.digest)) is not None):
            return None
    return meta


def _keep(store: Store, entry: str, output: Output, name: str) -> Written:
    """Store an output's content beside entry ``entry``, if it was small enough to read."""
    if output.data is None:
        return Written(output.state, False)
    describes = f"output {display_path(output.state.path)}"
    kept = store.set(
        output_key(entry, output.state.digest),
        pickle.PickleBuffer(output.data),  # NB. out of band: no copy into the pickle
        record_meta(name, describes),
    )
    return Written(output.state, kept)


def entry_key(key: str, inputs: Iterable[FileState], writes: bool = False) -> str:
    """Where a run of call key ``key`` that read ``inputs`` is stored: ``key`` for a run
    that read and wrote no file (``writes``: it wrote some)."""
    pairs = [(state.path, state.digest) for state in inputs]
    return file_set_key(key, pairs) if pairs or writes else key


def changed_while_running(paths: Sequence[str]) -> str:
    """Why a run's result is not stored: ``file data.csv changed while it ran ...``."""
    shown = ", ".join(display_path(path) for path in paths[:3])
    return f"file {shown} changed while it ran (or cannot be read)"


def parse(value: object) -> list[FileSet]:
    """The sets in a stored record, newest first; ``[]`` for anything malformed."""
    if not isinstance(value, dict) or value.get("format") not in (1, FORMAT):
        return []
    sets = []
    try:
        for key, rows, *written_rows in value["sets"]:
            states = tuple(FileState(*row) for row in rows)
            written = tuple(
                Written(FileState(*row[:-1]), row[-1]) for row in next(iter(written_rows), [])
            )
            if (
                type(key) is str
                and all(_well_typed(state) for state in states)
                and all(_well_typed(w.state) and type(w.kept) is bool for w in written)
            ):
                sets.append(FileSet(key, states, written))
    except (KeyError, TypeError, ValueError):
        return []
    return sets


def encode(sets: Sequence[FileSet]) -> dict[str, object]:
    """The record to store: plain lists, so reading it back needs no funcache_ipy class."""
    rows = [
        [s.key, [list(state) for state in s.states], [[*w.state, w.kept] for w in s.written]]
        for s in sets
    ]
    return {"format": FORMAT, "sets": rows}


def added(sets: Sequence[FileSet], new: FileSet) -> list[FileSet]:
    """``sets`` with ``new`` in front (replacing a set with its key), at most the limit."""
    return [new, *(s for s in sets if s.key != new.key)][:_SETS_LIMIT]


def known_digest(states: Sequence[FileState]) -> bytes | None:
    """Digest of the files hashed into a key before the run (``files=``, ``--files``,
    ``Path`` arguments); None when there are none, so such keys are left as they were."""
    return files_digest((s.path, s.digest) for s in states) if states else None


def record_meta(name: str, describes: str = f"format {FORMAT}") -> EntryMeta:
    """Metadata of a record beside entries (file sets; a cell's process state): its
    function's or cell's name, so clearing that clears it, and what it holds."""
    return EntryMeta(name, time.time(), 0.0, 0, {RECORD_LABEL: [describes, ""]})


def other_results(store: Store, name: str, key: str) -> list[dict[str, list[str]]]:
    """Manifests of ``name``'s stored results but ``key``'s (records left out): what a
    miss of ``key`` is explained against."""
    return [
        meta.manifest for other, meta in store.entries(name) if other != key and not is_record(meta)
    ]


def is_record(meta: EntryMeta) -> bool:
    """Whether a listed entry is a file-set record rather than a result."""
    return RECORD_LABEL in meta.manifest


def tracked_files(meta: EntryMeta) -> int:
    """How many files an entry's result depends on (read, declared or ``Path`` arguments)."""
    return sum(1 for label in meta.manifest if is_file_label(label))


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
