"""``%%funcache`` without IPython: key a cell, restore it on a hit, run and store it on a miss.

A cell is keyed on its normalized code plus the fingerprint of every name it reads
before binding it (both from :mod:`funcache_ipy.analysis`), and the content of the files
declared with ``--files``. A miss runs the cell with its output shown live *and*
recorded (:mod:`funcache_ipy.capture`); one store entry then holds every name the cell
binds, the inputs it mutated in place, what it printed and displayed, and its last value.
A hit puts all of that back.

Files the run reads are inputs too, found while it runs: the entry is stored by the
contents of those files, and a lookup checks them (see :mod:`funcache_ipy.file_sets`,
shared with ``@cache``). While a miss runs, it holds the key's lease
(:mod:`funcache_ipy.lease`): a second kernel running the same cell waits, then hits.

An input the cell changed in place without rebinding it (``data.append(3)``) is
restored *into the live object*, so its other names see the change too; which
objects can take that, and what is left alone, is in :mod:`funcache_ipy.restore`.

A run that drew from the global ``random`` or numpy generator without seeding it first
depends on where that generator started: the entry records the starting state's digest,
and a hit from another starting state is a miss (see :mod:`funcache_ipy.state`).

A hit re-runs the cell's top-level ``import``/``def``/``class`` statements *before*
unpickling the rest, so stored instances of a cell's classes find them; a cell whose
definitions read values it computes cannot be re-created that way, so it is not
cached and the message says why. No other statement runs on a hit, so an import that
works only after the cell's own ``sys.path.insert`` fails there: the cell then runs,
with a warning (once per session) to move that change into an earlier cell.

The IPython side (transforming ``%magics``, the compiler that keeps tracebacks readable,
the display publisher) is handed in by :mod:`funcache_ipy.magics`; this module never
imports IPython.

Neighbours do the separable parts: :mod:`funcache_ipy.cell_keying` gives what keys a cell
before it runs (shared with ``%funcache explain``), :mod:`funcache_ipy.watched_inputs`
digests the inputs a run may change in place, and :mod:`funcache_ipy.cell_notices` and
:mod:`funcache_ipy.cell_culprits` word what a hit prints and why a cell is not cached.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import io
import os
import sys
import time
import types
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from funcache_ipy import cell_keying, file_sets, files, state
from funcache_ipy.analysis import CellAnalysis
from funcache_ipy.array_views import find_views, rebuild_views, views_fit
from funcache_ipy.capture import (
    DisplayPublisher,
    Output,
    OutputCapture,
    load_figure_backend,
    replay_outputs,
    shown_while_slow,
)
from funcache_ipy.cell_culprits import unhashable, unpicklable
from funcache_ipy.cell_keying import Compile
from funcache_ipy.cell_notices import hit_notice, restoring_notice
from funcache_ipy.entry_meta import EntryMeta
from funcache_ipy.file_sets import FileSetIndex
from funcache_ipy.files import FileState
from funcache_ipy.fingerprint import fingerprint_names, remember_stored
from funcache_ipy.hashing import UnhashableError
from funcache_ipy.keys import Explanation, cell_key, explain_manifests, state_key
from funcache_ipy.lease import announce_wait, lease
from funcache_ipy.live_references import (
    input_references,
    kept_references,
    pickle_values,
    pickles,
    unpickle_values,
)
from funcache_ipy.missing import MISSING
from funcache_ipy.restore import (
    ArrayView,
    Kept,
    Pickled,
    Shapes,
    find_kept,
    record_shapes,
    restore_in_place,
    shared_by_others,
)
from funcache_ipy.store import Store
from funcache_ipy.warning import FuncacheWarning
from funcache_ipy.watched_inputs import content_digest, mutable_inputs, unchanged_inputs

__all__ = ["CellCache"]

# NB. Stored entries pickle _Entry, _ModuleRef and _ClosedFile by their import path
# (funcache_ipy.cell and the class name), which is part of the on-disk format: they
# stay here under these names, or entries stored before stop loading.


@dataclass(frozen=True)
class _ModuleRef:
    """A module bound by the cell outside a top-level import; restored by importing it."""

    name: str


@dataclass(frozen=True)
class _Entry:
    """What one cell run leaves behind; the value stored under the cell's key.

    Stored without ``values`` and ``result``: ``pickled`` holds them, with the inputs
    they refer to pickled by name (see :mod:`funcache_ipy.restore`).
    """

    values: dict[str, object]  # modules as _ModuleRef
    mutated: dict[str, Kept]  # names (in values) still on their pre-run object: restored into it
    views: dict[str, ArrayView]  # arrays (in values) rebuilt as views of another named array
    removed: tuple[str, ...]  # names the cell deleted
    result: object  # the last expression's value (None when hidden by ";")
    outputs: tuple[Output, ...]
    seconds: float
    state: bool  # the run changed process state, stored apart under keys.state_key
    # Global generators the run drew from unseeded -> digest of the state it started from
    random_inputs: dict[str, str]
    pickled: Pickled | None = None  # (values, result); None in entries stored before it

    def __getstate__(self) -> dict[str, object]:
        state = dict(vars(self))
        if self.pickled is not None:  # NB. an entry read back has neither: it may be stored again
            state.pop("values", None)
            state.pop("result", None)
        return state


@dataclass(frozen=True)
class _Cell:
    """One cell being run and the session it runs in (what a hit or a run needs)."""

    analysis: CellAnalysis
    name: str
    namespace: dict[str, Any]
    compiler: Compile
    publisher: DisplayPublisher
    after_result: Callable[[Callable[[], None]], None]
    quiet: bool


@dataclass
class CellStats:
    """One cell name's hits and misses in this session, and what its last miss compared."""

    hits: int = 0
    misses: int = 0
    last_key: str | None = None
    last_manifest: dict[str, list[str]] | None = None  # None: the last run hit
    last_note: str | None = None  # a miss with a reason of its own (--refresh, uncacheable)


