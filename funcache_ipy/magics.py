"""IPython adapter: the ``%%funcache`` and ``%funcache`` magics, their options, load/unload.

The only module that imports IPython. It turns a cell into what :mod:`funcache_ipy.cell`
needs (the analysis of the transformed code, IPython's compiler so tracebacks show the
cell's lines, the display publisher, the user namespace) and renders ``%funcache info``;
the caching itself lives in ``cell`` and ``decorator``.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import types
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display
from traitlets import Bool, Bunch, Int, Unicode, observe

from funcache_ipy import decorator, housekeeping, summary
from funcache_ipy.analysis import CellAnalysis, analyze_cell
from funcache_ipy.cell import CellCache
from funcache_ipy.cell_keying import Compile, is_cell_entry
from funcache_ipy.memory import default_memory
from funcache_ipy.remote import REMOTE_ENV, TRUST_ENV, RemoteTier
from funcache_ipy.store import DEFAULT_OUTPUT_LIMIT, DEFAULT_SIZE_LIMIT, Store
from funcache_ipy.tracebacks import CellSyntaxError

__all__ = ["FuncacheMagics", "load_ipython_extension", "unload_ipython_extension"]

_NAME = re.compile(r"[\w.:-]+")
# The default memory's settings the traitlets of the same names set; unloading puts back
# what they were before loading.
_MEMORY_SETTINGS = ("directory", "size_limit", "output_limit", "remote")
_SHELL_HELPERS = ("get_ipython", "exit", "quit")  # the shell's own, never user data
# Characters of a cell's text kept in its entries' metadata, for explain's diff and for
# re-keying it after a restart; a longer cell is explained without them.
_KEPT_CODE = 20_000


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
        "@funcache_ipy.cache functions without a directory= of their own: sets "
        "funcache_ipy.default_memory.directory (unloading the extension puts it back). "
        "None: $FUNCACHE_IPY_DIR, else ./.funcache, resolved when used.",
    ).tag(config=True)
    quiet = Bool(
        False,
        help="Do not print a notice when a cell is restored, nor the line after a cell that "
        "says which cached functions hit (and what that saved) or why one recomputed.",
    ).tag(config=True)
    size_limit = Int(
        DEFAULT_SIZE_LIMIT,
        help="Bytes the cache directory may hold before the oldest entries are evicted "
        "(sets funcache_ipy.default_memory.size_limit).",
    ).tag(config=True)

    output_limit = Int(
        DEFAULT_OUTPUT_LIMIT,
        help="Bytes up to which a file a cached cell or function writes is stored with its "
        "entry, so that a hit puts it back; a bigger one must be left as the run wrote it "
        "(sets funcache_ipy.default_memory.output_limit).",
    ).tag(config=True)

    remote = Unicode(
        None,
        allow_none=True,
        help="fsspec URL of a shared cache behind the local one (s3://bucket/prefix, "
        "gs://..., file:///mnt/shared/cache): sets funcache_ipy.default_memory.remote; "
        'None: $FUNCACHE_IPY_REMOTE. Needs: pip install "funcache_ipy[s3]".',
    ).tag(config=True)
    trust = Unicode(
        None,
        allow_none=True,
        help="Comma-separated public keys (python -m funcache_ipy key) whose shared entries "
        "are accepted besides your own; exported as $FUNCACHE_IPY_TRUST.",
    ).tag(config=True)

    # $FUNCACHE_IPY_TRUST before ``trust`` set it; unset: not exported (see _export_trust).
    # NB. A class default: the observers first run while traitlets loads config.
    _trust_before: tuple[str | None] | None = None
    # Narrower than ``Magics`` (which allows None): this class is only made with a shell.
    shell: InteractiveShell

    def __init__(self, shell: InteractiveShell) -> None:
        super().__init__(shell)
        self.cells = CellCache(self.store, lambda: default_memory.enabled)
        # Cell name -> (its text, its --files) when it last ran: what explain re-keys.
        self._last_cells: dict[str, tuple[str, list[str]]] = {}
        # The default memory's settings before loading, put back by unloading.
        self.memory_before: dict[str, object] = {}

    def store(self) -> Store:
        """The default memory's store (shared with ``@funcache_ipy.cache`` functions)."""
        return default_memory.store()

    @observe("directory", "size_limit", "output_limit", "remote")
    def _configure_memory(self, change: Bunch) -> None:
        """Give the default memory the new setting; ``@cache`` functions read it at each call.

        Runs at load time too, when traitlets applies a profile's ``c.FuncacheMagics``.
        """
        setattr(default_memory, change["name"], change["new"])

    @observe("trust")
    def _export_trust(self, change: Bunch) -> None:
        """Export ``trust`` as ``$FUNCACHE_IPY_TRUST``, where the remote tier reads it."""
        if self._trust_before is None:
            self._trust_before = (os.environ.get(TRUST_ENV),)
        value = change["new"] if change["new"] is not None else self._trust_before[0]
        if value is None:
            os.environ.pop(TRUST_ENV, None)
        else:
            os.environ[TRUST_ENV] = value

    def report_calls(self, result: object = None) -> None:
        """After each cell: one line per cached function it called that hit, or that
        recomputed although entries of it are stored (see :mod:`funcache_ipy.summary`)."""
        tallies = decorator.take_tallies()
        if tallies and not self.quiet:
            for line in summary.lines(tallies):
                print(line)

    def restore_environment(self) -> None:
        """Put ``$FUNCACHE_IPY_TRUST`` back as it was."""
        if self._trust_before is None:
            return
        (before,), self._trust_before = self._trust_before, None
        if before is None:
            os.environ.pop(TRUST_ENV, None)
        else:
            os.environ[TRUST_ENV] = before

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
        try:
            analysis, compile_tree = _analyze(shell, cell)
        except SyntaxError as exc:
            raise CellSyntaxError(exc) from None
        if analysis.top_level_await:
            raise UsageError(
                "%%funcache cannot run a cell with top-level await; "
                "put the code in an async function and run it with asyncio.run()"
            )
        name = args.name or analysis.default_name
        declared = [_unquoted(pattern) for pattern in args.files or ()]
        self._last_cells[name] = (cell, declared)
        return self.cells.run(
            analysis,
            name=name,
            namespace=shell.user_ns,
            compiler=compile_tree,
            publisher=shell.display_pub,
            after_result=functools.partial(_after_result, shell),
            refresh=args.refresh,
            quiet=args.quiet or self.quiet,
            ignore=_shell_helpers(shell),
            declared=declared,
            source=cell if len(cell) <= _KEPT_CODE else "",
        )

    @magic_arguments("funcache")
    @argument(
        "action",
        nargs="?",
        default="info",
        choices=["info", "clear", "off", "on", "explain", "prune"],
        help="what to do (default: info)",
    )
    @argument("name", nargs="?", help="a cached function or cell, for clear, explain and prune")
    @argument(
        "--remote",
        action="store_true",
        help="with info: also list the shared cache (your entries and those of signers you "
        "trust, from their small metadata objects); with clear: also delete your own entries "
        "on the shared cache (others' entries are never touched; the bucket's lifecycle "
        "rules expire them)",
    )
    @argument(
        "--last",
        action="store_true",
        help="with explain: why the last call or run missed, rather than whether the next hits",
    )
    @argument(
        "--keep",
        type=int,
        metavar="N",
        help="with prune: keep the newest N versions of each function and cell "
        "(default 1 unless --older is given)",
    )
    @argument(
        "--older",
        metavar="AGE",
        help="with prune: also remove entries stored more than AGE ago (30d, 12h, 90m)",
    )
    @line_magic("funcache")  # type: ignore[arg-type]  # IPython types it as a union
    def funcache_line(self, line: str) -> None:
        """Show and control the cache of @cache functions and %%funcache cells.

        %funcache info: cache directory, entries, size on disk (and orphan files
        left by interrupted writes); per function and cell, its entries, the files they
        depend on (a range when entries differ), its size, how long ago its newest entry
        was stored and what computing it took, and this session's hits and misses.
        --remote adds the shared cache: per name and signer ("you" or the start of
        their public key), entries, size and the newest one's age, read without
        downloading values.
        %funcache clear [NAME]: delete every entry, or those of one function or cell,
        from the local cache; --remote also deletes those you signed on the shared cache.
        %funcache off / on: run cached functions and cells without / with the
        cache. %funcache explain NAME: would the next run hit, things being as they are
        now (a function with its last call's arguments, a cell with its last code, after
        a restart the code stored); if not, what changed (old -> new). --last: why the
        last call or run missed. %funcache prune [NAME] [--keep N] [--older AGE]: remove
        older versions of functions and cells (entries of other code or globals than
        their newest N) and entries stored more than AGE ago; the newest version stays.

        Functions are named module.qualname (load is enough when unique); cells
        by %%funcache --name NAME, else cell: + 8 hex digits of their code's
        digest (see %funcache info). Options: %config FuncacheMagics.
        """
        # NB. argparse fills both optional positionals before an option, so a name after
        # one (explain --last f) comes back as an extra word: it is the name.
        args, extra = parse_argstring(self.funcache_line, line, partial=True)
        if len(extra) == 1 and args.name is None and not extra[0].startswith("-"):
            args.name, extra = extra[0], []
        if extra:
            raise UsageError(f"unrecognized arguments: {' '.join(extra)}")
        if args.action in ("info", "off", "on") and args.name is not None:
            raise UsageError(f"%funcache {args.action} takes no name (got {args.name!r})")
        for option, actions in (("remote", ("info", "clear")), ("last", ("explain",))):
            if getattr(args, option) and args.action not in actions:
                raise UsageError(
                    f"--{option} goes with %funcache {' or '.join(actions)}, not {args.action}"
                )
        if (args.keep is not None or args.older is not None) and args.action != "prune":
            raise UsageError(f"--keep and --older go with %funcache prune, not {args.action}")
        try:
            if args.action == "info":
                display(self.report(remote=args.remote))
            elif args.action == "clear":
                self.clear(args.name, remote=args.remote)
            elif args.action in ("off", "on"):
                default_memory.enabled = args.action == "on"
                state = "on" if default_memory.enabled else "off: functions and cells just run"
                print(f"funcache: caching is {state}")
            elif args.action == "explain":
                self.explain(args.name, last=args.last)
            else:
                self.prune(args.name, args.keep, args.older)
        except housekeeping.HousekeepingError as exc:
            raise UsageError(str(exc)) from None

    def report(self, remote: bool = False) -> housekeeping.CacheReport:
        """What ``%funcache info [--remote]`` shows."""
        store = self.store()
        shared = _shared_tier(store, "info") if remote else None
        cells = {name: (stats.hits, stats.misses) for name, stats in self.cells.stats.items()}
        functions = housekeeping.current_functions(self.shell.user_ns)
        return housekeeping.report(store, functions, cells, default_memory.enabled, shared)

    def clear(self, name: str | None, remote: bool = False) -> None:
        """``%funcache clear [NAME] [--remote]``."""
        store = self.store()
        shared = _shared_tier(store, "clear") if remote else None
        functions = housekeeping.current_functions(self.shell.user_ns)
        if name is None:
            removed = store.clear() + sum(fn.cache_clear() for fn in functions.values())
            removed_text = housekeeping.plural(removed, "entry", "entries")
            print(f"funcache: removed {removed_text} from {store.directory}")
        else:
            known = (
                {meta.name for _, meta in store.entries()} | set(functions) | set(self.cells.stats)
            )
            name = housekeeping.resolve(name, known, "is cached")
            removed = store.clear(name)
            if name in functions:
                removed += functions[name].cache_clear()
            print(f"funcache: removed {housekeeping.plural(removed, 'entry', 'entries')} of {name}")
        if shared is not None:
            deleted = shared.clear(name)
            print(
                f"funcache: removed {housekeeping.plural(deleted, 'entry', 'entries')} you shared "
                f"on {shared.url}"
            )

    def explain(self, name: str | None, last: bool = False) -> None:
        """``%funcache explain [--last] NAME``."""
        functions = housekeeping.current_functions(self.shell.user_ns)
        store = self.store()
        cells = set(self.cells.stats)
        if not last:  # a cell stored before a restart can be re-keyed from its stored code
            cells |= {meta.name for _, meta in store.entries() if is_cell_entry(meta)}
        known = set(functions) | cells
        if name is None:
            raise UsageError(
                f"%funcache explain needs a function or cell name; known: "
                f"{housekeeping.listing(known)}"
            )
        target = housekeeping.resolve(
            name, known, "ran in this session" if last else "ran in this session or is stored"
        )
        explanation: object
        if target in functions:
            fn = functions[target]
            explanation = fn.explain_last() if last else fn.explain_next()
        elif last:
            explanation = self.cells.explain_last(target)
        else:
            explanation = self._explain_next_cell(store, target)
        print(explanation if explanation is not None else f"{target}: not run in this session")

    def _explain_next_cell(self, store: Store, name: str) -> object:
        """Would cell ``name`` hit if run again now (its last code here, else its stored code)."""
        ran = self._last_cells.get(name)
        if ran is None:
            newest = housekeeping.newest_cell_entry(store, name)
            source = housekeeping.cell_source(newest) if newest is not None else ""
            if newest is None or not source:
                return f"{name}: not run in this session, and its code is not stored"
            ran = (source, housekeeping.cell_declared(newest))
        source, declared = ran
        return housekeeping.explain_next_cell(
            store,
            name,
            source,
            declared,
            self.shell.user_ns,
            functools.partial(_analyze, self.shell),
            _shell_helpers(self.shell),
        )

    def prune(self, name: str | None, keep: int | None, older: str | None) -> None:
        """``%funcache prune [NAME] [--keep N] [--older AGE]``."""
        if keep is not None and keep < 1:
            raise UsageError(f"--keep takes 1 or more (the newest version stays), not {keep}")
        pruned = default_memory.prune(name, keep=keep, older=older)
        print(f"funcache: {pruned} from {self.store().directory}")


