"""What a ``%%funcache`` cell reads and binds, decided from its code alone.

A cell is keyed on its normalized code plus the fingerprint of every name it *reads*
before binding it (its inputs), so the analysis must never miss an input: a missed one
would serve stale results, while an extra one costs at most a needless miss. It also
says what a run leaves behind (every name the cell may bind) and what a hit must re-run.

Functions and classes the cell defines cannot be pickled by value (pickle stores
``__main__.f`` by reference, which is gone after a kernel restart), so a hit re-runs the
cell's top-level ``import``/``def``/``class`` statements instead. Those read only the
cell's inputs (the key guarantees they are unchanged) or earlier definitions; a
definition that reads a value the cell computes (``def f(m=model)``) could not be re-run
faithfully, and is reported as *entangled*.

IPython's input and AST transformations are applied by the caller
(:mod:`funcache_ipy.magics`); this module never imports IPython.
"""

from __future__ import annotations

import ast
import contextlib
import io
import keyword
import re
import symtable
import tokenize
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from funcache_ipy.hashing import hash_value

__all__ = ["CellAnalysis", "analyze_cell"]

_NAMED_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_DEFINITIONS = (ast.Import, ast.ImportFrom, *_NAMED_DEFINITIONS)
_MAGIC_CALLS = frozenset({"run_line_magic", "run_cell_magic"})  # first argument: magic name
_SHELL_CALLS = _MAGIC_CALLS | {"system", "getoutput"}
_SCOPES = (
    *_NAMED_DEFINITIONS,
    ast.Lambda,
    ast.ListComp,
    ast.SetComp,
    ast.DictComp,
    ast.GeneratorExp,
)


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


# The analyses of recently run cells by their code: a re-run of the same text (every hit)
# would otherwise parse, walk and dump its tree again (~1.5 ms for a 10-line cell).
_RECENT: dict[str, CellAnalysis] = {}
_RECENT_LIMIT = 64


def analyze_cell(
    code: str,
    transform: Callable[[ast.Module], ast.Module] | None = None,
    filename: str = "<cell>",
) -> CellAnalysis:
    """Analyse a cell's transformed code: its inputs, what it binds, what a hit re-runs.

    The analysis depends on nothing but the code, so the same text gets the same
    analysis back (shared: callers never change its trees); not under AST
    transformers, which may depend on state of their own. ``filename`` only names
    where a ``SyntaxError`` is, and errors are never remembered.

    A name counts as an input when some read of it may happen before the cell binds it:
    a binding inside an ``if`` without ``else``, a loop body or a ``try`` body does not
    shield later reads, because that branch may not run and the value would then come
    from the namespace. A global that a function defined in the cell reads when called
    is an input unless the cell definitely binds it before anything could call that
    function: before the first statement after the definition that is more than a
    plain ``def``/``class``, an import or a literal assignment. Over-approximating costs
    at most a needless miss; missing an input would serve stale results.

    Args:
        code: the cell's Python source (after IPython's input transformations).
        transform: IPython's AST transformers, if any are registered.
        filename: where a ``SyntaxError`` says the code is.

    Raises:
        SyntaxError: the code does not parse (shown to the user as the cell's error).
    """
    __tracebackhide__ = True
    if transform is not None:
        return _analyze(code, transform, filename)
    known = _RECENT.get(code)
    if known is None:
        known = _analyze(code, None, filename)
        if len(_RECENT) >= _RECENT_LIMIT:
            del _RECENT[next(iter(_RECENT))]
        _RECENT[code] = known
    return known


def _analyze(
    code: str, transform: Callable[[ast.Module], ast.Module] | None, filename: str
) -> CellAnalysis:
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
    bound_before: list[frozenset[str]] = []  # per statement: definitely bound before it runs
    for statement in tree.body:
        bound_before.append(frozenset(flow.bound))
        reads, binds = flow.statement(statement)
        lambda_name = _lambda_definition(statement)
        if not isinstance(statement, _DEFINITIONS) and lambda_name is None:
            computed |= binds
            continue
        definitions.append(statement)
        defined |= binds
        if reads and isinstance(statement, _NAMED_DEFINITIONS):  # imports read nothing
            definition_reads[statement.name] = reads
        elif reads and lambda_name is not None:  # its defaults
            definition_reads[lambda_name] = reads
    bound_before.append(frozenset(flow.bound))
    inputs = dict(flow.inputs)
    global_writes: set[str] = set()
    for statement, first_call in zip(tree.body, _first_calls(tree.body), strict=True):
        deferred_reads, writes = _function_globals(statement)
        global_writes |= writes
        inputs.update(dict.fromkeys(sorted(deferred_reads - bound_before[first_call])))
    computed |= global_writes
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

    def branches(
        self, first: Sequence[ast.AST], second: Sequence[ast.AST], *, must_run: bool
    ) -> None:
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