@dataclass
class CellCache:
    """Runs ``%%funcache`` cells through a store; one per IPython session.

    ``store`` and ``enabled`` are called at each use, so the cache directory and the
    switch (``%funcache off``) follow the configuration.
    """

    store: Callable[[], Store]
    enabled: Callable[[], bool]
    stats: dict[str, CellStats] = field(default_factory=dict)
    import_warned: set[str] = field(default_factory=set)  # cells told why imports failed
    file_sets: FileSetIndex = field(default_factory=FileSetIndex)
    # Each cell name's last whole code (see _same_code)
    codes: dict[str, types.CodeType] = field(default_factory=dict)

    def run(
        self,
        analysis: CellAnalysis,
        *,
        name: str,
        namespace: dict[str, Any],
        compiler: Compile,
        publisher: DisplayPublisher,
        after_result: Callable[[Callable[[], None]], None],
        refresh: bool = False,
        quiet: bool = False,
        ignore: frozenset[str] = frozenset(),
        declared: Sequence[str] = (),
        source: str = "",
    ) -> object:
        """Restore the cell from the cache, or run it and store what it did.

        Args:
            after_result: runs a callback once the cell's value is shown as ``Out[n]``
                (figures go there, as in a plain run).
            ignore: inputs left out of the key: the shell's own helpers
                (``get_ipython``), whose identity the shell guarantees.
            declared: glob patterns of files the cell reads behind Python's ``open``
                (``--files``), hashed into the key before the run.
            source: the cell's text, kept in the entry's manifest so that
                ``%funcache explain`` can show what changed and re-key it later.

        Returns:
            The cell's last value (``None`` if there is none), for ``Out[n]``.
        """
        __tracebackhide__ = True
        if not self.enabled():
            return _execute(analysis, namespace, compiler)
        cell = _Cell(analysis, name, namespace, compiler, publisher, after_result, quiet)
        stats = self.stats.setdefault(name, CellStats())
        cell_keying.import_ahead(analysis)
        code = self._same_code(name, cell_keying.whole_code(analysis, compiler))
        try:
            inputs = fingerprint_names(namespace, set(analysis.inputs) - ignore, code)
        except UnhashableError as exc:
            stats.misses += 1
            stats.last_key, stats.last_note = None, f"an input cannot be hashed: {exc}"
            _warn(f"funcache: cell {name} ran uncached: {unhashable(exc, namespace)}", namespace)
            return _execute(analysis, namespace, compiler)
        key_files, unreadable = cell_keying.key_files(declared, inputs.paths)
        if unreadable:
            stats.misses += 1
            stats.last_key, stats.last_note = None, f"cannot read {unreadable[0]}"
            _warn(
                f"funcache: cell {name} ran uncached: cannot read {unreadable[0]}, a file "
                "it depends on (--files, or a Path it reads); make it readable",
                namespace,
            )
            return _execute(analysis, namespace, compiler)
        key = cell_key(analysis.normalized, inputs.digest, file_sets.known_digest(key_files))
        try:
            store = self.store()
        except OSError as exc:
            _warn(f"funcache: cell {name} ran uncached: {exc}", namespace)
            return _execute(analysis, namespace, compiler)
        stats.last_note = "--refresh forced a run" if refresh else None
        if not refresh:
            result = self._hit(store, key, cell)
            if result is not MISSING:
                return result
        stats.misses += 1
        manifest = cell_keying.manifest(inputs.manifest, analysis, source, declared, key_files)

        waiting = announce_wait(f"running cell {name}")
        with lease(store.directory, key, on_wait=waiting) as waited:
            if waited and not refresh:  # its run may be stored by now, under any file set
                result = self._hit(store, key, cell)
                if result is not MISSING:
                    stats.misses -= 1
                    return result
            return self._compute(store, key, cell, inputs.reached, manifest, key_files)

    def _same_code(self, name: str, code: types.CodeType) -> types.CodeType:
        """``code``, or the equal code object this cell name compiled last time.

        Keying reads the code's summary, memoized by code object; a re-run compiles a new
        object each time, so without this every hit would summarize the cell's bytecode
        again (~0.3 ms). Equal code objects (same bytecode, constants by type, names, flags,
        nested code) summarize alike; the file name, which differs, is left out of both.
        """
        known = self.codes.get(name)
        if known is not None and known == code:
            return known
        self.codes[name] = code
        return code

    def _hit(self, store: Store, key: str, cell: _Cell) -> object:
        """Restore the cell's stored run, replay its output; its value, or ``MISSING``.

        The run is found by the key, or by the contents of the files it read.
        """

        def restore(entry_key: str) -> object:
            with shown_while_slow(
                cell.publisher, lambda: restoring_notice(store, entry_key, cell.analysis, cell.name)
            ):
                entry = self._restore(store, entry_key, cell)
            return MISSING if entry is None else entry

        started = time.perf_counter()
        found = self.file_sets.find(store, key, restore)
        entry = found.value
        stats = self.stats[cell.name]
        if not isinstance(entry, _Entry):
            if found.rejected is not None:
                stats.last_note = found.rejected
            return MISSING
        stats.hits += 1
        stats.last_key, stats.last_manifest, stats.last_note = found.key, None, None
        if not cell.quiet:
            took = time.perf_counter() - started
            print(hit_notice(entry.values, entry.seconds, cell.analysis, found.restored, took))
        replay_outputs(entry.outputs, cell.publisher, cell.after_result)
        load_figure_backend(entry.outputs, [*entry.values.values(), entry.result])
        return entry.result

    def _compute(
        self,
        store: Store,
        key: str,
        cell: _Cell,
        reached: frozenset[str],
        manifest: dict[str, list[str]],
        key_files: list[FileState],
    ) -> object:
        """Run the cell, recording its output and the files it reads; store what it did."""
        __tracebackhide__ = True
        analysis, namespace, name = cell.analysis, cell.namespace, cell.name
        stats = self.stats[name]
        stats.last_key, stats.last_manifest = key, manifest
        watched = mutable_inputs(namespace, analysis, reached)
        rebound_inputs = [n for n in analysis.inputs if n in analysis.bound and n in namespace]
        shapes = record_shapes(namespace, [*watched, *rebound_inputs])  # rebound: ``arr += 1``
        before = {n: id(value) for n, value in namespace.items()}
        state_before = state.snapshot()
        started = time.perf_counter()
        with OutputCapture(cell.publisher) as capture:
            with (
                files.track([store.directory], key_files) as reads,
                state.seeds_watched(state_before, namespace) as first_seed,
            ):
                result = _execute(analysis, namespace, cell.compiler)
            figures = capture.flush_figures()
        seconds = time.perf_counter() - started
        state_after = state.snapshot()
        changed = state.changes(state_before, state_after)
        settled = reads.settle(store.output_limit)
        entry, problem = _collect(
            analysis,
            namespace,
            before,
            watched,
            shapes,
            result,
            capture,
            seconds,
            bool(changed),
            state.random_inputs(state_before, state_after, first_seed),
        )
        if problem is None and settled.unstable:
            entry, problem = None, file_sets.changed_while_running(settled.unstable)
        manifest = {**manifest, **file_sets.manifest_of(settled.inputs)}
        stats.last_key = file_sets.entry_key(key, settled.inputs, bool(settled.outputs))
        stats.last_manifest = manifest
        # NB. shown after Out[n], like the inline backend does (the figures are marked so)
        replay_outputs(figures, cell.publisher, cell.after_result)
        if entry is None:
            stats.last_note = f"not stored: {problem}"
            _warn(f"funcache: cell {name} was not cached: {problem}", namespace)
        elif not changed or store.set(
            state_key(stats.last_key), changed, file_sets.record_meta(name, "process state")
        ):
            meta = EntryMeta(name, time.time(), seconds, 0, manifest)
            if self.file_sets.put(store, key, settled.inputs, entry, meta, settled.outputs):
                remember_stored(entry.values.values())  # they key as the copies a hit restores
        return result

    def explain_last(self, name: str) -> Explanation | None:
        """Why cell ``name``'s latest run missed (``None`` if it has not run this session)."""
        stats = self.stats.get(name)
        if stats is None or (stats.last_manifest is None and stats.last_note is None):
            return None if stats is None else Explanation(name, hit=True)
        if stats.last_note is not None:
            return Explanation(name, hit=False, reasons=(stats.last_note,))
        others = file_sets.other_results(self.store(), name, stats.last_key or "")
        if not others and name.startswith("cell:"):
            reason = (
                "no earlier run of this code is stored (a cell's default name follows its "
                "code, so an edited cell starts afresh; name it with --name to compare edits)"
            )
            return Explanation(name, hit=False, reasons=(reason,))
        reasons = explain_manifests(stats.last_manifest or {}, others)
        return Explanation(name, hit=False, reasons=tuple(reasons))

    def _restore(self, store: Store, key: str, cell: _Cell) -> _Entry | None:
        """Put a stored run back into the namespace; ``None`` (a miss) if it cannot be.

        NB. The process state the run changed goes back first: a cell that extends
        ``sys.path`` or changes directory before importing needs it for its imports. If
        the entry then cannot be restored, the state is put back as it was, so the cell
        runs from where a run would start.
        """
        if store.meta(key) is None:
            return None
        starting = state.random_states()  # NB. before the run's own state is applied
        changes = store.get(state_key(key))
        if changes is MISSING:
            return self._restore_entry(store, key, cell, starting, state_applied=False)
        if not isinstance(changes, dict) or not state.fits(changes):
            return None
        saved = state.snapshot()
        state.apply(changes, libraries=False)
        entry = self._restore_entry(store, key, cell, starting, state_applied=True)
        if entry is None:
            state.undo(saved)
        else:
            state.apply(changes, libraries=True)
        return entry

    def _restore_entry(
        self,
        store: Store,
        key: str,
        cell: _Cell,
        starting: Mapping[str, Any],
        *,
        state_applied: bool,
    ) -> _Entry | None:
        """Put the entry's values back, unless it is missing or started from other random
        states (``starting``: the generators as they were before the hit touched them)."""
        analysis, namespace, compiler = cell.analysis, cell.namespace, cell.compiler
        if analysis.definitions:
            try:
                exec(compiler(ast.Module(list(analysis.definitions), []), "exec"), namespace)
            except ImportError as exc:
                self._explain_import_failure(cell.name, exc, namespace)
                return None
            except Exception:  # NB. e.g. a decorator that now fails: running shows why
                return None
        entry = store.get(key)
        if not isinstance(entry, _Entry) or entry.state != state_applied:
            return None  # (a state record evicted apart from its entry: run again)
        differing = state.random_differs(entry.random_inputs, starting)
        if differing is not None:
            note = f"the global random state it starts from differs ({differing})"
            self.stats[cell.name].last_note = note
            return None
        try:
            if entry.pickled is None:  # stored before values referred to live objects
                in_place, (stored, result) = None, (entry.values, entry.result)
            else:
                in_place, (stored, result) = unpickle_values(entry.pickled, namespace)
            values = {var: _revive(value) for var, value in stored.items()}
        except Exception:  # NB. an input gone (UnresolvedInput), a module that now fails
            return None
        if not views_fit(entry.views, values, namespace):
            return None
        # NB. The values already hold the live objects that take the content in place
        live_of = restore_in_place(
            namespace, values if in_place is None else in_place, entry.mutated
        )
        live_of.update(rebuild_views(entry.views, values, namespace))
        namespace.update(values)
        for var in entry.removed:
            namespace.pop(var, None)
        return dataclasses.replace(entry, values=values, result=live_of.get(id(result), result))

    def _explain_import_failure(
        self, name: str, exc: ImportError, namespace: Mapping[str, Any]
    ) -> None:
        """Say once per session why a cell whose imports fail on a hit keeps running.

        ``sys.path`` and the working directory the cell changed are back before its
        imports re-run; the usual remaining cause is a cell that makes a module
        importable otherwise (writing it, ``%pip install``): a hit re-runs only the
        imports, never the other statements, so it fails after every restart.
        """
        stats = self.stats[name]
        module = exc.name or "a module"
        stats.last_note = f"re-running its imports failed: {exc}"
        if name in self.import_warned:
            return
        self.import_warned.add(name)
        _warn(
            f"funcache: cell {name} could not be restored, so it ran: a hit re-runs only "
            f"the cell's import, def and class statements, and importing {module} failed "
            f"({exc}). If the cell itself makes {module} importable (sys.path.insert, "
            "os.chdir), move that into an earlier cell; until then the cell runs after "
            "every restart.",
            namespace,
        )


