"""Process state a cell changes without binding a name, put back by a hit as a run left it.

A cell that seeds numpy (``np.random.seed(0)``), sets numpy or pandas display options,
edits ``matplotlib.rcParams``, ``os.environ``, ``sys.path``, the warning filters or the
working directory changes what later cells do, though it binds nothing. A hit that
skipped those effects would leave the cells after it, which do run, in a different world
than the run did: other random numbers, other output. So a run records how each piece of
state known here differs afterwards (:func:`snapshot`, :func:`changes`), and a hit applies
the same changes (:func:`apply`).

Only the state listed in ``_PROBES`` is known; other libraries' global settings are not
restored. numpy, pandas and matplotlib are looked up in ``sys.modules`` only: a cell
cannot have changed a library it never imported.

The global random generators are inputs as well as outputs: a cell that draws numbers
from them gets other numbers from another starting state. :func:`seeds_watched` and
:func:`random_inputs` tell which generators' starting state a run depended on (those it
drew from before seeding them, if at all), for a hit to compare (:func:`random_differs`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import pickle
import random
import sys
import types
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import xxhash

__all__ = [
    "Changes",
    "apply",
    "changes",
    "fits",
    "generator_function",
    "random_differs",
    "random_inputs",
    "random_states",
    "seeds_watched",
    "snapshot",
    "undo",
]

Changes = dict[str, Any]
"""What a run changed: probe label -> the change (a new value, or a mapping/list delta)."""

_ABSENT = object()


@dataclass(frozen=True)
class _Probe:
    """One piece of process state: how to read it, and how to tell and apply a change.

    ``library`` names the module a probe belongs to: its state is applied only once the
    cell's own imports have run again (and imports the library if they did not).
    """

    label: str
    read: Callable[[], Any]  # a copy of the state now, or _ABSENT when not in use
    delta: Callable[[Any, Any], Any]  # (before, after) -> change, or None when equal
    apply: Callable[[Any], None]
    library: str | None = None
    # The state a library starts in, to compare with when the cell itself imported it
    # (else every option would count as set, and setting them can import more modules).
    initial: Callable[[], Any] | None = None


def snapshot() -> dict[str, Any]:
    """Each known piece of process state as it is now (copies: no hashing, cheap)."""
    states = {}
    for probe in _PROBES:
        try:
            state = probe.read()
        except Exception:  # NB. a library's own getters may fail in odd states; skip them
            continue
        if state is not _ABSENT:
            states[probe.label] = state
    return states


def changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> Changes:
    """How the state in ``after`` differs from ``before``: what a hit must redo."""
    found: Changes = {}
    for probe in _PROBES:
        if probe.label not in after:
            continue
        old = before.get(probe.label, _ABSENT)
        if old is _ABSENT and probe.initial is not None:
            old = probe.initial()
        change = probe.delta(old, after[probe.label])
        if change is not None:
            found[probe.label] = change
    return found


def fits(recorded: Changes) -> bool:
    """Whether ``recorded`` can be applied here (a working directory that still exists)."""
    cwd = recorded.get("working directory")
    return cwd is None or os.path.isdir(cwd)


def apply(recorded: Changes, *, libraries: bool) -> None:
    """Make the process state what a run left it: apply each recorded change.

    Args:
        recorded: from :func:`changes`.
        libraries: apply the libraries' state (numpy, pandas, matplotlib), else the
            interpreter's (``sys.path``, cwd, environment, seeds of ``random``,
            warning filters), which the cell's imports may need first.
    """
    for probe in _PROBES:
        if probe.label in recorded and (probe.library is not None) == libraries:
            if probe.library is not None:
                importlib.import_module(probe.library)  # the run had imported it
            probe.apply(recorded[probe.label])


def undo(saved: Mapping[str, Any]) -> None:
    """Put the state back as :func:`snapshot` saw it (a hit that failed half-way)."""
    back = changes(snapshot(), saved)
    apply(back, libraries=False)
    apply(back, libraries=True)


# -- the global random generators as inputs

_RANDOM_MODULE = "random module state"
_NUMPY_RANDOM = "numpy global random state"
_RANDOM_LABELS = (_RANDOM_MODULE, _NUMPY_RANDOM)


def random_states() -> dict[str, Any]:
    """The global random generators' states now (a hit compares them before restoring)."""
    states = {_RANDOM_MODULE: random.getstate()}
    numpy_state = _numpy_random_state()
    if numpy_state is not _ABSENT:
        states[_NUMPY_RANDOM] = numpy_state
    return states


