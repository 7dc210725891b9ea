"""``%%funcache`` without IPython: analyse a cell, run it with its output captured, restore it.

A cell is keyed on its normalized code plus the fingerprint of every name it *reads*
before binding it (its inputs). A miss runs the cell with its output shown live *and*
recorded; one store entry then holds every name the cell binds, the inputs it mutated in
place, what it printed and displayed, and its last value. A hit puts all of that back.

Functions and classes the cell defines cannot be pickled by value (pickle stores
``__main__.f`` by reference, which is gone after a kernel restart), so a hit re-runs the
cell's top-level ``import``/``def``/``class`` statements instead, *before* unpickling the
rest, so stored instances of a cell's classes find them. Those statements are cheap and
read only the cell's inputs (the key guarantees they are unchanged) or earlier
definitions; a definition that reads a value the cell computes (``def f(m=model)``) could
not be re-run faithfully, so such a cell is not cached and the message says why.

The IPython side (transforming ``%magics``, the compiler that keeps tracebacks readable,
the display publisher) is handed in by :mod:`funcache_ipy.magics`; this module never
imports IPython.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import io
import keyword
import pickle
import re
import symtable
import sys
import time
import tokenize
import types
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from funcache_ipy.decorator import is_enabled
from funcache_ipy.fingerprint import code_hasher, fingerprint_names
from funcache_ipy.hashing import UnhashableError, hash_value, is_immutable
from funcache_ipy.keys import Explanation, cell_key, explain_manifests
from funcache_ipy.store import MISSING, EntryMeta, FuncacheWarning, Store

__all__ = [
    "CellAnalysis",
    "CellCache",
    "DisplayOutput",
    "OutputCapture",
    "StreamOutput",
    "analyze_cell",
    "is_cell_entry",
    "replay_outputs",
]

_NAMED_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_DEFINITIONS = (ast.Import, ast.ImportFrom, *_NAMED_DEFINITIONS)
_WIDGET_MIME = "application/vnd.jupyter.widget-view+json"  # live widget views cannot be replayed
_MAGIC_CALLS = frozenset({"run_line_magic", "run_cell_magic"})  # first argument: magic name
_SHELL_CALLS = _MAGIC_CALLS | {"system", "getoutput"}
_CODE_LABEL = "cell code"  # manifest label of the cell's own code
_NOTICE_NAMES = 6  # names listed in the hit notice before "+N more"

Compile = Callable[[ast.mod, str], types.CodeType]
"""``compile(tree, mode)`` -> code object; IPython's compiler, with the cell's filename."""


class DisplayPublisher(Protocol):
    """The part of IPython's display publisher that capture and replay use."""

    def publish(
        self, data: dict[str, Any], metadata: dict[str, Any] | None = None, **kwargs: Any
    ) -> None: ...

    def clear_output(self, wait: bool = False) -> None: ...


# ------------------------------------------------------------------------------- analysis


@dataclass(frozen=True)
class CellAnalysis:
    """What a cell reads and binds, decided from its (IPython-transformed) code alone."""

    body: tuple[ast.stmt, ...]  # what runs as statements
    result: ast.expr | None  # a last expression statement, evaluated for its value
    normalized: str  # ast.dump: comments, blank lines and formatting do not count
    code_digest: str  # hex digest of ``normalized``
    default_name: str  # "cell:" + its first 8 hex digits
    inputs: tuple[str, ...]  # names read before the cell (definitely) binds them
    bound: tuple[str, ...]  # names the cell may bind, in source order
    definitions: tuple[ast.stmt, ...]  # top-level import/def/class, re-run on a hit
    replayed: frozenset[str]  # names only those definitions bind: never pickled
    entangled: Mapping[str, tuple[str, ...]]  # definition -> computed names it reads
    shows_result: bool  # there is a last expression and it does not end with ";"
    top_level_await: bool