def _revive(value: object) -> object:
    """A stored value as the namespace binds it: modules imported, closed files remade."""
    if isinstance(value, _ModuleRef):
        return importlib.import_module(value.name)
    if isinstance(value, _ClosedFile):
        return value.reopen()
    return value


def _execute(analysis: CellAnalysis, namespace: dict[str, Any], compiler: Compile) -> object:
    """Run the cell like IPython would; return the value of a last, visible expression."""
    __tracebackhide__ = True
    exec(compiler(ast.Module(list(analysis.body), []), "exec"), namespace)
    if analysis.result is None:
        return None
    value = eval(compiler(ast.Expression(analysis.result), "eval"), namespace)
    return value if analysis.shows_result else None


def _is_closed_file(value: object) -> bool:
    """``with open(...) as f`` leaves ``f`` closed: unpicklable, restored as ``_ClosedFile``."""
    return isinstance(value, io.IOBase) and value.closed


@dataclass(frozen=True)  # NB. stored by import path: stays here (see the note at the top)
class _ClosedFile:
    """A file of ``open()`` that the cell closed (``with open(path) as f``).

    A run leaves ``f`` bound to the closed file; a hit binds an equivalent one: same
    type, ``name``, ``mode``, encoding and ``repr``, closed (made by opening and closing
    ``os.devnull``, so no file is touched). Other closed files (``gzip.open``) cannot be
    re-created that way, so their cell runs.
    """

    kind: type
    name: str | int
    mode: str
    encoding: str | None

    @classmethod
    def of(cls, value: Any) -> _ClosedFile | None:
        """The record of ``value``, if an equivalent closed file can be made from it."""
        text = isinstance(value, io.TextIOWrapper)
        raw = value.buffer.raw if text else getattr(value, "raw", value)
        if not isinstance(raw, io.FileIO):
            return None
        record = cls(type(value), raw.name, value.mode, value.encoding if text else None)
        return record if type(record.reopen()) is record.kind else None

    def reopen(self) -> Any:
        """An equivalent file object, closed."""
        text = self.kind is io.TextIOWrapper
        mode = self.mode.replace("x", "w")  # NB. os.devnull exists
        buffering = 0 if self.kind is io.FileIO else -1
        file: Any = open(os.devnull, mode, buffering, encoding=self.encoding)  # noqa: SIM115
        file.close()
        raw = file.buffer.raw if text else getattr(file, "raw", file)
        raw.name = self.name
        if text:
            file.mode = self.mode
        return file


