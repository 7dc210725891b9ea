"""Listing, clearing, explaining and pruning a cache directory (and listing its shared
tier), without IPython.

``%funcache info/clear/explain/prune`` are thin wrappers over this module (autoreload's
split): what it needs of the session (the live ``@cache`` functions, the cells run and
their code, how to analyse a cell's text) is handed in.

Entries are grouped per function or cell name. Beside the results, a name owns records
(:mod:`funcache_ipy.file_sets`: the file sets of a call key, the copies of files a run
wrote, a cell's process state); they are never counted as entries and go with their
results.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xxhash

from funcache_ipy import cell_keying, decorator, file_sets
from funcache_ipy.analysis import CellAnalysis
from funcache_ipy.cell_keying import Compile, is_cell_entry
from funcache_ipy.entry_meta import EntryMeta, parse_meta
from funcache_ipy.file_sets import FileSetIndex
from funcache_ipy.files import is_file_label
from funcache_ipy.fingerprint import fingerprint_names
from funcache_ipy.hashing import UnhashableError
from funcache_ipy.keys import (
    NOTHING_STORED,
    NextRun,
    cell_key,
    explain_manifests,
    format_age,
    output_key,
    state_key,
)
from funcache_ipy.notices import format_seconds
from funcache_ipy.orphans import Orphans
from funcache_ipy.store import Store

if TYPE_CHECKING:
    from funcache_ipy.remote import RemoteTier

__all__ = [
    "CacheReport",
    "HousekeepingError",
    "Pruned",
    "ReportRow",
    "SharedReport",
    "current_functions",
    "explain_next_cell",
    "parse_age",
    "prune",
    "report",
    "resolve",
    "shared_report",
]

Analyze = Callable[[str], tuple[CellAnalysis, Compile]]
"""A cell's text -> its analysis and the compiler to key it with (IPython's, in a shell)."""
Shapes = dict[tuple[str, ...], tuple[bool, int, bool]]
"""What an entry adds to its row, by its manifest's labels (see :func:`count_entry`)."""

_FIRST_LINE = 40  # characters of an unnamed cell's first code line that info shows
_ARGUMENT = "argument `"  # manifest labels of a function's arguments start so


class HousekeepingError(ValueError):
    """A name or option that does not fit (the message says what is known)."""


# ----------------------------------------------------------------------- names