def analyze_cell(
    code: str,
    transform: Callable[[ast.Module], ast.Module] | None = None,
    filename: str = "<cell>",
) -> CellAnalysis:
    """Analyse a cell's transformed code: its inputs, what it binds, what a hit re-runs.

    A name counts as an input when some read of it may happen before the cell binds it:
    a binding inside an ``if`` without ``else``, a loop body or a ``try`` body does not
    shield later reads, because that branch may not run and the value would then come
    from the namespace. Names that functions defined in the cell read when called count
    as inputs unless the cell definitely binds them. Over-approximating costs at most a
    needless miss; missing an input would serve stale results.

    Args:
        code: the cell's Python source (after IPython's input transformations).
        transform: IPython's AST transformers, if any are registered.
        filename: where a ``SyntaxError`` says the code is.

    Raises:
        SyntaxError: the code does not parse (shown to the user as the cell's error).
    """
    __tracebackhide__ = True
    tree = ast.parse(code, filename)
    if transform is not None:
        tree = transform(tree)
        code = ast.unparse(tree)
    flow = _Flow()
    definitions: list[ast.stmt] = []
    defined: set[str] = set()
    computed: set[str] = set()
    definition_reads: dict[str, set[str]] = {}  # def/class name -> names read to define it
    for statement in tree.body:
        reads, binds = flow.statement(statement)
        if not isinstance(statement, _DEFINITIONS):
            computed |= binds
            continue
        definitions.append(statement)
        defined |= binds
        if reads and isinstance(statement, _NAMED_DEFINITIONS):  # imports read nothing
            definition_reads[statement.name] = reads
    deferred_reads, global_writes = _function_globals(code)
    computed |= global_writes
    inputs = dict(flow.inputs)
    inputs.update(dict.fromkeys(sorted(deferred_reads - flow.bound)))
    entangled = {
        name: tuple(sorted(reads & computed))
        for name, reads in definition_reads.items()
        if reads & computed
    }
    normalized = ast.dump(tree)
    code_digest = hash_value(normalized).hex()
    last = tree.body[-1] if tree.body else None
    result = last.value if isinstance(last, ast.Expr) else None
    return CellAnalysis(
        body=tuple(tree.body[:-1] if result is not None else tree.body),
        result=result,
        normalized=normalized,
        code_digest=code_digest,
        default_name="cell:" + code_digest[:8],
        inputs=tuple(inputs),
        bound=tuple({**flow.maybe, **dict.fromkeys(sorted(global_writes))}),
        definitions=tuple(definitions),
        replayed=frozenset(defined - computed),
        entangled=entangled,
        shows_result=result is not None and not _ends_with_semicolon(code),
        top_level_await=flow.awaits,
    )


