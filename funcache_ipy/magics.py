"""IPython adapter: the ``%%funcache`` and ``%funcache`` magics, their options, load/unload.

The only module that imports IPython. It turns a cell into what :mod:`funcache_ipy.cell`
needs (the analysis of the transformed code, IPython's compiler so tracebacks show the
cell's lines, the display publisher, the user namespace) and renders ``%funcache info``;
the caching itself lives in ``cell`` and ``decorator``.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import html
import os
import re
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display
from traitlets import Bool, Bunch, Int, Unicode, observe

from funcache_ipy import decorator, file_sets, summary
from funcache_ipy.analysis import analyze_cell
from funcache_ipy.cell import CellCache, is_cell_entry
from funcache_ipy.remote import REMOTE_ENV, TRUST_ENV
from funcache_ipy.store import (
    DEFAULT_OUTPUT_LIMIT,
    DEFAULT_SIZE_LIMIT,
    ENV_VAR,
    Orphans,
    Store,
    open_store,
)

__all__ = ["FuncacheMagics", "load_ipython_extension", "unload_ipython_extension"]

_NAME = re.compile(r"[\w.:-]+")
_SHELL_HELPERS = ("get_ipython", "exit", "quit")  # the shell's own, never user data


@magics_class
class FuncacheMagics(Magics):
    """``%%funcache`` caches a cell; ``%funcache`` shows and controls the cache.

    Options are traitlets: ``%config FuncacheMagics.quiet = True`` in a notebook, or
    ``c.FuncacheMagics.directory = "..."`` in ``ipython_config.py``.
    """

    directory = Unicode(
        None,
        allow_none=True,
        help="Cache directory of %%funcache cells, %funcache info/clear, and "
        "@funcache_ipy.cache functions without a directory= of their own (it is exported "
        "as $FUNCACHE_IPY_DIR; None or unloading the extension puts that back). "
        "Default: $FUNCACHE_IPY_DIR, else ./.funcache, resolved when used.",
    ).tag(config=True)
    quiet = Bool(
        False,
        help="Do not print a notice when a cell is restored, nor the line after a cell that "
        "says which cached functions hit (and what that saved) or why one recomputed.",
    ).tag(config=True)
    size_limit = Int(
        DEFAULT_SIZE_LIMIT,
        help="Bytes the cache directory may hold before the oldest entries are evicted.",
    ).tag(config=True)

    output_limit = Int(
        DEFAULT_OUTPUT_LIMIT,
        help="Bytes up to which a file a cached cell or function writes is stored with its "
        "entry, so that a hit puts it back; a bigger one must be left as the run wrote it.",
    ).tag(config=True)

    remote = Unicode(
        None,
        allow_none=True,
        help="fsspec URL of a shared cache behind the local one (s3://bucket/prefix, "
        "gs://..., file:///mnt/shared/cache), exported as $FUNCACHE_IPY_REMOTE like "
        'directory. Needs: pip install "funcache_ipy[s3]".',
    ).tag(config=True)
    trust = Unicode(
        None,
        allow_none=True,
        help="Comma-separated public keys (python -m funcache_ipy key) whose shared entries "
        "are accepted besides your own; exported as $FUNCACHE_IPY_TRUST.",
    ).tag(config=True)

    # Environment variable -> its value before remote/trust set it (see _export_sharing).
    _shared_before: dict[str, str | None] | None = None
    # ($FUNCACHE_IPY_DIR before ``directory`` was exported, the value exported); None: not
    # exported. NB. A class default: the observer first runs while traitlets loads config.
    _exported: tuple[str | None, str] | None = None
    _loaded = False  # the configuration has been applied (``__init__`` is done)
    # Narrower than ``Magics`` (which allows None): this class is only made with a shell.
    shell: InteractiveShell

    def __init__(self, shell: InteractiveShell) -> None:
        super().__init__(shell)
        self.cells = CellCache(self.store)
        self._loaded = True
        if (self.size_limit, self.output_limit) != (DEFAULT_SIZE_LIMIT, DEFAULT_OUTPUT_LIMIT):
            self._limit_store()

    def store(self) -> Store:
        """The configured store, with this limit (shared with ``@cache`` functions using it)."""
        store = open_store(self.directory, self.remote)
        store.size_limit = self.size_limit
        store.output_limit = self.output_limit
        return store

    @observe("directory")
    def _export_directory(self, change: Bunch) -> None:
        """Set ``$FUNCACHE_IPY_DIR`` to ``directory``, so ``@cache`` functions follow it too.

        The environment is the one setting both share: a decorated function resolves its
        store with ``open_store(None)`` at each call and knows nothing of the magics. Runs
        at load time too, when traitlets applies a profile's ``c.FuncacheMagics.directory``.
        """
        if change["new"] is None:
            self.restore_environment()
            self._limit_store()
            return
        before = self._exported[0] if self._exported else os.environ.get(ENV_VAR)
        os.environ[ENV_VAR] = change["new"]
        self._exported = (before, change["new"])
        self._limit_store()

    @observe("remote", "trust")
    def _export_sharing(self, change: Bunch) -> None:
        """Export ``remote``/``trust`` like ``directory``: ``@cache`` functions read them."""
        variable = REMOTE_ENV if change["name"] == "remote" else TRUST_ENV
        if self._shared_before is None:
            self._shared_before = {}
        before = self._shared_before.setdefault(variable, os.environ.get(variable))
        value = change["new"] if change["new"] is not None else before
        if value is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = value

    @observe("size_limit", "output_limit")
    def _limit_changed(self, change: Bunch) -> None:
        self._limit_store()

    def _limit_store(self) -> None:
        """Give the store its limits now, so ``@cache`` functions obey them before any
        cell runs (they share the directory's one store, and never read this setting).

        NB. Not while the configuration loads: the directory may not be set yet, and
        opening the default store would create ``./.funcache`` for nothing.
        """
        if not self._loaded:
            return
        with contextlib.suppress(OSError):  # an unusable directory: said when it is used
            self.store()

    def report_calls(self, result: object = None) -> None:
        """After each cell: one line per cached function it called that hit, or that
        recomputed although entries of it are stored (see :mod:`funcache_ipy.summary`)."""
        tallies = decorator.take_tallies()
        if tallies and not self.quiet:
            for line in summary.lines(tallies):
                print(line)

    def restore_environment(self) -> None:
        """Put ``$FUNCACHE_IPY_DIR`` (and the remote's variables) back as they were."""
        for variable, before in (self._shared_before or {}).items():
            if before is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = before
        self._shared_before = None
        if self._exported is None:
            return
        (before, exported), self._exported = self._exported, None
        if os.environ.get(ENV_VAR) != exported:
            return  # NB. set since (%env): the user's latest word wins
        if before is None:
            del os.environ[ENV_VAR]
        else:
            os.environ[ENV_VAR] = before

    @magic_arguments("%funcache")
    @argument("-r", "--refresh", action="store_true", help="run the cell and overwrite its entry")
    @argument("-q", "--quiet", action="store_true", help="no notice when the cell is restored")
    @argument(
        "--name",
        help='name for %%funcache info/clear/explain (default: "cell:" + 8 hex digits '
        "of the code's digest, so an edited cell gets a new name)",
    )
    @argument(
        "--files",
        nargs="+",
        action="extend",
        metavar="GLOB",
        help="files the cell reads behind Python's open (pyarrow, h5py, C code), hashed "
        "into the key before it runs: globs relative to the cwd, a directory by all its "
        'files; several per option or repeated (--files "data/*.parquet" cfg.yaml)',
    )
    @cell_magic("funcache")  # type: ignore[arg-type]  # IPython types it as a union
    def funcache_cell(self, line: str, cell: str) -> Any:
        """Cache a cell: a re-run with the same code and inputs restores its results.

        The key is the cell's code (comments and blank lines aside) plus the content
        of every variable, function and module the cell reads, and of the files it
        opens while it runs (stored by their contents, so a changed file runs the cell
        again and a reverted one hits its earlier run). On a hit, the names the
        cell binds and the inputs it changed in place (data.append(4)) are put
        back, its printed and displayed output is replayed, its last value is returned,
        and one line says so. On a miss the cell runs as usual while its output is
        recorded. A cell that raises is not stored; neither is one holding a value
        that cannot be pickled (a message names the variable).

        Imports, functions and classes of the cell are re-created on a hit by re-running
        its top-level import/def/class statements, so they work after a kernel restart.
        Not seen: files read without Python's open (declare them with --files) or
        by subprocesses, output of subprocesses and C code, names reached through eval
        or globals(). %funcache off makes cells just run.

        Example:

            %%funcache --name features
            df = load_csv(PATH)
            features = build_features(df, window=WINDOW)
            features.describe()
        """
        __tracebackhide__ = True
        args = parse_argstring(self.funcache_cell, line)
        if args.name is not None and not _NAME.fullmatch(args.name):
            raise UsageError(
                "%%funcache --name takes a word of letters, digits and _ . : - "
                f"(like features or load.v2), not {args.name}"
            )
        shell = self.shell
        code = shell.transform_cell(cell)
        filename = shell.compile.cache(code, _running_cell_number(shell), raw_code=cell)
        transform = shell.transform_ast if shell.ast_transformers else None
        analysis = analyze_cell(code, transform, filename)
        if analysis.top_level_await:
            raise UsageError(
                "%%funcache cannot run a cell with top-level await; "
                "put the code in an async function and run it with asyncio.run()"
            )

        def compile_tree(tree: ast.mod, mode: str) -> types.CodeType:
            # NB. typeshed says codeop.Compile takes source text; like compile(), it takes ASTs.
            return shell.compile(tree, filename, mode)  # type: ignore[arg-type]

        namespace = shell.user_ns
        hidden = shell.user_ns_hidden
        helpers = {n for n in _SHELL_HELPERS if n in hidden and namespace.get(n) is hidden[n]}
        return self.cells.run(
            analysis,
            name=args.name or analysis.default_name,
            namespace=namespace,
            compiler=compile_tree,
            publisher=shell.display_pub,
            after_result=functools.partial(_after_result, shell),
            refresh=args.refresh,
            quiet=args.quiet or self.quiet,
            ignore=frozenset(helpers),
            declared=[_unquoted(pattern) for pattern in args.files or ()],
        )

    @magic_arguments("funcache")
    @argument(
        "action",
        nargs="?",
        default="info",
        choices=["info", "clear", "off", "on", "explain"],
        help="what to do (default: info)",
    )
    @argument("name", nargs="?", help="a cached function or cell, for clear and explain")
    @argument(
        "--remote",
        action="store_true",
        help="with clear: also delete your own entries on the shared cache (others' entries "
        "are never touched; the bucket's lifecycle rules expire them)",
    )
    @line_magic("funcache")  # type: ignore[arg-type]  # IPython types it as a union
    def funcache_line(self, line: str) -> None:
        """Show and control the cache of @cache functions and %%funcache cells.

        %funcache info: cache directory, entries, size on disk (and orphan files
        left by interrupted writes); per function and cell, its entries, the files they
        depend on (a range when entries differ) and this session's hits and misses.
        %funcache clear [NAME]: delete every entry, or those of one function or cell,
        from the local cache; --remote also deletes those you signed on the shared cache.
        %funcache off / on: run cached functions and cells without / with the
        cache. %funcache explain NAME: why the last call of a function or run of a
        cell missed (what changed, old -> new).

        Functions are named module.qualname (load is enough when unique); cells
        by %%funcache --name NAME, else cell: + 8 hex digits of their code's
        digest (see %funcache info). Options: %config FuncacheMagics.
        """
        args = parse_argstring(self.funcache_line, line)
        if args.action in ("info", "off", "on") and args.name is not None:
            raise UsageError(f"%funcache {args.action} takes no name (got {args.name!r})")
        if args.remote and args.action != "clear":
            raise UsageError(f"--remote goes with %funcache clear, not {args.action}")
        if args.action == "info":
            display(self.report())
        elif args.action == "clear":
            self.clear(args.name, remote=args.remote)
        elif args.action in ("off", "on"):
            decorator.set_enabled(args.action == "on")
            state = "on" if decorator.is_enabled() else "off: functions and cells just run"
            print(f"funcache: caching is {state}")
        else:
            self.explain(args.name)

    def report(self) -> CacheReport:
        """What ``%funcache info`` shows."""
        store = self.store()
        rows: dict[str, ReportRow] = {}
        # What an entry adds to its row depends on its manifest's labels only, and the
        # entries of one function or cell mostly share them: worked out once per label set.
        shapes: dict[tuple[str, ...], tuple[bool, int, bool]] = {}
        for _, meta in store.entries():  # NB. one scan; cache_info() below reuses it
            row = rows.get(meta.name)
            if row is None:
                row = rows[meta.name] = ReportRow(meta.name, "function")
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
            if record:  # where the entries are, not an entry
                continue
            row.entries += 1
            row.files.append(files)
            if cell:
                row.kind = "cell"
        for name, fn in _current_functions(self.shell.user_ns).items():
            info = fn.cache_info()  # NB. also when stored in a directory= of its own
            row = rows.setdefault(name, ReportRow(name, "function"))
            row.entries, row.size = info.entries, info.bytes
            row.hits, row.misses = info.hits, info.misses
        for name, stats in self.cells.stats.items():
            row = rows.setdefault(name, ReportRow(name, "cell"))
            row.kind, row.hits, row.misses = "cell", stats.hits, stats.misses
        return CacheReport(
            store.directory,
            store.volume(),
            store.orphans(),
            decorator.is_enabled(),
            sorted(rows.values()),
        )

    def clear(self, name: str | None, remote: bool = False) -> None:
        """``%funcache clear [NAME] [--remote]``."""
        store = self.store()
        if remote and store.remote is None:
            raise UsageError(
                "%funcache clear --remote: no shared cache is configured "
                f"(set ${REMOTE_ENV} or %config FuncacheMagics.remote)"
            )
        functions = _current_functions(self.shell.user_ns)
        if name is None:
            removed = store.clear() + sum(fn.cache_clear() for fn in functions.values())
            print(
                f"funcache: removed {_plural(removed, 'entry', 'entries')} from {store.directory}"
            )
        else:
            known = (
                {meta.name for _, meta in store.entries()} | set(functions) | set(self.cells.stats)
            )
            name = _resolve(name, known, "is cached")
            removed = store.clear(name)
            if name in functions:
                removed += functions[name].cache_clear()
            print(f"funcache: removed {_plural(removed, 'entry', 'entries')} of {name}")
        if remote and store.remote is not None:
            shared = store.remote.clear(name)
            print(
                f"funcache: removed {_plural(shared, 'entry', 'entries')} you shared "
                f"on {store.remote.url}"
            )

    def explain(self, name: str | None) -> None:
        """``%funcache explain NAME``."""
        functions = _current_functions(self.shell.user_ns)
        known = set(functions) | set(self.cells.stats)
        if name is None:
            raise UsageError(
                f"%funcache explain needs a function or cell name; known: {_listing(known)}"
            )
        target = _resolve(name, known, "ran in this session")
        if target in functions:
            explanation = functions[target].explain_last()
        else:
            explanation = self.cells.explain_last(target)
        print(explanation if explanation is not None else f"{target}: not run in this session")


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

    def shown_files(self) -> str:
        """``3``, or ``0-3`` when its entries differ; ``-`` when none is in this directory."""
        if not self.files:
            return "-"
        low, high = min(self.files), max(self.files)
        return str(low) if low == high else f"{low}-{high}"


_COLUMNS = ("name", "kind", "entries", "files", "stored", "hits", "misses")


@dataclass(frozen=True)
class CacheReport:
    """``%funcache info``: plain text in a terminal, an HTML table in Jupyter."""

    directory: Path
    volume: int
    orphans: Orphans
    enabled: bool
    rows: list[ReportRow]

    def summary(self) -> tuple[str, str]:
        """Header lines: where and whether; how much and how well."""
        state = "on" if self.enabled else "off"
        entries = sum(row.entries for row in self.rows)
        hits = sum(row.hits or 0 for row in self.rows)
        misses = sum(row.misses or 0 for row in self.rows)
        stored = f"{_plural(entries, 'entry', 'entries')}, {_format_bytes(self.volume)} on disk"
        if self.orphans.files:
            stored += (
                f" + {_plural(self.orphans.files, 'orphan file', 'orphan files')} "
                f"({_format_bytes(self.orphans.bytes)}, left by interrupted writes)"
            )
        return (
            f"funcache: {self.directory} (caching {state})",
            f"{stored}; this session: {_plural(hits, 'hit', 'hits')}, "
            f"{_plural(misses, 'miss', 'misses')}",
        )

    def table(self) -> list[tuple[str, ...]]:
        def count(n: int | None) -> str:
            return "-" if n is None else str(n)

        return [
            (
                r.name,
                r.kind,
                str(r.entries),
                r.shown_files(),
                _format_bytes(r.size),
                count(r.hits),
                count(r.misses),
            )
            for r in self.rows
        ]

    def __repr__(self) -> str:
        lines = list(self.summary())
        body = self.table()
        if body:
            widths = [max(map(len, column)) for column in zip(_COLUMNS, *body, strict=True)]
            lines.append("")
            for cells in [_COLUMNS, *body]:
                padded = [cells[0].ljust(widths[0]), cells[1].ljust(widths[1])]
                padded += [
                    cell.rjust(width) for cell, width in zip(cells[2:], widths[2:], strict=True)
                ]
                lines.append("  ".join(padded).rstrip())
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in _COLUMNS)
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>"
            for cells in self.table()
        )
        summary = "<br>".join(html.escape(line) for line in self.summary())
        table = f"<table><tr>{head}</tr>{rows}</table>" if rows else ""
        return f"<p>{summary}</p>{table}"