def current_functions(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """Live ``@cache`` wrappers by ``cache_name``.

    NB. Re-running a notebook's def cell leaves the old wrapper alive until garbage
    collection; the one bound in the namespace is the current one.
    """
    bound = {id(value) for value in namespace.values()}
    current: dict[str, Any] = {}
    fn: Any  # a wrapper: cache_name is one of the helpers set on it at decoration
    for fn in decorator.decorated_functions():
        if fn.cache_name not in current or id(fn) in bound:
            current[fn.cache_name] = fn
    return current


def resolve(name: str, known: Iterable[str], condition: str) -> str:
    """The known name meant by ``name``: exact, or a unique ``module.`` suffix match.

    Raises:
        HousekeepingError: nothing known matches (``condition`` says what "known"
            means), or several names do.
    """
    names = sorted(set(known))
    if name in names:
        return name
    matches = [known_name for known_name in names if known_name.endswith("." + name)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise HousekeepingError(f"{name!r} is ambiguous: {listing(matches)}; use the full name")
    raise HousekeepingError(
        f"no function or cell named {name!r} {condition}; known: {listing(names)}"
    )


def listing(names: Iterable[str]) -> str:
    return ", ".join(sorted(names)) or "none yet"


def plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def format_bytes(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    exponent = min((size.bit_length() - 1) // 10, 3)
    return f"{size / 1024**exponent:.1f} {('KiB', 'MiB', 'GiB')[exponent - 1]}"


def cell_source(meta: EntryMeta) -> str:
    """The code a cell entry was stored from ("" for entries stored before it was kept)."""
    code = meta.manifest.get(cell_keying.CODE_LABEL, [])
    return code[1] if len(code) > 1 else ""


def cell_declared(meta: EntryMeta) -> list[str]:
    """The ``--files`` patterns a cell entry was stored with."""
    declared = meta.manifest.get(cell_keying.FILES_LABEL)
    return declared[0].split(" ") if declared else []


# ----------------------------------------------------------------------- info


@dataclass(order=True)
class ReportRow:
    """One function or cell in ``%funcache info``; hits/misses None if not seen this session."""

    name: str
    kind: str
    entries: int = 0
    size: int = 0
    hits: int | None = None
    misses: int | None = None
    files: list[int] = field(default_factory=list)  # tracked files of each entry listed
    newest: EntryMeta | None = None  # its newest result: age, original run time, code

    def shown_files(self) -> str:
        """``3``, or ``0-3`` when its entries differ; ``-`` when none is in this directory."""
        if not self.files:
            return "-"
        low, high = min(self.files), max(self.files)
        return str(low) if low == high else f"{low}-{high}"

    def shown_name(self) -> str:
        """The name; an unnamed cell's with its first code line, so it can be recognised."""
        if not (self.kind == "cell" and self.name.startswith("cell:") and self.newest):
            return self.name
        lines = [line.strip() for line in cell_source(self.newest).splitlines()]
        first = next((line for line in lines if line and not line.startswith("#")), "")
        if len(first) > _FIRST_LINE:
            first = first[: _FIRST_LINE - 3] + "..."
        return f"{self.name} {first}" if first else self.name


def count_entry(row: ReportRow, meta: EntryMeta, shapes: Shapes) -> None:
    """Add ``meta`` to ``row``: a result as an entry, a record to the size only (it is where
    the entries are, not an entry).

    What an entry adds depends on its manifest's labels only, and the entries of one
    function or cell mostly share them: worked out once per label set, kept in ``shapes``.
    """
    row.size += meta.size
    labels = tuple(meta.manifest)
    shape = shapes.get(labels)
    if shape is None:
        shape = shapes[labels] = (
            file_sets.is_record(meta),
            file_sets.tracked_files(meta),
            is_cell_entry(meta),
        )
    record, files, cell = shape
    if record:
        return
    row.entries += 1
    row.files.append(files)
    if row.newest is None or meta.created >= row.newest.created:
        row.newest = meta
    if cell:
        row.kind = "cell"


def stored_ago(meta: EntryMeta | None, now: float) -> str:
    """``2 h ago``: how long ago ``meta``'s entry was stored (``-`` without one)."""
    return f"{format_age(now - meta.created)} ago" if meta else "-"


def text_table(columns: Sequence[str], body: list[tuple[str, ...]], left: int) -> list[str]:
    """Lines of a plain-text table: the first ``left`` columns aligned left, numbers right."""
    if not body:
        return []
    widths = [max(map(len, column)) for column in zip(columns, *body, strict=True)]
    lines = [""]
    for cells in [tuple(columns), *body]:
        padded = [
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        lines.append("  ".join(padded).rstrip())
    return lines


def html_table(
    summary: Sequence[str], columns: Sequence[str], body: list[tuple[str, ...]], left: int
) -> str:
    """Summary lines and a table as HTML, aligned as :func:`text_table` aligns them."""

    # NB. Jupyter's table style aligns cells right: names are aligned left explicitly.
    def tag(name: str, i: int, text: str) -> str:
        align = "left" if i < left else "right"
        return f'<{name} style="text-align:{align}">{html.escape(text)}</{name}>'

    head = "".join(tag("th", i, c) for i, c in enumerate(columns))
    rows = "".join(
        "<tr>" + "".join(tag("td", i, cell) for i, cell in enumerate(cells)) + "</tr>"
        for cells in body
    )
    lines = "<br>".join(html.escape(line) for line in summary)
    table = f"<table><tr>{head}</tr>{rows}</table>" if rows else ""
    return f"<p>{lines}</p>{table}"


_COLUMNS = ("name", "kind", "entries", "files", "size", "stored", "run", "hits", "misses")
_LEFT = 2  # columns aligned left (text); the others are numbers, aligned right


@dataclass(frozen=True)
class CacheReport:
    """``%funcache info``: plain text in a terminal, an HTML table in Jupyter.

    ``stored`` is the age of a name's newest entry: the store keeps no read times (it
    evicts the least recently *stored*), so "last used" is known only as this session's
    hits. ``shared``: the shared tier's listing, shown after the local one (``--remote``).
    """

    directory: Path
    volume: int
    orphans: Orphans
    enabled: bool
    rows: list[ReportRow]
    now: float = field(default_factory=time.time)
    shared: SharedReport | None = None

    def summary(self) -> tuple[str, str]:
        """Header lines: where and whether; how much and how well."""
        state = "on" if self.enabled else "off"
        entries = sum(row.entries for row in self.rows)
        hits = sum(row.hits or 0 for row in self.rows)
        misses = sum(row.misses or 0 for row in self.rows)
        stored = f"{plural(entries, 'entry', 'entries')}, {format_bytes(self.volume)} on disk"
        if self.orphans.files:
            stored += (
                f" + {plural(self.orphans.files, 'orphan file', 'orphan files')} "
                f"({format_bytes(self.orphans.bytes)}, left by interrupted writes)"
            )
        return (
            f"funcache: {self.directory} (caching {state})",
            f"{stored}; this session: {plural(hits, 'hit', 'hits')}, "
            f"{plural(misses, 'miss', 'misses')}",
        )

    def table(self) -> list[tuple[str, ...]]:
        def count(n: int | None) -> str:
            return "-" if n is None else str(n)

        rows: list[tuple[str, ...]] = []
        for r in self.rows:
            newest = r.newest
            rows.append(
                (
                    r.shown_name(),
                    r.kind,
                    str(r.entries),
                    r.shown_files(),
                    format_bytes(r.size),
                    stored_ago(newest, self.now),
                    format_seconds(newest.compute_seconds) if newest else "-",
                    count(r.hits),
                    count(r.misses),
                )
            )
        return rows

    def __repr__(self) -> str:
        lines = [*self.summary(), *text_table(_COLUMNS, self.table(), _LEFT)]
        if self.shared is not None:
            lines += ["", repr(self.shared)]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        local = html_table(self.summary(), _COLUMNS, self.table(), _LEFT)
        return local + (self.shared._repr_html_() if self.shared is not None else "")


def report(
    store: Store,
    functions: Mapping[str, Any],
    cells: Mapping[str, tuple[int, int]],
    enabled: bool,
    shared: RemoteTier | None = None,
) -> CacheReport:
    """What ``%funcache info`` and ``Memory.info()`` show.

    Args:
        functions: live ``@cache`` wrappers by name (their hits, misses and stores).
        cells: this session's (hits, misses) per cell name.
        enabled: whether caching is on, for the header.
        shared: a shared tier to list after the local directory (``--remote``).
    """
    rows: dict[str, ReportRow] = {}
    shapes: Shapes = {}
    for _, meta in store.entries():  # NB. one scan; cache_info() below reuses it
        row = rows.get(meta.name)
        if row is None:
            row = rows[meta.name] = ReportRow(meta.name, "function")
        count_entry(row, meta, shapes)
    for name, fn in functions.items():
        info = fn.cache_info()  # NB. also when stored in a directory= of its own
        row = rows.setdefault(name, ReportRow(name, "function"))
        row.entries, row.size = info.entries, info.bytes
        row.hits, row.misses = info.hits, info.misses
    for name, (hits, misses) in cells.items():
        row = rows.setdefault(name, ReportRow(name, "cell"))
        row.kind, row.hits, row.misses = "cell", hits, misses
    return CacheReport(
        store.directory,
        store.volume(),
        store.orphans(),
        enabled,
        sorted(rows.values()),
        shared=shared_report(shared) if shared is not None else None,
    )


# ----------------------------------------------------------------------- the shared tier

_SHARED_COLUMNS = ("name", "kind", "signer", "entries", "size", "stored")
_SHARED_LEFT = 3
_YOU = "you"  # the signer column of this user's own entries
_SIGNER_SHOWN = 16  # characters of a signer's public key: "ed25519:" and 8 of the key


@dataclass(frozen=True)
class SharedReport:
    """The shared tier in ``%funcache info --remote``: per name and signer, its entries.

    Built from the signed ``.meta`` objects beside the values (values are never
    downloaded to list them), of this user and the signers they trust only: an entry
    nobody trusted signed is not theirs to count. ``signer`` is "you" or the start of
    the signer's public key as listed in ``$FUNCACHE_IPY_TRUST`` (``ed25519:AbC…``).
    """

    url: str
    trusted: int  # signers trusted besides this user
    rows: list[tuple[str, ReportRow]]  # (signer, its entries of one name), by name
    skipped: int  # .meta objects that could not be verified (left in place, not listed)
    reachable: bool
    now: float = field(default_factory=time.time)

    def summary(self) -> tuple[str, str]:
        """Header lines: where and whose; how much, or why nothing is listed."""
        whose = f"entries by you and {plural(self.trusted, 'signer', 'signers')} you trust"
        if not self.reachable:
            return f"shared: {self.url} ({whose})", "unreachable this session: not listed"
        entries = sum(row.entries for _, row in self.rows)
        stored = (
            f"{plural(entries, 'entry', 'entries')}, "
            f"{format_bytes(sum(row.size for _, row in self.rows))}"
        )
        if self.skipped:
            stored += (
                f"; skipped {plural(self.skipped, 'object', 'objects')} that could not "
                "be verified (left in place)"
            )
        return f"shared: {self.url} ({whose})", stored

    def table(self) -> list[tuple[str, ...]]:
        return [
            (
                row.shown_name(),
                row.kind,
                signer,
                str(row.entries),
                format_bytes(row.size),
                stored_ago(row.newest, self.now),
            )
            for signer, row in self.rows
        ]

    def __repr__(self) -> str:
        return "\n".join(
            [*self.summary(), *text_table(_SHARED_COLUMNS, self.table(), _SHARED_LEFT)]
        )

    def _repr_html_(self) -> str:
        return html_table(self.summary(), _SHARED_COLUMNS, self.table(), _SHARED_LEFT)


def signer_label(public_key: str) -> str:
    """How a listing names a signer: the start of the public key a teammate handed out."""
    return public_key[:_SIGNER_SHOWN] + "…"


def shared_report(tier: RemoteTier) -> SharedReport:
    """List ``tier``: what ``%funcache info --remote`` adds after the local listing.

    An unreachable tier is not an error: it has warned once (see
    :meth:`funcache_ipy.remote.RemoteTier.entries`) and is shown as not listed.
    """
    own = tier.signer.public.id
    labels = {public.id: signer_label(public.text()) for public in tier.trusted}
    rows: dict[tuple[str, str], ReportRow] = {}
    shapes: Shapes = {}
    skipped = 0
    for signer_id, _, tag in tier.entries():
        meta = parse_meta(tag)
        if meta is None:
            skipped += 1
            continue
        signer = _YOU if signer_id == own else labels[signer_id]
        row = rows.get((meta.name, signer))
        if row is None:
            row = rows[meta.name, signer] = ReportRow(meta.name, "function")
        count_entry(row, meta, shapes)
    if not tier.reachable:  # NB. what was read before the failure is a partial listing
        return SharedReport(tier.url, len(tier.trusted) - 1, [], 0, reachable=False)
    ordered = sorted(rows, key=lambda pair: (pair[0], pair[1] != _YOU, pair[1]))
    return SharedReport(
        tier.url,
        len(tier.trusted) - 1,
        [(signer, rows[name, signer]) for name, signer in ordered],
        skipped,
        reachable=True,
    )


# ----------------------------------------------------------------------- explain


def newest_cell_entry(store: Store, name: str) -> EntryMeta | None:
    """The newest stored run of cell ``name`` (records left out)."""
    runs = [meta for _, meta in store.entries(name) if is_cell_entry(meta)]
    return max(runs, key=lambda meta: meta.created, default=None)


def explain_next_cell(
    store: Store,
    name: str,
    source: str,
    declared: Sequence[str],
    namespace: dict[str, Any],
    analyze: Analyze,
    ignore: frozenset[str] = frozenset(),
) -> NextRun:
    """Would running cell ``name`` with ``source`` hit now, against ``namespace``?

    Keyed as :meth:`funcache_ipy.cell.CellCache.run` keys it (its local imports run
    first, as the run would), without running or restoring anything.
    """
    analysis, compiler = analyze(source)
    cell_keying.import_ahead(analysis)
    code = cell_keying.whole_code(analysis, compiler)
    try:
        inputs = fingerprint_names(namespace, set(analysis.inputs) - ignore, code)
    except UnhashableError as exc:
        return NextRun(name, False, (f"an input cannot be hashed: {exc}",))
    key_files, unreadable = cell_keying.key_files(declared, inputs.paths)
    if unreadable:
        return NextRun(name, False, (f"cannot read {unreadable[0]}",))
    key = cell_key(analysis.normalized, inputs.digest, file_sets.known_digest(key_files))
    index = FileSetIndex()
    used = file_sets.would_use(store, key, index.stored)
    if used is not None:
        return NextRun(name, True, (), used.created, used.compute_seconds)
    manifest = cell_keying.manifest(inputs.manifest, analysis, source, declared, key_files)
    others = file_sets.other_results(store, name, key)
    reasons = explain_manifests(manifest, others) if others else [NOTHING_STORED]
    # NB. Equal manifests but no entry: stored by another Python or schema version.
    return NextRun(name, False, tuple(reasons) or ("stored by another version of Python",))


# ----------------------------------------------------------------------- prune


@dataclass(frozen=True)
class Pruned:
    """What :func:`prune` removed: results, records and copies beside them, and bytes."""

    entries: int
    bytes: int

    def __str__(self) -> str:
        return f"removed {plural(self.entries, 'entry', 'entries')} ({format_bytes(self.bytes)})"


_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|m)")
_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0}


def parse_age(text: str) -> float:
    """Seconds in ``30d``, ``12h`` or ``90m``.

    Raises:
        HousekeepingError: another form.
    """
    match = _AGE.fullmatch(text.strip())
    if match is None:
        raise HousekeepingError(
            f"an age is a number and d, h or m (like 30d, 12h, 90m), not {text!r}"
        )
    return float(match[1]) * _UNITS[match[2]]


def version_of(meta: EntryMeta) -> str:
    """What one version of a function or cell shares: its manifest but the arguments and
    the files read (those vary between the entries of one version of the code).

    A function's version is its code, the code and globals it reaches and its options; a
    cell's, its code and inputs.
    """
    h = xxhash.xxh3_64()
    for label in sorted(meta.manifest):
        if label.startswith(_ARGUMENT) or is_file_label(label):
            continue
        h.update(f"{label}\0{meta.manifest[label][0]}\0".encode())
    return h.hexdigest()


def prune(
    store: Store,
    keep: int | None = None,
    older: float | None = None,
    name: str | None = None,
    now: float | None = None,
) -> Pruned:
    """Remove superseded versions and old entries; the newest version of each name stays.

    An entry goes when its version is not among the newest ``keep`` of its function or
    cell (versions ordered by their newest entry), or when it was stored more than
    ``older`` seconds ago (times are of storing: the store keeps no read times). Records
    of removed entries go with them: their file sets' record once every set in it is
    gone, the stored copies of files they wrote, a cell's process state.

    Args:
        name: only this function's or cell's entries; all names if None.
    """
    now = time.time() if now is None else now
    by_name: dict[str, list[tuple[str, EntryMeta]]] = {}
    records: dict[str, list[str]] = {}  # name -> keys of its file-set records
    for key, meta in store.entries(name):
        if not file_sets.is_record(meta):
            by_name.setdefault(meta.name, []).append((key, meta))
        elif meta.manifest[file_sets.RECORD_LABEL][0].startswith("format"):
            records.setdefault(meta.name, []).append(key)
    sizes = {key: meta.size for key, meta in store.entries(name)}
    doomed: set[str] = set()
    for results in by_name.values():
        versions: dict[str, float] = {}
        for _, meta in results:
            version = version_of(meta)
            versions[version] = max(versions.get(version, 0.0), meta.created)
        ranked = sorted(versions, key=versions.__getitem__, reverse=True)
        kept = set(ranked[: max(keep or 0, 1)] if keep is not None else ranked)
        newest = ranked[0]
        for key, meta in results:
            version = version_of(meta)
            if version == newest:
                continue  # NB. never the newest version, whatever its age
            if version not in kept or (older is not None and now - meta.created > older):
                doomed.add(key)
    companions = _companions(store, doomed, records)
    gone = doomed | companions
    freed = sum(sizes.get(key, 0) for key in gone)
    return Pruned(store.delete(sorted(gone)), freed)


def _companions(store: Store, doomed: set[str], records: Mapping[str, list[str]]) -> set[str]:
    """Records to remove with the entries ``doomed``: their outputs' copies, their cells'
    process states, and the file-set records all of whose sets are doomed."""
    found = {state_key(key) for key in doomed}
    for keys in records.values():
        for record in keys:
            sets = file_sets.parse(store.get(record))
            for candidate in sets:
                if candidate.key in doomed:
                    found.update(
                        output_key(candidate.key, written.state.digest)
                        for written in candidate.written
                    )
            if sets and all(candidate.key in doomed for candidate in sets):
                found.add(record)
    return found
