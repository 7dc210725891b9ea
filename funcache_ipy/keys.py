"""Cache keys for calls and cells, and explanations of why a key missed.

A key is a digest of the schema version, the Python minor version (bytecode differs
between them), the code fingerprint and the inputs. Keys are content-addressed: entries
for older code stay in the store, so reverting an edit hits again.

Each stored entry carries a *manifest* (dependency label -> digest, short repr); a miss is
explained by diffing the current manifest against the closest stored one.
"""

from __future__ import annotations

import difflib
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import xxhash

from funcache_ipy.notices import format_seconds

# 2: cell entries record views of arrays (older ones would restore them as copies) and are
# stored by the files they read; class fingerprints leave __slotnames__ out; cached
# functions are CachedFunction objects; a call's arguments are keyed by one digest each
# (hashing.hash_items); cell entries record the random states they started from.
# 3: long lists, tuples, dicts and sets of scalars are hashed in bulk (hashing_bulk).
SCHEMA_VERSION = 3
_SALT = f"funcache_ipy:{SCHEMA_VERSION}:py{sys.version_info[0]}.{sys.version_info[1]}:".encode()

Manifest = Mapping[str, Sequence[str]]


def call_key(
    code_digest: bytes,
    arguments_digest: bytes,
    version: str | None = None,
    files_digest: bytes | None = None,
) -> str:
    """Key of one call: function fingerprint + arguments + the user's ``version=`` salt.

    ``files_digest`` covers the files known before the run (``files=`` globs and
    ``pathlib.Path`` arguments), see :func:`files_digest`.
    """
    h = xxhash.xxh3_128(_SALT)
    h.update(code_digest)
    h.update(arguments_digest)
    if version is not None:
        h.update(b"version:" + version.encode())
    if files_digest is not None:
        h.update(b"files:" + files_digest)
    return h.hexdigest()


def files_digest(files: Iterable[tuple[str, str]]) -> bytes:
    """Digest of ``(path, content digest)`` pairs, in the order given."""
    h = xxhash.xxh3_128()
    for path, digest in files:
        encoded = path.encode(errors="surrogateescape")
        h.update(len(encoded).to_bytes(8, "little") + encoded + digest.encode() + b"\0")
    return h.digest()


def file_set_key(key: str, files: Iterable[tuple[str, str]]) -> str:
    """Key of a result whose run read files: its call key + the files' paths and contents.

    One call key can thus have one entry per distinct set of file contents, so
    reverting a file hits its earlier entry again.
    """
    h = xxhash.xxh3_128(_SALT + b"file set:")
    h.update(key.encode())
    h.update(files_digest(sorted(files)))
    return h.hexdigest()


def file_sets_key(key: str) -> str:
    """Key of the record listing the file sets seen for call key ``key``."""
    return xxhash.xxh3_128(_SALT + b"file sets of:" + key.encode()).hexdigest()


def output_key(entry_key: str, digest: str) -> str:
    """Key of the stored content of a file the run of ``entry_key`` wrote."""
    return xxhash.xxh3_128(_SALT + b"output:" + f"{entry_key}:{digest}".encode()).hexdigest()


def state_key(key: str) -> str:
    """Key of the process state a cell's run changed (seeds, options, ``sys.path``).

    Kept apart from the entry so that a hit can put ``sys.path`` and the working
    directory back *before* re-running the cell's imports and definitions.
    """
    return xxhash.xxh3_128(_SALT + b"state of:" + key.encode()).hexdigest()


def cell_key(normalized_code: str, inputs_digest: bytes, files_digest: bytes | None = None) -> str:
    """Key of one ``%%funcache`` cell: its normalized code + the digest of what it reads.

    ``files_digest`` covers the files declared with ``--files``, see :func:`files_digest`.
    """
    h = xxhash.xxh3_128(_SALT + b"cell:")
    h.update(normalized_code.encode())
    h.update(inputs_digest)
    if files_digest is not None:
        h.update(b"files:" + files_digest)
    return h.hexdigest()