@contextlib.contextmanager
def seeds_watched(
    before: Mapping[str, Any], namespace: dict[str, Any]
) -> Iterator[dict[str, bool]]:
    """While a cell runs, note which generators it seeded, and whether before drawing.

    ``random.seed`` and ``numpy.random.seed`` are wrapped for the run: at its first seed
    call, a generator still in the state ``before`` saw has given out nothing yet, so the
    run's numbers follow from the seed alone. Yields, per generator seeded, whether its
    first seed came before any draw.

    Reading or setting a generator's state before seeding it (``getstate``/``setstate``,
    ``get_state``/``set_state``) counts as a draw: the state read *is* the starting
    state, and ``s = get_state()``, draws, ``set_state(s)`` leaves the generator as it
    began although its numbers followed from where it started.

    NB. Only calls through the modules are seen (``np.random.seed``). A name bound to
    one of these functions before the run (``from random import seed`` in an earlier
    cell) is a cell input, and keys with its generator's state (a method's ``__self__``):
    a needless miss at worst, never a stale hit. A name the cell binds to a wrapper
    (``from random import seed``) is bound to the original after.
    """
    first_seed: dict[str, bool] = {}
    owners: list[tuple[str, Any, Callable[[], Any], tuple[str, str]]] = [
        (_RANDOM_MODULE, random, random.getstate, ("getstate", "setstate"))
    ]
    numpy = _module("numpy")
    if numpy is not _ABSENT:
        owners.append(
            (_NUMPY_RANDOM, numpy.random, numpy.random.get_state, ("get_state", "set_state"))
        )
    wrapped: list[tuple[Any, str, Any, Any]] = []
    for label, owner, read, state_functions in owners:

        def seeded(_label: str = label, _read: Any = read) -> None:
            if _label not in first_seed:
                first_seed[_label] = _label in before and _same(_read(), before[_label])

        def read_or_set(_label: str = label) -> None:
            first_seed.setdefault(_label, False)

        for name, note in [("seed", seeded), *((n, read_or_set) for n in state_functions)]:
            original = getattr(owner, name)

            @functools.wraps(original)
            def watched(*args: Any, _original: Any = original, _note: Any = note, **kw: Any) -> Any:
                _note()
                return _original(*args, **kw)

            setattr(owner, name, watched)
            wrapped.append((owner, name, original, watched))
    try:
        yield first_seed
    finally:
        for owner, name, original, watched in wrapped:
            setattr(owner, name, original)
            for bound, value in list(namespace.items()):
                if value is watched:
                    namespace[bound] = original


def random_inputs(
    before: Mapping[str, Any], after: Mapping[str, Any], first_seed: Mapping[str, bool]
) -> dict[str, str]:
    """The generators whose starting state a run's results follow from, with its digest.

    A generator counts unless the run seeded it before drawing (:func:`seeds_watched`):
    when the run seeded it after drawing or read or set its state first (either may
    leave it as it began), or changed it without seeding it (drew numbers).
    """
    inputs = {}
    for label in _RANDOM_LABELS:
        old = before.get(label, _ABSENT)
        seeded_first = first_seed.get(label)
        if seeded_first is False or (
            seeded_first is None and not _same(old, after.get(label, _ABSENT))
        ):
            inputs[label] = _state_digest(old)
    return inputs


def random_differs(inputs: Mapping[str, str], current: Mapping[str, Any]) -> str | None:
    """The first generator whose state now is not the one a run started from, or None."""
    for label, digest in inputs.items():
        if _state_digest(current.get(label, _ABSENT)) != digest:
            return label
    return None


def generator_function(obj: object) -> tuple[str, str] | None:
    """``(module, name)`` if ``obj`` is a function of a global generator's module.

    ``random.seed`` and ``np.random.rand`` are methods of the generator behind the
    module: pickled as such, a hit would bind a name to a method of a *copy* of it, and
    ``seed(0)`` after the hit would no longer seed the global generator.
    """
    if type(obj) not in (types.MethodType, types.BuiltinMethodType):
        return None
    owner, name = getattr(obj, "__self__", None), getattr(obj, "__name__", "")
    for module_name, generator in _global_generators():
        if owner is generator and getattr(sys.modules[module_name], name, None) is obj:
            return module_name, name
    return None


def _global_generators() -> list[tuple[str, Any]]:
    """The global generators by the module that exposes their methods."""
    generators = [("random", random._inst)]
    numpy = _module("numpy")
    if numpy is not _ABSENT:
        generators.append(("numpy.random", numpy.random.mtrand._rand))
    return generators


def _state_digest(value: Any) -> str:
    if value is _ABSENT:  # NB. numpy imported by the run itself: seeded afresh at import
        return "absent"
    return xxhash.xxh3_128_hexdigest(pickle.dumps(value, 5))


# -- comparing and applying


def _same(a: Any, b: Any) -> bool:
    """Equal as stored: pickles compare arrays, tuples of arrays and odd types alike."""
    if a is b:
        return True
    try:
        return pickle.dumps(a, 5) == pickle.dumps(b, 5)
    except Exception:  # unpicklable: the cell cannot be stored anyway; call it changed
        return False