class _Flow(ast.NodeVisitor):
    """Walk module-level code in execution order, tracking which names are bound.

    Function and lambda bodies are skipped (they run when called: see
    :func:`_function_globals`); class bodies and comprehensions run on the spot, in
    scopes of their own, and are walked.
    """

    def __init__(self) -> None:
        self.bound: set[str] = set()  # definitely bound at this point of the cell
        self.maybe: dict[str, None] = {}  # bound on some path, in source order
        self.inputs: dict[str, None] = {}
        self.awaits = False
        self._scopes: list[tuple[set[str], bool]] = []  # (names, is_class) of inner scopes
        self._conditional = 0  # > 0 where an expression part may not run (walrus)
        self._reads: set[str] = set()
        self._binds: set[str] = set()

    def statement(self, node: ast.stmt) -> tuple[set[str], set[str]]:
        """Walk one top-level statement; return the module names it reads and binds."""
        self._reads, self._binds = set(), set()
        self.visit(node)
        return self._reads, self._binds

    # -- names

    def read(self, name: str) -> None:
        for depth, (names, is_class) in enumerate(reversed(self._scopes)):
            if name in names and (depth == 0 or not is_class):  # NB. class scope: own body only
                return
        self._reads.add(name)
        if name not in self.bound:
            self.inputs.setdefault(name, None)

    def bind(self, name: str, *, in_comprehension: bool = False) -> None:
        scopes = [s for s in self._scopes if not in_comprehension or s[1]]
        if scopes:
            scopes[-1][0].add(name)
            return
        self._binds.add(name)
        self.maybe.setdefault(name, None)
        if not self._conditional:
            self.bound.add(name)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store):
            self.bind(node.id)
            return
        self.read(node.id)  # Load, and Del: deleting needs the name to exist
        if isinstance(node.ctx, ast.Del):
            self.bound.discard(node.id)

    # -- statements, in evaluation order

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for target in node.targets:
            self.visit(target)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name):
            self.read(node.target.id)
        self.visit(node.value)
        self.visit(node.target)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.visit(node.annotation)
        if node.value is not None:
            self.visit(node.value)
            self.visit(node.target)
        elif not isinstance(node.target, ast.Name):
            self.visit(node.target)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self.branches([node.target, *node.body], node.orelse, must_run=False)

    def visit_AsyncFor(self, node: ast.AsyncFor) -> None:
        self.awaits = True
        self.visit_For(node)

    def visit_While(self, node: ast.While) -> None:
        self.visit(node.test)
        self.branches(node.body, node.orelse, must_run=False)

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        self.branches(node.body, node.orelse, must_run=True)

    def branches(self, first: list[ast.AST], second: list[ast.AST], *, must_run: bool) -> None:
        """Bound afterwards: what both branches bind, if one of them must run; else nothing."""
        before = set(self.bound)
        for node in first:
            self.visit(node)
        after_first, self.bound = self.bound, set(before)
        for node in second:
            self.visit(node)
        self.bound = (after_first & self.bound) if must_run else before

    def visit_Try(self, node: ast.Try) -> None:
        # A raising cell is never stored, so only paths that complete matter: the body
        # and else clause, or a handler entered from anywhere in the body.
        before = set(self.bound)
        for child in [*node.body, *node.orelse]:
            self.visit(child)
        outcomes = [self.bound]
        for handler in node.handlers:
            self.bound = set(before)
            if handler.type is not None:
                self.visit(handler.type)
            if handler.name:
                self.bind(handler.name)
            for child in handler.body:
                self.visit(child)
            outcomes.append(self.bound)
        self.bound = set.intersection(*outcomes)
        for child in node.finalbody:
            self.visit(child)

    visit_TryStar = visit_Try

    def visit_With(self, node: ast.With | ast.AsyncWith) -> None:
        for item in node.items:
            self.visit(item.context_expr)
            if item.optional_vars is not None:
                self.visit(item.optional_vars)
        for child in node.body:
            self.visit(child)

    def visit_AsyncWith(self, node: ast.AsyncWith) -> None:
        self.awaits = True
        self.visit_With(node)

    def visit_Match(self, node: ast.Match) -> None:
        self.visit(node.subject)
        before = set(self.bound)
        outcomes = []
        for case in node.cases:
            self.bound = set(before)
            self.visit(case.pattern)
            if case.guard is not None:
                self.visit(case.guard)
            for child in case.body:
                self.visit(child)
            outcomes.append(self.bound)
        last = node.cases[-1]
        exhaustive = isinstance(last.pattern, ast.MatchAs) and last.pattern.pattern is None
        self.bound = set.intersection(*outcomes) if exhaustive and not last.guard else before

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.pattern is not None:
            self.visit(node.pattern)
        if node.name is not None:
            self.bind(node.name)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name is not None:
            self.bind(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        self.generic_visit(node)
        if node.rest is not None:
            self.bind(node.rest)

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name != "*":  # a star import binds names no one can see statically
                self.bind(alias.asname or alias.name.partition(".")[0])

    visit_ImportFrom = visit_Import

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for child in [*node.decorator_list, node.args, *([node.returns] if node.returns else [])]:
            self.visit(child)
        self.bind(node.name)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_arguments(self, node: ast.arguments) -> None:
        """Defaults and annotations are evaluated where the function is defined."""
        arguments = [*node.posonlyargs, *node.args, *node.kwonlyargs]
        arguments += [a for a in (node.vararg, node.kwarg) if a is not None]
        for child in [*node.defaults, *filter(None, node.kw_defaults)]:
            self.visit(child)
        for argument in arguments:
            if argument.annotation is not None:
                self.visit(argument.annotation)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.visit(node.args)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for child in [*node.decorator_list, *node.bases, *node.keywords]:
            self.visit(child)
        self._scopes.append((set(), True))
        for child in node.body:
            self.visit(child)
        self._scopes.pop()
        self.bind(node.name)

    # -- expressions whose parts may not run, or run in a scope of their own

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self.bind(node.target.id, in_comprehension=True)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        self.visit(node.values[0])
        with self.conditional():
            for value in node.values[1:]:
                self.visit(value)

    def visit_IfExp(self, node: ast.IfExp) -> None:
        self.visit(node.test)
        with self.conditional():
            self.visit(node.body)
            self.visit(node.orelse)

    def visit_comprehension_expression(
        self, node: ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp
    ) -> None:
        generators = node.generators
        self.visit(generators[0].iter)  # NB. evaluated in the enclosing scope
        self._scopes.append((set(), False))
        with self.conditional():
            for index, generator in enumerate(generators):
                self.awaits |= bool(generator.is_async)
                if index:
                    self.visit(generator.iter)
                self.visit(generator.target)
                for condition in generator.ifs:
                    self.visit(condition)
            parts = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
            for part in parts:
                self.visit(part)
        self._scopes.pop()

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = (
        visit_comprehension_expression
    )

    def visit_Call(self, node: ast.Call) -> None:
        """``%magic`` and ``!shell`` lines read names inside their argument strings.

        IPython turns them into ``get_ipython().run_line_magic("time", "y = f(x)")`` or
        ``.system("echo {x}")``. An argument that parses as Python is walked as code
        (``%time`` runs it here and now; other magics may not, so what they bind is only
        maybe bound); in any other argument every identifier counts as read.
        """
        self.generic_visit(node)
        func = node.func
        if not (
            isinstance(func, ast.Attribute)
            and func.attr in _SHELL_CALLS
            and isinstance(func.value, ast.Call)
            and isinstance(func.value.func, ast.Name)
            and func.value.func.id == "get_ipython"
        ):
            return
        texts = [a.value for a in node.args if isinstance(a, ast.Constant)]
        magic = texts.pop(0) if func.attr in _MAGIC_CALLS and texts else None
        for text in texts:
            if not isinstance(text, str):
                continue
            try:
                statements = ast.parse(text).body
            except SyntaxError:
                for name in _identifiers(text):
                    self.read(name)
                continue
            with contextlib.nullcontext() if magic == "time" else self.conditional():
                for statement in statements:
                    self.visit(statement)

    def visit_Await(self, node: ast.Await) -> None:
        self.awaits = True
        self.generic_visit(node)

    @contextlib.contextmanager
    def conditional(self) -> Iterator[None]:
        self._conditional += 1
        try:
            yield
        finally:
            self._conditional -= 1


def _function_globals(code: str) -> tuple[set[str], set[str]]:
    """Globals that function bodies (and lambdas, nested classes...) read, and assign.

    The symbol table resolves Python's scoping rules (closures, ``global``, class
    scopes) exactly; these reads happen whenever the functions are called, so their
    order relative to the cell's bindings is unknown.
    """
    reads: set[str] = set()
    writes: set[str] = set()
    tables = list(symtable.symtable(code, "<cell>", "exec").get_children())
    while tables:
        table = tables.pop()
        tables.extend(table.get_children())
        for symbol in table.get_symbols():
            if symbol.is_global():
                if symbol.is_referenced():
                    reads.add(symbol.get_name())
                if symbol.is_declared_global() and symbol.is_assigned():
                    writes.add(symbol.get_name())
    return reads, writes


def _identifiers(text: str) -> list[str]:
    """Identifier-like words of a magic's argument string (which need not be Python)."""
    return [w for w in re.findall(r"[^\W\d]\w*", text) if not keyword.iskeyword(w)]


def _ends_with_semicolon(code: str) -> bool:
    """Whether the last token is ";", which hides the last value (as IPython does)."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.ENDMARKER}
    skip |= {tokenize.INDENT, tokenize.DEDENT}
    last = None
    for token in tokenize.generate_tokens(io.StringIO(code).readline):
        if token.type not in skip:
            last = token
    return last is not None and last.type == tokenize.OP and last.string == ";"


# ------------------------------------------------------------------------ capture / replay


@dataclass(frozen=True)
class StreamOutput:
    """Text the cell wrote to ``sys.stdout`` or ``sys.stderr`` (consecutive writes joined)."""

    name: str
    text: str


@dataclass(frozen=True)
class DisplayOutput:
    """One ``display_data`` message, as handed to the display publisher."""

    data: dict[str, Any]
    metadata: dict[str, Any]
    transient: dict[str, Any] | None = None
    update: bool = False


Output = StreamOutput | DisplayOutput


class OutputCapture:
    """Record what a cell prints and displays while letting all of it through live.

    ``sys.stdout``/``sys.stderr`` are replaced by tees and the publisher's ``publish`` and
    ``clear_output`` are shadowed on the instance (the publisher stays the same object,
    so anything holding it keeps working). ``clear_output`` drops what was recorded
    before it, as a frontend would, so a progress display replays as its final state.
    Output written by subprocesses or C code straight to file descriptors is not seen.
    """

    def __init__(self, publisher: DisplayPublisher) -> None:
        self._publisher = publisher
        self._items: list[DisplayOutput | tuple[str, list[str]]] = []
        self._clear_pending = False
        self._passing_through = False  # the publisher itself is printing: not cell output
        self._saved: dict[str, object] = {}
        self._streams: tuple[TextIO, TextIO] | None = None

    @property
    def outputs(self) -> tuple[Output, ...]:
        """What was recorded so far, in order."""
        return tuple(
            StreamOutput(item[0], "".join(item[1])) if isinstance(item, tuple) else item
            for item in self._items
        )

    def __enter__(self) -> OutputCapture:
        publisher = self._publisher
        own = vars(publisher)
        self._saved = {name: own[name] for name in ("publish", "clear_output") if name in own}
        publish, clear_output = publisher.publish, publisher.clear_output

        def publish_and_record(
            data: dict[str, Any], metadata: Any = None, *a: Any, **kw: Any
        ) -> None:
            shown = {mime: value for mime, value in data.items() if mime != _WIDGET_MIME}
            if shown:
                transient, update = kw.get("transient"), bool(kw.get("update", False))
                self._record(DisplayOutput(shown, dict(metadata or {}), transient, update))
            with self._pass_through():
                publish(data, metadata, *a, **kw)

        def clear_and_record(wait: bool = False) -> None:
            if wait:
                self._clear_pending = True
            else:
                self._items.clear()
            with self._pass_through():
                clear_output(wait)

        publisher.publish = publish_and_record  # type: ignore[method-assign]
        publisher.clear_output = clear_and_record  # type: ignore[method-assign]
        self._streams = (sys.stdout, sys.stderr)
        sys.stdout = _Tee(sys.stdout, lambda text: self._text("stdout", text))  # type: ignore[assignment]
        sys.stderr = _Tee(sys.stderr, lambda text: self._text("stderr", text))  # type: ignore[assignment]
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._streams is not None:
            sys.stdout, sys.stderr = self._streams
        for name in ("publish", "clear_output"):
            if name in self._saved:
                setattr(self._publisher, name, self._saved[name])
            else:
                vars(self._publisher).pop(name, None)

    def _text(self, stream: str, text: str) -> None:
        if self._passing_through or not text:
            return
        self._record(None)
        last = self._items[-1] if self._items else None
        if isinstance(last, tuple) and last[0] == stream:
            last[1].append(text)
        else:
            self._items.append((stream, [text]))

    def _record(self, display: DisplayOutput | None) -> None:
        if self._clear_pending:
            self._items.clear()
            self._clear_pending = False
        if display is not None:
            self._items.append(display)

    @contextlib.contextmanager
    def _pass_through(self) -> Iterator[None]:
        self._passing_through = True
        try:
            yield
        finally:
            self._passing_through = False


class _Tee:
    """A text stream writing through to ``stream`` while recording what was written."""

    def __init__(self, stream: TextIO, record: Callable[[str], None]) -> None:
        self._stream = stream
        self._record = record

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        self._record(text)
        return written

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:  # flush, isatty, encoding, fileno...
        return getattr(self._stream, name)


def replay_outputs(outputs: Iterable[Output], publisher: DisplayPublisher) -> None:
    """Show recorded outputs again, in their original order."""
    for output in outputs:
        if isinstance(output, StreamOutput):
            (sys.stdout if output.name == "stdout" else sys.stderr).write(output.text)
            continue
        extra: dict[str, Any] = {}
        if output.transient:
            extra["transient"] = output.transient
        if output.update:
            extra["update"] = True
        publisher.publish(output.data, output.metadata, **extra)
    sys.stdout.flush()
    sys.stderr.flush()


def _flush_inline_figures() -> None:
    """Show pending inline matplotlib figures now, while the output is still captured.

    IPython shows them from a ``post_execute`` hook, after the magic has returned, which
    would leave them out of the stored output; afterwards that hook finds nothing to show.
    """
    backend = sys.modules.get("matplotlib_inline.backend_inline")
    if backend is not None:
        backend.flush_figures()


# ------------------------------------------------------------------------------ the cache


@dataclass(frozen=True)
class _ModuleRef:
    """A module bound by the cell outside a top-level import; restored by importing it."""

    name: str


@dataclass(frozen=True)
class _Entry:
    """What one cell run leaves behind; the value stored under the cell's key."""

    values: dict[str, object]  # modules as _ModuleRef
    removed: tuple[str, ...]  # names the cell deleted
    result: object  # the last expression's value (None when hidden by ";")
    outputs: tuple[Output, ...]
    seconds: float


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

    ``store`` is called at each use, so the cache directory follows the configuration.
    """

    store: Callable[[], Store]
    stats: dict[str, CellStats] = field(default_factory=dict)

    def run(
        self,
        analysis: CellAnalysis,
        *,
        name: str,
        namespace: dict[str, Any],
        compiler: Compile,
        publisher: DisplayPublisher,
        refresh: bool = False,
        quiet: bool = False,
        ignore: frozenset[str] = frozenset(),
    ) -> object:
        """Restore the cell from the cache, or run it and store what it did.

        Args:
            ignore: inputs left out of the key: the shell's own helpers
                (``get_ipython``), whose identity the shell guarantees.

        Returns:
            The cell's last value (``None`` if there is none), for ``Out[n]``.
        """
        __tracebackhide__ = True
        if not is_enabled():
            return _execute(analysis, namespace, compiler)
        stats = self.stats.setdefault(name, CellStats())
        try:
            inputs = fingerprint_names(namespace, set(analysis.inputs) - ignore)
        except UnhashableError as exc:
            stats.misses += 1
            stats.last_key, stats.last_note = None, f"an input cannot be hashed: {exc}"
            _warn(f"funcache: cell {name} ran uncached: {exc}", namespace)
            return _execute(analysis, namespace, compiler)
        key = cell_key(analysis.normalized, inputs.digest)
        try:
            store = self.store()
        except OSError as exc:
            _warn(f"funcache: cell {name} ran uncached: {exc}", namespace)
            return _execute(analysis, namespace, compiler)
        if not refresh:
            entry = self._restore(store, key, analysis, namespace, compiler)
            if entry is not None:
                stats.hits += 1
                stats.last_key, stats.last_manifest, stats.last_note = key, None, None
                _announce(entry, analysis, quiet)
                replay_outputs(entry.outputs, publisher)
                return entry.result
        stats.misses += 1
        manifest = {**inputs.manifest, _CODE_LABEL: [analysis.code_digest, ""]}
        stats.last_key, stats.last_manifest = key, manifest
        stats.last_note = "--refresh forced a run" if refresh else None
        watched = _mutable_inputs(namespace, analysis)
        before = {n: id(value) for n, value in namespace.items()}
        started = time.perf_counter()
        with OutputCapture(publisher) as capture:
            result = _execute(analysis, namespace, compiler)
            _flush_inline_figures()
        seconds = time.perf_counter() - started
        entry, problem = _collect(analysis, namespace, before, watched, result, capture, seconds)
        if problem is not None:
            stats.last_note = f"not stored: {problem}"
            _warn(f"funcache: cell {name} was not cached: {problem}", namespace)
        else:
            store.set(key, entry, EntryMeta(name, time.time(), seconds, 0, manifest))
        return result

    def explain_last(self, name: str) -> Explanation | None:
        """Why cell ``name``'s latest run missed (``None`` if it has not run this session)."""
        stats = self.stats.get(name)
        if stats is None or (stats.last_manifest is None and stats.last_note is None):
            return None if stats is None else Explanation(name, hit=True)
        if stats.last_note is not None:
            return Explanation(name, hit=False, reasons=(stats.last_note,))
        others = [m.manifest for k, m in self.store().entries(name) if k != stats.last_key]
        if not others and name.startswith("cell:"):
            reason = (
                "no earlier run of this code is stored (a cell's default name follows its "
                "code, so an edited cell starts afresh; name it with --name to compare edits)"
            )
            return Explanation(name, hit=False, reasons=(reason,))
        reasons = explain_manifests(stats.last_manifest or {}, others)
        return Explanation(name, hit=False, reasons=tuple(reasons))

    def _restore(
        self,
        store: Store,
        key: str,
        analysis: CellAnalysis,
        namespace: dict[str, Any],
        compiler: Compile,
    ) -> _Entry | None:
        """Put a stored run back into ``namespace``; ``None`` (a miss) if it cannot be."""
        if analysis.definitions:
            if store.meta(key) is None:
                return None
            try:
                exec(compiler(ast.Module(list(analysis.definitions), []), "exec"), namespace)
            except Exception:  # NB. e.g. an import that now fails: run the cell, show why
                return None
        entry = store.get(key)
        if not isinstance(entry, _Entry):
            return None
        try:
            values = {
                name: importlib.import_module(value.name)
                if isinstance(value, _ModuleRef)
                else value
                for name, value in entry.values.items()
            }
        except ImportError:
            return None
        namespace.update(values)
        for name in entry.removed:
            namespace.pop(name, None)
        return entry


def is_cell_entry(meta: EntryMeta) -> bool:
    """Whether a store entry was written by ``%%funcache`` (not by a cached function)."""
    return _CODE_LABEL in meta.manifest


def _execute(analysis: CellAnalysis, namespace: dict[str, Any], compiler: Compile) -> object:
    """Run the cell like IPython would; return the value of a last, visible expression."""
    __tracebackhide__ = True
    exec(compiler(ast.Module(list(analysis.body), []), "exec"), namespace)
    if analysis.result is None:
        return None
    value = eval(compiler(ast.Expression(analysis.result), "eval"), namespace)
    return value if analysis.shows_result else None


def _mutable_inputs(namespace: Mapping[str, Any], analysis: CellAnalysis) -> dict[str, bytes]:
    """Content digests of inputs the cell might change in place (``data.append(4)``)."""
    digests = {}
    bound = set(analysis.bound)
    for name in analysis.inputs:
        value = namespace.get(name, MISSING)
        if value is MISSING or name in bound or _is_code(value) or is_immutable(value):
            continue
        digests[name] = _content_digest(value)
    return digests


def _content_digest(value: object) -> bytes:
    try:
        return hash_value(value, code_hasher=code_hasher)
    except UnhashableError:
        return b""  # NB. compares unequal to any digest: counted as changed, so stored


def _is_code(value: object) -> bool:
    return isinstance(value, types.FunctionType | types.ModuleType | type)


def _is_closed_file(value: object) -> bool:
    """``with open(...) as f`` leaves ``f`` closed: nothing to restore, and unpicklable."""
    return isinstance(value, io.IOBase) and value.closed


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
    result: object,
    capture: OutputCapture,
    seconds: float,
) -> tuple[_Entry, None] | tuple[None, str]:
    """The entry to store after a run, or why the run cannot be stored.

    Outputs are the names the cell may bind, the names the run actually rebound (a star
    import, ``globals()[...]``, a line magic) and the inputs whose content changed.
    """
    if analysis.entangled:
        definition, names = next(iter(analysis.entangled.items()))
        return None, (
            f"`{definition}` is defined from {', '.join(f'`{n}`' for n in names)}, which the "
            "cell computes, so it cannot be re-created on a hit; define it in another cell"
        )
    changed = [n for n, v in namespace.items() if before.get(n) != id(v)]
    mutated = [
        n for n, d in watched.items() if n in namespace and _content_digest(namespace[n]) != d
    ]
    bound = frozenset(analysis.bound)
    names = dict.fromkeys([*analysis.bound, *changed, *mutated])
    values: dict[str, object] = {}
    for name in names:
        value = namespace.get(name, MISSING)
        if value is MISSING or name in analysis.replayed or _is_closed_file(value):
            continue
        if isinstance(value, types.ModuleType):
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
    entry = _Entry(values, removed, result, capture.outputs, seconds)
    problem = _unpicklable(entry)
    return (None, problem) if problem is not None else (entry, None)