def _analyze(shell: InteractiveShell, cell: str) -> tuple[CellAnalysis, Compile]:
    """A cell's text analysed as IPython runs it, and the compiler that keeps its lines
    in tracebacks (``Cell In[n]``)."""
    code = shell.transform_cell(cell)
    filename = shell.compile.cache(code, _running_cell_number(shell), raw_code=cell)
    transform = shell.transform_ast if shell.ast_transformers else None

    def compile_tree(tree: ast.mod, mode: str) -> types.CodeType:
        # NB. typeshed says codeop.Compile takes source text; like compile(), it takes ASTs.
        return shell.compile(tree, filename, mode)  # type: ignore[arg-type]

    return analyze_cell(code, transform, filename), compile_tree


def _shell_helpers(shell: InteractiveShell) -> frozenset[str]:
    """The shell's own names a cell may read (``get_ipython``): left out of its key."""
    namespace, hidden = shell.user_ns, shell.user_ns_hidden
    return frozenset(n for n in _SHELL_HELPERS if n in hidden and namespace.get(n) is hidden[n])


def _after_result(shell: InteractiveShell, callback: Callable[[], None]) -> None:
    """Run ``callback`` once, when the cell has finished and ``Out[n]`` is shown.

    NB. After the inline backend's own ``post_execute`` hook, registered earlier.
    """

    def once() -> None:
        shell.events.unregister("post_execute", once)
        callback()

    shell.events.register("post_execute", once)


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


