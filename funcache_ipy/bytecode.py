"""What a code object contributes to a fingerprint, read from its bytecode.

Line numbers, file names, comments and docstrings never reach a digest: bytecode is
read instruction by instruction with constants and names resolved to their values, so
an unused docstring constant is simply never seen. The same pass collects the globals,
attribute chains and imports the code reads, which the walk in ``walk.py`` resolves.
"""

from __future__ import annotations

import bisect
import dis
import types
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import xxhash

from funcache_ipy.hashing import hash_value

_LOADS_GLOBAL = frozenset({"LOAD_GLOBAL", "LOAD_NAME"})
_LOADS_ATTR = frozenset({"LOAD_ATTR", "LOAD_METHOD"})
# NB. CPython 3.11 compiles ``np.sum(x)`` to LOAD_ATTR when ``np`` is imported in the same
# compile unit and to LOAD_METHOD otherwise: one function, two bytecodes depending on
# which statements it was compiled with (a cell run whole, or a hit re-running only its
# definitions). Both call the same attribute, so they digest alike; and since the two
# take different room (inline caches), jumps and the exception table count in
# instructions, not bytes.
_SAME_AS = {"LOAD_METHOD": "LOAD_ATTR"}
_JUMPS = frozenset(dis.hasjrel) | frozenset(dis.hasjabs)


@dataclass(frozen=True)
class CodeSummary:
    """What one code object (with its nested code) contributes, independent of globals."""

    digest: bytes
    global_names: tuple[str, ...]  # loaded globals, in first-use order
    chains: tuple[tuple[str, ...], ...]  # attribute chains rooted at a global: ("np", "linalg")
    bare_names: frozenset[str]  # globals used other than as the root of a chain
    imports: tuple[tuple[str, int], ...]  # (module, level) the code imports, maybe submodules


_CODE_SUMMARIES: weakref.WeakKeyDictionary[types.CodeType, CodeSummary] = (
    weakref.WeakKeyDictionary()
)


def summarize_code(code: types.CodeType) -> CodeSummary:
    """Digest a code object's behaviour; memoized because code objects are immutable."""
    summary = _CODE_SUMMARIES.get(code)
    if summary is None:
        summary = _CODE_SUMMARIES[code] = _build_code_summary(code)
    return summary


def _build_code_summary(code: types.CodeType) -> CodeSummary:
    h = xxhash.xxh3_128()
    n_args = code.co_argcount + code.co_kwonlyargcount
    n_args += bool(code.co_flags & 0x04) + bool(code.co_flags & 0x08)  # *args, **kwargs
    header = (
        code.co_argcount,
        code.co_posonlyargcount,
        code.co_kwonlyargcount,
        code.co_flags,
        code.co_varnames[:n_args],
        code.co_freevars,
    )
    h.update(repr(header).encode())
    names: dict[str, None] = {}
    chains: list[tuple[str, ...]] = []
    bare: set[str] = set()
    imports: list[tuple[str, int]] = []
    current_chain: list[str] = []
    recent_constants: list[object] = [None, None]  # IMPORT_NAME pops (level, fromlist)

    def close_chain() -> None:
        if len(current_chain) > 1:
            chains.append(tuple(current_chain))
        elif current_chain:
            bare.add(current_chain[0])
        current_chain.clear()

    instructions = [ins for ins in dis.get_instructions(code) if ins.opname != "EXTENDED_ARG"]
    position = _positions(instructions)
    for ins in instructions:
        h.update(_SAME_AS.get(ins.opname, ins.opname).encode())
        if ins.opname in _LOADS_ATTR and current_chain:
            current_chain.append(ins.argval)
            h.update(ins.argval.encode())
            continue
        close_chain()
        arg = ins.argval
        if isinstance(arg, types.CodeType):
            nested = summarize_code(arg)
            h.update(nested.digest)
            names.update(dict.fromkeys(nested.global_names))
            chains.extend(nested.chains)
            bare.update(nested.bare_names)
            imports.extend(nested.imports)
        elif ins.opcode in _JUMPS:
            h.update(b"->%d" % position(arg))
        elif ins.opcode in dis.hasconst:
            h.update(hash_value(arg))
            recent_constants = [recent_constants[1], arg]
        else:
            h.update(repr(arg).encode())
        if ins.opname in _LOADS_GLOBAL:
            names[arg] = None
            current_chain.append(arg)
        elif ins.opname == "IMPORT_NAME":
            level, fromlist = recent_constants
            level = level if isinstance(level, int) else 0
            imports.append((arg, level))
            # ``from pkg import sub`` may load the submodule pkg.sub (or name an attribute)
            if isinstance(fromlist, tuple):
                base = f"{arg}." if arg else ""
                imports.extend((f"{base}{name}", level) for name in fromlist if name != "*")
    close_chain()
    h.update(repr(_exception_table(code, position)).encode())
    return CodeSummary(h.digest(), tuple(names), tuple(chains), frozenset(bare), tuple(imports))


def _positions(instructions: list[dis.Instruction]) -> Callable[[int], int]:
    """Byte offset -> index of the instruction there (or the next one, past an EXTENDED_ARG)."""
    starts = [ins.offset for ins in instructions]

    def position(offset: int) -> int:
        return bisect.bisect_left(starts, offset)

    return position


def _exception_table(code: types.CodeType, position: Callable[[int], int]) -> list[tuple[int, ...]]:
    """The exception table with offsets as instruction positions (3.11+; else empty)."""
    parse = getattr(dis, "_parse_exception_table", None)  # NB. private, but the only reader
    if parse is None or not hasattr(code, "co_exceptiontable"):
        return []
    return [
        (position(e.start), position(e.end), position(e.target), e.depth, int(e.lasti))
        for e in parse(code)
    ]
