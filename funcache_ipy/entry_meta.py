"""An entry's metadata: what it is, and reading it back from rows without unpickling.

Metadata rides in diskcache's ``tag`` column as JSON (see :mod:`funcache_ipy.store`), and
rows can be forged, so a tag counts only when it parses to exactly :class:`EntryMeta`'s
fields and types. Listing every entry parses every row's tag: :class:`Listing` keeps the
last listing so the next one parses only rows it has not seen.
"""

from __future__ import annotations

import dataclasses
import json
import json.scanner
from dataclasses import dataclass
from typing import Final

__all__ = ["EntryMeta", "Listing", "parse_meta", "parsed"]


@dataclass(frozen=True)
class EntryMeta:
    """What ``%funcache info`` and ``explain`` show about an entry, stored as JSON."""

    name: str
    created: float
    compute_seconds: float
    size: int
    manifest: dict[str, list[str]]

    def to_json(self, size: int) -> str:
        """This metadata as the JSON a row's tag holds, with the stored ``size``.

        NB. Not ``dataclasses.asdict``, which deep-copies the manifest first: a tenth
        of a millisecond on each store, a remote fill's critical path among them.
        """
        return json.dumps(
            {
                "name": self.name,
                "created": self.created,
                "compute_seconds": self.compute_seconds,
                "size": size,
                "manifest": self.manifest,
            }
        )


class Listing:
    """Every entry, oldest first, and by name: valid while the database's stamp is the same.

    Its metadata by tag text spares the next listing parsing the rows it has seen (a row's
    tag never changes): after a few new entries, listing again parses just those.
    """

    def __init__(
        self,
        stamp: tuple[object, int, int],
        entries: list[tuple[str, EntryMeta]],
        by_tag: dict[str, EntryMeta],
    ) -> None:
        self.stamp = stamp
        self.all = entries
        self.by_tag = by_tag
        self.by_name: dict[str, list[tuple[str, EntryMeta]]] = {}
        for entry in entries:
            self.by_name.setdefault(entry[1].name, []).append(entry)


def parsed(
    rows: list[tuple[object, object]], known: dict[str, EntryMeta], suffix: str
) -> tuple[list[tuple[str, EntryMeta]], dict[str, EntryMeta]]:
    """``(key, meta)`` of this user's rows (keyed ``<key><suffix>``, see
    :mod:`funcache_ipy.store`) with well-formed metadata, oldest first; and their
    metadata by tag text. Tags in ``known`` are not parsed again."""
    found = []
    by_tag = {}
    for row, tag in rows:
        if type(row) is not str or type(tag) is not str:
            continue
        key, mark, user = row.partition("~")
        if mark + user != suffix:  # a teammate's row (or, in a private directory, any such)
            continue
        meta = known.get(tag) or parse_meta(tag)
        if meta is not None:
            found.append((key, meta))
            by_tag[tag] = meta
    found.sort(key=lambda item: item[1].created)
    return found, by_tag


# json.loads minus its wrappers (whitespace regexes, checks), which cost more than the
# scanning of these short texts; Store.set's tags are json.dumps output, with no whitespace around.
# (typeshed types the scanner's context as a scanner, not the decoder it really is)
_scan_json: Final = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]
_META_FIELDS: Final = frozenset(field.name for field in dataclasses.fields(EntryMeta))
_NUMBERS: Final = (int, float)


def parse_meta(tag: object) -> EntryMeta | None:
    """Metadata from a row's tag; ``None`` unless it is well-formed (rows can be forged).

    NB. Runs once per entry when everything is listed: plain loops, no generators.
    """
    if type(tag) is not str:
        return None
    try:
        fields, end = _scan_json(tag, 0)
    except (StopIteration, ValueError, RecursionError):  # NB. StopIteration: not JSON at all
        return None
    if end != len(tag) or type(fields) is not dict or fields.keys() != _META_FIELDS:
        return None
    name, created, seconds, size, manifest = (
        fields["name"],
        fields["created"],
        fields["compute_seconds"],
        fields["size"],
        fields["manifest"],
    )
    if (
        type(name) is not str
        or type(created) not in _NUMBERS
        or type(seconds) not in _NUMBERS
        or type(size) is not int
        or type(manifest) is not dict
    ):
        return None
    for item in manifest.values():
        if type(item) is not list:
            return None
        for text in item:
            if type(text) is not str:
                return None
    return EntryMeta(name, created, seconds, size, manifest)