NOTHING_STORED = "nothing is stored for it yet (first call, or the cache was cleared)"


@dataclass(frozen=True)
class Explanation:
    """Whether a call hits, and if not, what differs from the closest stored entry."""

    name: str
    hit: bool
    reasons: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.hit:
            return f"{self.name}: hit"
        lines = [f"{self.name}: miss"] + [f"  - {reason}" for reason in self.reasons]
        return "\n".join(lines)


@dataclass(frozen=True)
class NextRun:
    """Whether the next run of a function or cell would hit, things being as they are now.

    For a function: called again with its last call's arguments; for a cell: its last
    code run again in the current namespace. ``stored``/``seconds``: when the entry it
    would hit was stored and what computing it took.
    """

    name: str
    hit: bool
    reasons: tuple[str, ...] = ()
    stored: float | None = None
    seconds: float | None = None

    def __str__(self) -> str:
        head = f"next run of {self.name}: "
        if self.hit:
            details = []
            if self.stored is not None:
                details.append(f"stored {format_age(time.time() - self.stored)} ago")
            if self.seconds is not None:
                details.append(f"original run {format_seconds(self.seconds)}")
            return head + "would hit" + (f" ({', '.join(details)})" if details else "")
        if len(self.reasons) == 1 and "\n" not in self.reasons[0]:
            return f"{head}would recompute: {self.reasons[0]}"
        lines = [f"{head}would recompute:"]
        lines += ["  - " + reason.replace("\n", "\n    ") for reason in self.reasons]
        return "\n".join(lines)


def format_age(seconds: float) -> str:
    """``40 s``, ``5 min``, ``2 h``, ``3 d``: how long ago, to one unit."""
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f} {unit}"
    return f"{seconds:.0f} s"


_DIFF_LINES = 8  # changed lines a code diff shows before "..."


def text_diff(old: str, new: str) -> str:
    """A short line diff of two texts (a cell's code): changed lines only, ``-``/``+``."""
    changed = [
        line
        for line in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)
        if line[:1] in "-+" and not line.startswith(("---", "+++"))
    ]
    shown = changed[:_DIFF_LINES] + (["..."] if len(changed) > _DIFF_LINES else [])
    return "\n".join(shown)


def explain_manifests(new: Manifest, candidates: Sequence[Manifest]) -> list[str]:
    """Reasons ``new`` differs from the closest of ``candidates`` (stored entries' manifests).

    Closest = most dependencies with equal digests. Returns ``[]`` when identical, one
    reason when nothing is stored yet.

    >>> explain_manifests({"global `SCALE`": ["b", "3"]}, [{"global `SCALE`": ["a", "2"]}])
    ['global `SCALE` changed: 2 → 3']
    """
    if not candidates:
        return [NOTHING_STORED]
    closest = max(candidates, key=lambda old: _agreement(new, old))
    reasons = []
    for label, (digest, shown) in ((k, tuple(v)) for k, v in new.items()):
        old = closest.get(label)
        if old is None:
            reasons.append(f"{label} is new")
        elif old[0] != digest:
            old_shown = old[1] if len(old) > 1 else ""
            # NB. Equal texts (a file of the same size, a truncated repr) would say nothing.
            if not (old_shown and shown and shown != old_shown):
                detail = ""
            elif "\n" in old_shown or "\n" in shown:  # code: which lines, not all of it
                detail = ":\n" + text_diff(old_shown, shown)
            else:
                detail = f": {old_shown} → {shown}"
            reasons.append(f"{label} changed{detail}")
    reasons.extend(f"{label} is no longer used" for label in closest if label not in new)
    return reasons


def _agreement(new: Manifest, old: Manifest) -> int:
    return sum(1 for label, entry in new.items() if label in old and old[label][0] == entry[0])