def _whole(before: Any, after: Any) -> Any:
    return None if before is not _ABSENT and _same(before, after) else after


def _mapping_delta(before: Any, after: Mapping[str, Any]) -> Any:
    """``(set, deleted)`` between two mappings, or None when equal."""
    old: Mapping[str, Any] = {} if before is _ABSENT else before
    changed = {k: v for k, v in after.items() if k not in old or not _same(old[k], v)}
    deleted = tuple(k for k in old if k not in after)
    return (changed, deleted) if changed or deleted else None


def _list_delta(before: Any, after: list[Any]) -> Any:
    """``(added with positions, removed)`` between two lists, or None when equal."""
    old: list[Any] = [] if before is _ABSENT else before
    if _same(old, after):
        return None
    added = [(index, item) for index, item in enumerate(after) if item not in old]
    removed = [item for item in old if item not in after]
    return (added, removed)


def _apply_list(target: list[Any], change: Any) -> None:
    added, removed = change
    for item in removed:
        with contextlib.suppress(ValueError):
            target.remove(item)
    for index, item in added:
        if item not in target:
            target.insert(min(index, len(target)), item)


# -- the probes


def _module(name: str) -> Any:
    return sys.modules.get(name, _ABSENT)


def _numpy_random_state() -> Any:
    np = _module("numpy")
    return _ABSENT if np is _ABSENT else np.random.get_state()


def _numpy_print_options() -> Any:
    np = _module("numpy")
    return _ABSENT if np is _ABSENT else np.get_printoptions()


def _numpy_errors() -> Any:
    np = _module("numpy")
    return _ABSENT if np is _ABSENT else np.geterr()


def _pandas_options() -> Any:
    pd = _module("pandas")
    if pd is _ABSENT:
        return _ABSENT
    registered = pd._config.config._registered_options  # NB. no public listing exists
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated options warn when read
        return {key: pd.get_option(key) for key in registered}


def _pandas_defaults() -> Any:
    registered = sys.modules["pandas"]._config.config._registered_options
    return {key: option.defval for key, option in registered.items()}


def _set_pandas_options(change: Any) -> None:
    pd = sys.modules["pandas"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated options warn on every set
        for key, value in change[0].items():
            pd.set_option(key, value)


def _rc_params() -> Any:
    mpl = _module("matplotlib")
    if mpl is _ABSENT:
        return _ABSENT
    # NB. Read raw (dict.items): reading rcParams["backend"] through RcParams would
    # resolve, even switch, the backend. The backend itself is left to the figure code.
    return {k: v for k, v in dict.items(mpl.rcParams) if k != "backend"}


def _rc_params_at_import() -> Any:
    original = sys.modules["matplotlib"].rcParamsOrig  # defaults + matplotlibrc, at import
    return {k: v for k, v in dict.items(original) if k != "backend"}


def _set_rc_params(change: Any) -> None:
    rc = sys.modules["matplotlib"].rcParams
    for key, value in change[0].items():
        rc[key] = value


def _set_environment(change: Any) -> None:
    changed, deleted = change
    os.environ.update(changed)
    for key in deleted:
        os.environ.pop(key, None)


def _set_filters(change: Any) -> None:
    _apply_list(warnings.filters, change)  # type: ignore[arg-type]
    mutated = getattr(warnings, "_filters_mutated", None)
    if mutated is not None:  # NB. warn() caches decisions until told the filters changed
        mutated()


def _set_numpy(name: str) -> Callable[[Any], None]:
    def set_(value: Any) -> None:
        np = sys.modules["numpy"]
        if name == "random":
            np.random.set_state(value)
        elif name == "print":
            np.set_printoptions(**value)
        else:
            np.seterr(**value)

    return set_


_PROBES = (
    _Probe(_RANDOM_MODULE, random.getstate, _whole, random.setstate),
    _Probe(_NUMPY_RANDOM, _numpy_random_state, _whole, _set_numpy("random"), "numpy"),
    _Probe("numpy print options", _numpy_print_options, _whole, _set_numpy("print"), "numpy"),
    _Probe("numpy error handling", _numpy_errors, _whole, _set_numpy("errors"), "numpy"),
    _Probe(
        "pandas options",
        _pandas_options,
        _mapping_delta,
        _set_pandas_options,
        "pandas",
        _pandas_defaults,
    ),
    _Probe(
        "matplotlib rcParams",
        _rc_params,
        _mapping_delta,
        _set_rc_params,
        "matplotlib",
        _rc_params_at_import,
    ),
    _Probe("environment variables", lambda: dict(os.environ), _mapping_delta, _set_environment),
    _Probe("working directory", os.getcwd, _whole, os.chdir),
    _Probe("sys.path", lambda: list(sys.path), _list_delta, lambda c: _apply_list(sys.path, c)),
    _Probe("warning filters", lambda: list(warnings.filters), _list_delta, _set_filters),
)