def _unpicklable(entry: _Entry) -> str | None:
    """Why ``entry`` cannot be pickled, naming the variable; ``None`` if it can.

    NB. A dry run into a sink: numpy/pandas buffers go out-of-band, so they cost nothing.
    """
    if _pickles(entry):
        return None
    for name, value in entry.values.items():
        if not _pickles(value):
            return f"variable `{name}` (type {type(value).__name__}) cannot be pickled"
    if not _pickles(entry.result):
        return f"the cell's value (type {type(entry.result).__name__}) cannot be pickled"
    return "its displayed output cannot be pickled"


def _pickles(value: object) -> bool:
    try:
        pickle.Pickler(_Sink(), protocol=5, buffer_callback=_leave_out_of_band).dump(value)
    except Exception:  # NB. pickling runs arbitrary __reduce__ code
        return False
    return True


class _Sink:
    """A file that forgets what is written to it."""

    def write(self, data: bytes) -> int:
        return len(data)


def _leave_out_of_band(buffer: pickle.PickleBuffer) -> bool:
    return False  # NB. false means out-of-band: the buffer is never copied


def _announce(entry: _Entry, analysis: CellAnalysis, quiet: bool) -> None:
    """The one line a hit prints, unless quiet."""
    if quiet:
        return
    names = [n for n in analysis.bound if n in analysis.replayed or n in entry.values]
    names += [n for n in entry.values if n not in names]
    shown = ", ".join(names[:_NOTICE_NAMES])
    if len(names) > _NOTICE_NAMES:
        shown += f" (+{len(names) - _NOTICE_NAMES} more)"
    what = shown if names else "the cell's output"
    print(f"funcache: restored {what} from cache (original run {_format_seconds(entry.seconds)})")


def _format_seconds(seconds: float) -> str:
    if seconds < 0.001:
        return "<1 ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def _warn(message: str, namespace: Mapping[str, Any]) -> None:
    """Warn from the user's cell: the first frame running with ``namespace`` as globals."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_globals is not namespace:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, FuncacheWarning, stacklevel=level if frame is not None else 2)