def _first_calls(body: Sequence[ast.stmt]) -> list[int]:
    """For each statement, the index of the first one from it on that may call a
    function (``len(body)`` if none does)."""
    firsts = []
    first = len(body)
    for index in reversed(range(len(body))):
        if not _calls_nothing(body[index]):
            first = index
        firsts.append(first)
    return firsts[::-1]


def _calls_nothing(statement: ast.stmt) -> bool:
    """Whether running this top-level statement cannot call a function of the cell.

    Only such statements may separate a definition from a binding its body reads
    (``def main(): return helper()`` before ``def helper(): ...``) without that read
    counting as an input: plain ``def``/``class`` statements, imports, docstrings and
    literal assignments. Anything with a decorator or a call may run the function.
    NB. Imports run a module's code, which cannot name the cell's functions.
    """
    if isinstance(statement, ast.Import | ast.ImportFrom | ast.Pass):
        return True
    if isinstance(statement, ast.Expr):
        return isinstance(statement.value, ast.Constant)
    if isinstance(statement, ast.Assign):
        targets_are_names = all(isinstance(t, ast.Name) for t in statement.targets)
        return targets_are_names and _is_inert(statement.value)
    if isinstance(statement, ast.AnnAssign):
        value = statement.value
        return (
            isinstance(statement.target, ast.Name)
            and _is_inert(statement.annotation, annotation=True)
            and (value is None or _is_inert(value))
        )
    if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
        args = statement.args
        annotations = [a.annotation for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]]
        annotations += [a.annotation for a in (args.vararg, args.kwarg) if a is not None]
        annotations.append(statement.returns)
        return (
            not statement.decorator_list
            and all(_is_inert(d) for d in [*args.defaults, *filter(None, args.kw_defaults)])
            and all(_is_inert(a, annotation=True) for a in filter(None, annotations))
        )
    if isinstance(statement, ast.ClassDef):
        return (
            not statement.decorator_list
            and not statement.keywords
            and all(_is_inert(base, annotation=True) for base in statement.bases)
            and all(_calls_nothing(child) for child in statement.body)
        )
    return False


_LITERAL_NODES = (ast.Constant, ast.Name, ast.Tuple, ast.List, ast.Set, ast.Dict, ast.expr_context)
_ANNOTATION_NODES = (*_LITERAL_NODES, ast.Attribute, ast.Subscript, ast.BinOp, ast.BitOr)


def _is_inert(node: ast.expr, *, annotation: bool = False) -> bool:
    """Whether evaluating ``node`` runs no user code: literals (``-1`` too) and names,
    and in annotations and bases also ``mod.Type``, ``list[int]`` and ``A | None``.

    NB. Those annotation forms may reach a ``__class_getitem__`` or a metaclass; that
    such code calls a function of the cell is not worth the needless misses.
    """
    allowed = _ANNOTATION_NODES if annotation else _LITERAL_NODES
    for child in ast.walk(node):
        if isinstance(child, ast.UnaryOp):
            if not isinstance(child.operand, ast.Constant):
                return False
        elif isinstance(child, ast.Dict):
            if None in child.keys:  # {**other} calls other.keys()
                return False
        elif not isinstance(child, (*allowed, ast.unaryop)):
            return False
    return True


def _lambda_definition(statement: ast.stmt) -> str | None:
    """The name ``square = lambda x: x * x`` defines, or None for other statements.

    A lambda bound to a name is a function definition written as an expression: like a
    ``def`` it is re-run on a hit rather than pickled (pickle cannot store lambdas).
    """
    if (
        isinstance(statement, ast.Assign)
        and len(statement.targets) == 1
        and isinstance(statement.targets[0], ast.Name)
        and isinstance(statement.value, ast.Lambda)
    ):
        return statement.targets[0].id
    return None


def _function_globals(statement: ast.stmt) -> tuple[set[str], set[str]]:
    """Globals that function bodies (and lambdas, nested classes...) in a top-level
    statement read, and assign.

    The symbol table resolves Python's scoping rules (closures, ``global``, class
    scopes) exactly. A top-level statement alone has the same scopes as in the cell,
    since what encloses it is the module either way.
    """
    reads: set[str] = set()
    writes: set[str] = set()
    if not any(isinstance(n, _SCOPES) for n in ast.walk(statement)):
        return reads, writes
    tables = list(symtable.symtable(ast.unparse(statement), "<cell>", "exec").get_children())
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