def _shared_tier(store: Store, action: str) -> RemoteTier:
    """The shared tier ``%funcache ACTION --remote`` works on.

    Raises:
        UsageError: none is configured.
    """
    if store.remote is None:
        raise UsageError(
            f"%funcache {action} --remote: no shared cache is configured "
            f"(set ${REMOTE_ENV} or %config FuncacheMagics.remote)"
        )
    return store.remote


def load_ipython_extension(ipython: InteractiveShell) -> None:
    """Register the magics; loading again keeps the registered instance."""
    if isinstance(ipython.magics_manager.registry.get(FuncacheMagics.__name__), FuncacheMagics):
        return
    settings = {name: getattr(default_memory, name) for name in _MEMORY_SETTINGS}
    magics = FuncacheMagics(ipython)  # NB. applies the profile's c.FuncacheMagics
    magics.memory_before = settings
    ipython.register_magics(magics)
    decorator.tally_calls(True)
    ipython.events.register("post_run_cell", magics.report_calls)


def unload_ipython_extension(ipython: InteractiveShell) -> None:
    """Undo :func:`load_ipython_extension`: the magics, the configurable, the default
    memory's settings, $FUNCACHE_IPY_TRUST."""
    manager = ipython.magics_manager
    magics = manager.registry.pop(FuncacheMagics.__name__, None)
    if not isinstance(magics, FuncacheMagics):
        return
    magics.restore_environment()
    for name, value in magics.memory_before.items():
        setattr(default_memory, name, value)
    ipython.events.unregister("post_run_cell", magics.report_calls)
    decorator.tally_calls(False)
    for kind, table in magics.magics.items():
        for name, method in table.items():
            if manager.magics[kind].get(name) == method:
                del manager.magics[kind][name]
    # NB. IPython infers ``configurables`` as a list of shells from its first item.
    if magics in ipython.configurables:  # type: ignore[comparison-overlap]
        ipython.configurables.remove(magics)  # type: ignore[arg-type]
