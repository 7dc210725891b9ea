"""Fingerprint code from live objects: a function's code plus everything it can reach.

The public face of fingerprinting. ``walk.py`` does one traversal (reading bytecode
through ``bytecode.py``, telling user code from libraries through ``origins.py``) and
records *guards* (``guards.py``): cheap identity checks plus the mutable values that must
be re-hashed. A ``Tracker`` re-checks the guards on every call and walks again only when
one fails, so a warm call costs a few identity comparisons instead of a walk over every
helper.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from funcache_ipy.bytecode import CodeSummary, summarize_code
from funcache_ipy.guards import Guards
from funcache_ipy.hashing import hash_value
from funcache_ipy.stand_ins import remember
from funcache_ipy.walk import Walk, cycle_token, display_name, kind_of


@dataclass(frozen=True)
class Fingerprint:
    """A digest of code and what it reaches, with a manifest for explaining misses.

    ``manifest`` maps a dependency label (e.g. "global `SCALE`", "function `helper`")
    to ``[digest_hex, short_repr]``; the repr is empty unless the value is small.
    ``reached`` (cells only) names the globals that the inputs' code reads, directly or
    through helpers: a cell calling ``log(x)`` can change ``LOG`` without naming it.
    ``paths`` are the ``pathlib`` paths reached by name: a file one names is counted by
    its content at each call, as C readers given it are invisible to the ``open`` hook.
    """

    digest: bytes
    manifest: dict[str, list[str]]
    reached: frozenset[str] = frozenset()
    paths: tuple[str, ...] = ()


class Tracker:
    """The current fingerprint of one function, re-walked only when its guards fail.

    Owned by whoever needs repeated fingerprints (the decorator's wrapper), so a
    snapshot of old globals lives no longer than the wrapper itself.
    """

    __slots__ = ("_target", "_state")

    def __init__(self, target: Callable[..., Any]) -> None:
        self._target = target
        # (fingerprint, guards), replaced as one object so other threads never see a mix
        self._state: tuple[Fingerprint, Guards] | None = None

    def current(self) -> Fingerprint:
        """Fingerprint now; a few identity checks when nothing changed."""
        # NB. A re-hashed guarded value can meet the very function being fingerprinted
        # (a function stored in a list it reads): the re-entrant call gets a stable
        # cycle token. Inline rather than a context manager: this runs on every call.
        busy = _busy()
        marker = id(self._target)
        if marker in busy:
            return Fingerprint(cycle_token(self._target), {})
        busy.add(marker)
        try:
            state = self._state
            if state is not None and state[1].hold():
                return state[0]
            fingerprint, guards = _walk_root(self._target)
            self._state = (fingerprint, guards)
            return fingerprint
        finally:
            busy.discard(marker)


def _walk_root(target: object) -> tuple[Fingerprint, Guards]:
    walk = Walk(getattr(target, "__module__", None), hash_content)
    label = f"{kind_of(target)} `{display_name(target)}`"
    digest = walk.dependency(target, label)
    walk.manifest.pop(label, None)
    if isinstance(target, types.FunctionType):
        own_code = summarize_code(target.__code__).digest.hex()
        walk.manifest[f"code of `{display_name(target)}`"] = [own_code, ""]
    paths = tuple(walk.paths)
    return Fingerprint(digest, walk.manifest, paths=paths), walk.guards.freeze()


_ENTERED = threading.local()


def _busy() -> set[int]:
    """Ids of the objects being fingerprinted on this thread."""
    try:
        return _ENTERED.ids  # type: ignore[no-any-return]
    except AttributeError:
        _ENTERED.ids = set()
        return _ENTERED.ids  # type: ignore[no-any-return]


_RECENT_LIMIT = 128
_recent_trackers: collections.OrderedDict[int, Tracker] = collections.OrderedDict()
_recent_lock = threading.Lock()


def _recent_tracker(target: Callable[..., Any]) -> Tracker:
    """A tracker for a function or class met as a value, from a small LRU.

    Methods hash ``self`` through its class on every call, so class fingerprints must not
    be re-walked each time. The LRU is bounded because a tracker pins the objects its
    guards watch (a notebook's old frames, after the user rebinds them); keyed by id,
    which cannot be reused while the tracker holds its target.
    """
    with _recent_lock:
        tracker = _recent_trackers.get(id(target))
        if tracker is None:
            tracker = _recent_trackers[id(target)] = Tracker(target)
            if len(_recent_trackers) > _RECENT_LIMIT:
                _recent_trackers.popitem(last=False)
        else:
            _recent_trackers.move_to_end(id(target))
    return tracker


def code_hasher(obj: object) -> bytes:
    """Digest of a function/class/module/code object met as a *value* (e.g. an argument).

    Passed to ``hashing.hash_value``.
    """
    if isinstance(obj, types.CodeType):
        return summarize_code(obj).digest
    if isinstance(obj, types.FunctionType | type):
        return _recent_tracker(obj).current().digest
    busy = _busy()
    if id(obj) in busy:
        return cycle_token(obj)
    busy.add(id(obj))
    try:
        return _walk_root(obj)[0].digest
    finally:
        busy.discard(id(obj))


def hash_content(obj: object) -> bytes:
    """A value's digest with the functions and classes inside it counted by fingerprint.

    The one way the package hashes arguments, cell inputs and guarded globals.
    """
    return hash_value(obj, code_hasher=code_hasher)


def remember_stored(values: Iterable[object]) -> None:
    """Let values just stored key as the copies a hit will restore (see ``stand_ins``).

    Called right after a store by the decorator (its result) and the cell magic (each
    value the cell binds). Never raises.
    """
    remember(values, hash_content)


def fingerprint_names(
    namespace: Mapping[str, Any], names: Iterable[str], code: types.CodeType | None = None
) -> Fingerprint:
    """Fingerprint of the objects some names resolve to (a ``%%funcache`` cell's inputs).

    Functions and classes count by code (recursively), modules by name/version or, when
    local, by what they define; everything else by content. Absent names count as absent,
    so defining one later changes the fingerprint. Given the cell's ``code``, local
    modules it uses as ``mod.attr`` count by those attributes only, and modules it
    imports itself count too (live if loaded, else by their source files).
    """
    walk = Walk("__main__", rehash=None)  # keyed once per run: no guards to check later
    summary = summarize_code(code) if code is not None else None
    inputs = tuple(sorted(set(names)))
    if summary is None:
        summary = CodeSummary(b"", inputs, (), frozenset(inputs), ())
    else:
        summary = dataclasses.replace(summary, global_names=inputs)
    digest = walk.names(namespace, summary, "__main__")
    reached = frozenset(walk.guards.names_read(namespace))
    return Fingerprint(digest, walk.manifest, reached, tuple(walk.paths))