def _after_result(shell: InteractiveShell, callback: Callable[[], None]) -> None:
    """Run ``callback`` once, when the cell has finished and ``Out[n]`` is shown.

    NB. After the inline backend's own ``post_execute`` hook, registered earlier.
    """

    def once() -> None:
        shell.events.unregister("post_execute", once)
        callback()

    shell.events.register("post_execute", once)


def _current_functions(namespace: dict[str, Any]) -> dict[str, Any]:
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


def _resolve(name: str, known: Iterable[str], condition: str) -> str:
    """The known name meant by ``name``: exact, or a unique ``module.`` suffix match.

    Raises:
        UsageError: nothing known matches (``condition`` says what "known" means), or
            several names do.
    """
    names = sorted(set(known))
    if name in names:
        return name
    matches = [known_name for known_name in names if known_name.endswith("." + name)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UsageError(f"{name!r} is ambiguous: {_listing(matches)}; use the full name")
    raise UsageError(f"no function or cell named {name!r} {condition}; known: {_listing(names)}")


def _plain_help(method: Any) -> None:
    """Make ``%%funcache?`` read as plain text: IPython's magic_arguments starts the usage
    line with a reST literal-block marker (``::``), shown as is by ``?``."""
    function = getattr(method, "__func__", method)
    if function.__doc__:
        function.__doc__ = function.__doc__.replace("::\n\n  %", "Usage: %", 1)


_plain_help(FuncacheMagics.funcache_cell)
_plain_help(FuncacheMagics.funcache_line)


def _running_cell_number(shell: InteractiveShell) -> int:
    """The execution number of the cell running now, for ``Cell In[n]`` in tracebacks.

    NB. IPython 9 counts the next cell before running this one, so
    ``shell.execution_count`` is one ahead; the result being built knows the number.
    """
    running = getattr(shell.displayhook, "exec_result", None)
    number = getattr(running, "execution_count", None)
    return number if isinstance(number, int) else shell.execution_count


def _unquoted(word: str) -> str:
    """``"data/*.csv"`` as ``data/*.csv``.

    NB. IPython splits a magic's line keeping quotes (so Windows paths keep their
    backslashes): a quoted pattern would otherwise match nothing, silently.
    """
    if len(word) >= 2 and word[0] == word[-1] and word[0] in "'\"":
        return word[1:-1]
    return word


def _listing(names: Iterable[str]) -> str:
    return ", ".join(sorted(names)) or "none yet"


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _format_bytes(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    exponent = min((size.bit_length() - 1) // 10, 3)
    return f"{size / 1024**exponent:.1f} {('KiB', 'MiB', 'GiB')[exponent - 1]}"


def load_ipython_extension(ipython: InteractiveShell) -> None:
    """Register the magics; loading again keeps the registered instance."""
    if isinstance(ipython.magics_manager.registry.get(FuncacheMagics.__name__), FuncacheMagics):
        return
    magics = FuncacheMagics(ipython)
    ipython.register_magics(magics)
    decorator.tally_calls(True)
    ipython.events.register("post_run_cell", magics.report_calls)


def unload_ipython_extension(ipython: InteractiveShell) -> None:
    """Undo :func:`load_ipython_extension`: the magics, the configurable, $FUNCACHE_IPY_DIR."""
    manager = ipython.magics_manager
    magics = manager.registry.pop(FuncacheMagics.__name__, None)
    if not isinstance(magics, FuncacheMagics):
        return
    magics.restore_environment()
    ipython.events.unregister("post_run_cell", magics.report_calls)
    decorator.tally_calls(False)
    for kind, table in magics.magics.items():
        for name, method in table.items():
            if manager.magics[kind].get(name) == method:
                del manager.magics[kind][name]
    # NB. IPython infers ``configurables`` as a list of shells from its first item.
    if magics in ipython.configurables:  # type: ignore[comparison-overlap]
        ipython.configurables.remove(magics)  # type: ignore[arg-type]