def _defined_but_not_replayed(
    value: object, namespace: Mapping[str, Any], bound: frozenset[str], replayed: frozenset[str]
) -> bool:
    """A function/class of the cell that pickle would store as ``__main__.name``, but that
    no re-run statement re-creates: after a restart that reference would dangle."""
    if not isinstance(value, types.FunctionType | type):
        return False
    home = value.__module__ == namespace.get("__name__")
    return home and value.__qualname__ in bound and value.__qualname__ not in replayed


def _collect(
    analysis: CellAnalysis,
    namespace: dict[str, Any],
    before: dict[str, int],
    watched: dict[str, bytes],
    shapes: Shapes,
    result: object,
    capture: OutputCapture,
    seconds: float,
    state_changed: bool,
    random_inputs: dict[str, str],
) -> tuple[_Entry, None] | tuple[None, str]:
    """The entry to store after a run, or why the run cannot be stored.

    Outputs are the names the cell may bind, the names the run actually rebound (a star
    import, ``globals()[...]``, a line magic) and the inputs whose content changed; of
    those, the ones still bound to the same object are marked for restoring in place.
    """
    if analysis.entangled:
        definition, sources = next(iter(analysis.entangled.items()))
        return None, (
            f"`{definition}` is defined from {', '.join(f'`{n}`' for n in sources)}, which the "
            "cell computes, so it cannot be re-created on a hit; define it in another cell"
        )
    changed = [n for n, v in namespace.items() if before.get(n) != id(v)]
    mutated = [
        n for n, d in watched.items() if n in namespace and content_digest(namespace[n]) != d
    ]
    bound = frozenset(analysis.bound)
    names = dict.fromkeys([*analysis.bound, *changed, *mutated])
    values: dict[str, object] = {}
    for name in names:
        value = namespace.get(name, MISSING)
        if value is MISSING or name in analysis.replayed:
            continue
        if _is_closed_file(value):
            value = _ClosedFile.of(value)
            if value is None:
                kind = type(namespace[name]).__name__
                return None, f"`{name}` is a closed {kind}, which cannot be re-created on a hit"
        elif isinstance(value, types.ModuleType):
            if sys.modules.get(value.__name__) is not value:
                return None, f"module `{name}` ({value.__name__}) cannot be imported by name"
            value = _ModuleRef(value.__name__)
        elif _defined_but_not_replayed(value, namespace, bound, analysis.replayed):
            return None, (
                f"`{name}` is a function or class defined inside a block; only top-level "
                "def/class statements can be re-created on a hit"
            )
        values[name] = value
    removed = tuple(n for n in before if n not in namespace)
    shared = shared_by_others(namespace, mutated)
    if shared is not None:
        return None, (
            f"`{shared[0]}` changed in place and `{shared[1]}` names it or a part of it; a hit "
            f"would give `{shared[0]}` a stored copy and leave `{shared[1]}` as it was"
        )
    kept = find_kept(values, shapes)
    stored = {n: v for n, v in values.items() if n not in kept}
    views, problem = find_views(stored, {n: value for n, (value, _) in shapes.items()})
    if problem is not None:
        return None, problem
    unchanged = unchanged_inputs(analysis, namespace, before, watched, mutated)
    references = input_references(namespace, unchanged, shapes)
    in_place = kept_references(values, kept, references)
    try:
        kept_values = {name: values[name] for name in kept}
        pickled = pickle_values(kept_values, (values, result), references, in_place)
    except Exception:  # NB. pickling runs arbitrary __reduce__ code
        return None, unpicklable(values, result, references)
    entry = _Entry(
        values,
        kept,
        views,
        removed,
        result,
        capture.outputs,
        seconds,
        state_changed,
        random_inputs,
        pickled,
    )
    if not pickles(entry, {}):
        return None, "its displayed output cannot be pickled"
    return entry, None


def _warn(message: str, namespace: Mapping[str, Any]) -> None:
    """Warn from the user's cell: the first frame running with ``namespace`` as globals."""
    level = 2
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_globals is not namespace:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, FuncacheWarning, stacklevel=level if frame is not None else 2)
