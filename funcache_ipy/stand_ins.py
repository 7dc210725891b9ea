"""Stand-ins: a value the cache stored keys as the copy a hit will hand back.

A hit serves an unpickled copy *as* the value the run produced, so every key computed
later from the copy (the next cell reading it, another cached function taking it) must
be the key the run's own value got; otherwise each *Restart & Run All* recomputes
everything downstream of the first hit once more.

The hash covers what pickling keeps (``__reduce_ex__``: ``__getstate__``, ``__dict__``,
slots), so for most values that holds by construction. It fails where a class restores
its state with its own ``__setstate__``: what the copy ends up with is up to that code.
scikit-learn's ``Bunch`` ignores its state, so its copy lacks the attribute its
``__init__`` set. So, when a value is stored, :func:`remember` makes the copy a hit would
give and, if the two hash apart, records *value -> (its digest, the copy's digest)*.
While the value's digest is still the recorded one, :func:`stand_in` gives the copy's
digest instead; change the value and it keys as itself again. A restored copy needs no
record: its own digest is the copy's.

Only the *top level* of what is keyed is stood in for: one name a cell reads, one
argument of a cached call, one global a cached function reads. Never a part of a value
inside the hash stream: a digest computed apart from the stream around it would make
hashing a graph of such objects exponential (a matplotlib figure never finished).

NB. Objects whose classes drop state on unpickling key by what survives, once stored:
two stored values that differ only in what their ``__setstate__`` drops key alike. A hit
already treats them so (it serves the copy for the value); for ``Bunch`` what is dropped
is a table of deprecation warnings.
"""

from __future__ import annotations

import pickle
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from funcache_ipy.envelope import Discard, out_of_band

__all__ = ["remember", "stand_in"]

# id(stored value) -> (weak reference to it, its digest when stored, its copy's digest)
_RECORDS: dict[int, tuple[weakref.ref[Any], bytes, bytes]] = {}

# Their classes' copies hash exactly as the originals (tests/test_roundtrip.py), and their
# arrays can be large: their inside is not even pickled by the probe.
_EXACT_PACKAGES = frozenset({"numpy", "pandas"})
# NB. Unpickling a pyplot figure registers it with pyplot as a new figure, which the
# inline backend would then show: values holding such objects are never copied.
_UNSAFE_PACKAGES = frozenset({"matplotlib"})


def stand_in(obj: object, digest: bytes) -> bytes:
    """The digest that keys ``obj``: its stored copy's, if unchanged since it was stored.

    Args:
        obj: one top-level input (a cell input, an argument, a global).
        digest: its own content digest, as computed now.
    """
    record = _RECORDS.get(id(obj))
    if record is not None and record[1] == digest and record[0]() is obj:
        return record[2]
    return digest


def remember(values: Iterable[object], digest_of: Callable[[object], bytes]) -> None:
    """Record, for each value just stored, the digest its copy will have after a hit.

    Called by the decorator and the cell magic right after a store. Most values are only
    probed: pickled into nothing, buffers out of band, stopping at the first object whose
    class restores its own state. Only such values are copied and hashed twice.

    Never raises: a value that cannot be probed, copied or hashed keys as itself.
    """
    for value in values:
        try:
            if not _restores_own_state(value):
                continue
            ref = weakref.ref(value, _forget(id(value)))
            own, copied = digest_of(value), digest_of(_copy(value))
        except Exception:  # NB. pickling and hashing run arbitrary user code
            continue
        if own == copied:
            _RECORDS.pop(id(value), None)
        else:
            _RECORDS[id(value)] = (ref, own, copied)


def _forget(key: int) -> Callable[[weakref.ref[Any]], None]:
    """A weakref callback dropping the record of ``key``, unless it was replaced."""

    def forget(ref: weakref.ref[Any]) -> None:
        record = _RECORDS.get(key)
        if record is not None and record[0] is ref:
            del _RECORDS[key]

    return forget


def _copy(value: object) -> object:
    """The copy a hit would give: pickled and unpickled, buffers shared read-only.

    NB. Read-only, so no ``__setstate__`` can write into the live value's arrays.
    """
    buffers: list[pickle.PickleBuffer] = []
    stream = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    return pickle.loads(stream, buffers=[memoryview(b).toreadonly() for b in buffers])


class _Found(Exception):
    """Stops a probe: the answer is known."""

    def __init__(self, restores: bool) -> None:
        super().__init__(restores)
        self.restores = restores


_ORDINARY, _EXACT, _OWN_STATE, _UNSAFE = range(4)
_VERDICTS: dict[type, int] = {}
_VERDICTS_LIMIT = 4096  # NB. holds classes: a notebook redefining one makes new ones
_LEFT_OUT = (tuple, ())  # what the probe pickles instead of an exact package's object


def _verdict(cls: type) -> int:
    if issubclass(cls, type):  # classes pickle by reference
        return _ORDINARY
    module = cls.__module__
    package = module.partition(".")[0] if isinstance(module, str) else ""
    if package in _UNSAFE_PACKAGES:
        return _UNSAFE
    if package in _EXACT_PACKAGES:
        return _EXACT
    return _OWN_STATE if getattr(cls, "__setstate__", None) is not None else _ORDINARY


class _Probe(pickle.Pickler):
    """Pickles into nothing, looking for an object whose class restores its own state.

    ``reducer_override`` sees every object of a non-builtin type (plain dicts, lists and
    strings go by at C speed), so the probe costs little beyond pickling itself.
    """

    def __init__(self) -> None:
        super().__init__(Discard(), protocol=5, buffer_callback=out_of_band)

    def reducer_override(self, obj: Any) -> Any:
        cls = type(obj)
        verdict = _VERDICTS.get(cls)
        if verdict is None:
            if len(_VERDICTS) >= _VERDICTS_LIMIT:
                _VERDICTS.clear()
            verdict = _VERDICTS[cls] = _verdict(cls)
        if verdict == _EXACT:
            # Object arrays and series hold arbitrary objects: look at those.
            holds_objects = getattr(getattr(obj, "dtype", None), "hasobject", False)
            return NotImplemented if holds_objects else _LEFT_OUT
        if verdict != _ORDINARY:
            raise _Found(verdict == _OWN_STATE)
        return NotImplemented


def _restores_own_state(value: object) -> bool:
    """Whether unpickling ``value`` would run some class's own ``__setstate__``."""
    try:
        _Probe().dump(value)
    except _Found as found:
        return found.restores
    return False
