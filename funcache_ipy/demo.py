"""``python -m funcache_ipy demo``: run the quickstart twice through a real kernel.

The promise of funcache_ipy is "restart the kernel, run all, and the slow cells are
instant". The most convincing demo is that exact experience, measured: the quickstart
notebook runs cell by cell in a fresh Jupyter kernel, the kernel is restarted, the notebook
runs again, and a table shows each cell's time in both runs and whether it hit the cache.

The kernel runs the *current* interpreter (``sys.executable -m ipykernel_launcher``), so the
demo works right after ``pip install funcache_ipy`` in a fresh venv, without
``ipython kernel install``. Everything it writes (cache, IPython profile, kernel sockets)
lives in a temporary directory that is removed afterwards; only the per-user HMAC key is
kept in the user's config directory, as in normal use.

``KernelSession`` and ``run_notebook`` are public because the test-suite executes the
example notebooks with them: the demo cannot drift from what is tested.
"""

from __future__ import annotations

import ast
import importlib.resources
import json
import os
import queue
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from jupyter_client import KernelManager
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

#: The one line ``%%funcache`` prints when it restores a cell (absent with ``--quiet``).
HIT_NOTICE = "funcache: restored"

# Evaluated in the kernel after every cell (as a ``user_expression``, so it prints nothing
# and binds nothing): total [hits, misses] over the live ``@cache`` wrappers.
_COUNTERS_EXPRESSION = (
    "(lambda d: [sum(c) for c in zip((0, 0), *((i.hits, i.misses) for i in ("
    "w.cache_info() for w in (d.decorated_functions() if d else ()))))])"
    "(__import__('sys').modules.get('funcache_ipy.decorator'))"
)
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class _CurrentInterpreterSpecs(KernelSpecManager):
    """Resolve every kernel name to ``sys.executable -m ipykernel_launcher``.

    A ``python3`` kernelspec found on disk may point at another Python (or not exist in a
    fresh venv); the demo and the tests must run the interpreter funcache_ipy is installed
    in. The IPython history goes to memory so nothing is written under the profile.
    """

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        argv.append("--HistoryManager.hist_file=:memory:")
        return KernelSpec(argv=argv, display_name=f"Python 3 ({kernel_name})", language="python")


@dataclass
class CellRun:
    """What one executed cell produced, as a reader of the notebook would see it."""

    source: str
    seconds: float
    stdout: str = ""
    stderr: str = ""
    outputs: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    user_expressions: dict[str, Any] = field(default_factory=dict)
    cache: str = ""  # "hit", "miss" or "" (did not touch the cache); set by run_notebook
    # (message type, content) of every stream, display, result and error, in arrival
    # order: stdout/stderr above are joined, which hides how they interleave.
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def text(self) -> str:
        """Stdout, stderr and the ``text/plain`` of every rich output, in that order."""
        plain = [str(out["data"].get("text/plain", "")) for out in self.outputs]
        return "\n".join([self.stdout, self.stderr, *plain])

    def mime(self, mimetype: str) -> list[str]:
        """The payloads of ``mimetype`` among the display and result outputs."""
        return [str(out["data"][mimetype]) for out in self.outputs if mimetype in out["data"]]


class KernelSession:
    """A Jupyter kernel on the current interpreter, with a fixed cwd and environment.

    Use as a context manager. ``run`` executes one cell the way the notebook frontend does
    (``store_history`` on, so ``Out[n]`` and the last expression behave as in Jupyter) and
    collects its outputs; ``restart`` is the "Restart kernel" button.

    Args:
        cwd: the kernel's working directory (``./.funcache`` and local modules live here).
        env: the kernel's full environment; ``None`` inherits this process's.
        timeout: seconds allowed for kernel startup and for each cell.
    """

    def __init__(
        self,
        cwd: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        *,
        timeout: float = 120.0,
    ) -> None:
        self.cwd = Path(cwd)
        self.env = dict(os.environ if env is None else env)
        self.timeout = timeout
        self._runtime_dir: Path | None = None
        self._manager: KernelManager | None = None
        self._client: BlockingKernelClient | None = None

    def __enter__(self) -> KernelSession:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    def start(self) -> None:
        """Launch the kernel and wait until it answers on every channel."""
        # NB. IPC sockets (POSIX) avoid TCP port races between parallel test workers and
        # ipykernel's "running over TCP without encryption" warning. Unix socket paths are
        # limited to ~100 bytes, hence a short temp dir rather than one under ``cwd``.
        self._runtime_dir = Path(tempfile.mkdtemp(prefix="fck-"))
        manager = KernelManager(
            kernel_name="python3", kernel_spec_manager=_CurrentInterpreterSpecs()
        )
        manager.connection_file = str(self._runtime_dir / "kernel.json")
        if os.name == "posix":
            manager.transport = "ipc"
            manager.ip = str(self._runtime_dir / "k")
        self._manager = manager
        try:
            manager.start_kernel(cwd=str(self.cwd), env=self.env)
            self._client = manager.client()
            self._client.start_channels()
            self._client.wait_for_ready(timeout=self.timeout)
        except BaseException:
            self.shutdown()  # no orphan kernel process or socket directory
            raise

    def restart(self) -> None:
        """Restart the kernel (same cwd, env and connection), like Jupyter's button."""
        self._require_manager().restart_kernel(now=False)
        self._require_client().wait_for_ready(timeout=self.timeout)

    def shutdown(self) -> None:
        """Stop the kernel and remove its sockets; safe to call twice."""
        if self._client is not None:
            self._client.stop_channels()
            self._client = None
        if self._manager is not None:
            if self._manager.has_kernel:
                self._manager.shutdown_kernel(now=False)
            self._manager = None
        if self._runtime_dir is not None:
            shutil.rmtree(self._runtime_dir, ignore_errors=True)
            self._runtime_dir = None

    def run(self, code: str, *, user_expressions: Mapping[str, str] | None = None) -> CellRun:
        """Execute ``code`` as the next cell and return what it produced.

        Timing runs from the request to the kernel going idle, which is what a user
        waits for. An exception in the cell is recorded in ``CellRun.error`` (plain text,
        no ANSI colours), not raised.

        Raises:
            TimeoutError: the cell ran longer than ``timeout``.
            RuntimeError: the kernel died while running the cell.
        """
        client = self._require_client()
        started = time.perf_counter()
        msg_id = client.execute(
            code,
            store_history=True,
            allow_stdin=False,
            user_expressions=dict(user_expressions or {}),
        )
        run = CellRun(source=code, seconds=0.0)
        stdout: list[str] = []
        stderr: list[str] = []
        while True:
            msg = self._next_message(client.get_iopub_msg, started, code)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "status" and content["execution_state"] == "idle":
                break
            if kind in ("stream", "display_data", "update_display_data", "execute_result", "error"):
                run.messages.append((kind, content))
            if kind == "stream":
                (stdout if content["name"] == "stdout" else stderr).append(content["text"])
            elif kind in ("display_data", "execute_result"):
                run.outputs.append(
                    {"output_type": kind, "data": content["data"], "metadata": content["metadata"]}
                )
            elif kind == "error":
                run.error = _ANSI_ESCAPE.sub("", "\n".join(content["traceback"]))
        run.seconds = time.perf_counter() - started
        run.stdout, run.stderr = "".join(stdout), "".join(stderr)
        while True:
            reply = self._next_message(client.get_shell_msg, started, code)
            if reply["parent_header"].get("msg_id") == msg_id:
                run.user_expressions = reply["content"].get("user_expressions", {})
                return run

    def _next_message(
        self, get: Callable[..., dict[str, Any]], started: float, code: str
    ) -> dict[str, Any]:
        """Wait for the next message on one channel, noticing a dead kernel or a timeout."""
        while True:
            if time.perf_counter() - started > self.timeout:
                raise TimeoutError(f"cell ran longer than {self.timeout:.0f} s: {_headline(code)}")
            try:
                return get(timeout=1.0)
            except queue.Empty:
                if not self._require_manager().is_alive():
                    raise RuntimeError(
                        f"the kernel died while running: {_headline(code)}"
                    ) from None

    def _require_manager(self) -> KernelManager:
        if self._manager is None:
            raise RuntimeError("the kernel is not running; call start() first")
        return self._manager

    def _require_client(self) -> BlockingKernelClient:
        if self._client is None:
            raise RuntimeError("the kernel is not running; call start() first")
        return self._client


def read_code_cells(notebook_json: str) -> list[str]:
    """The code cells of a notebook (nbformat 4 JSON), in order.

    Plain ``json`` rather than ``nbformat``: the demo must run on a bare install, and
    ``nbformat`` is only a test dependency.
    """
    cells = json.loads(notebook_json)["cells"]
    sources = [cell["source"] for cell in cells if cell["cell_type"] == "code"]
    return ["".join(src) if isinstance(src, list) else src for src in sources]


def run_notebook(kernel: KernelSession, cells: Sequence[str]) -> list[CellRun]:
    """Run ``cells`` in order, classifying each as a cache hit, miss or neither.

    A cell *hit* when ``%%funcache`` printed its restore notice, or when the ``@cache``
    wrappers' hit counters rose and their miss counters did not; a ``%%funcache`` cell
    without the notice, or any cell that raised a wrapper's miss counter, *missed*.
    Counting with the wrappers' own ``cache_info()`` rather than scraping prints keeps the
    classification honest for any notebook. Expects a fresh kernel (counters at zero).
    Execution stops after a cell that raises, as "Run All" does.
    """
    runs: list[CellRun] = []
    before = (0, 0)
    for source in cells:
        run = kernel.run(source, user_expressions={"counters": _COUNTERS_EXPRESSION})
        after = _read_counters(run, before)
        hits, misses = after[0] - before[0], after[1] - before[1]
        before = after
        if HIT_NOTICE in run.stdout or HIT_NOTICE in run.stderr:
            run.cache = "hit"
        elif source.lstrip().startswith("%%funcache") or misses > 0:
            run.cache = "miss"
        elif hits > 0:
            run.cache = "hit"
        runs.append(run)
        if run.error is not None:
            break
    return runs


def _read_counters(run: CellRun, fallback: tuple[int, int]) -> tuple[int, int]:
    """Parse the counters user-expression; a cell that failed early leaves them as they were."""
    result = run.user_expressions.get("counters", {})
    if result.get("status") != "ok":
        return fallback
    hits, misses = ast.literal_eval(result["data"]["text/plain"])
    return int(hits), int(misses)


def quickstart_notebook() -> tuple[str, str]:
    """Return (where it was found, JSON text) of the quickstart notebook.

    A wheel ships it as package data (``funcache_ipy/notebooks``); an editable install or a
    source checkout has it in the repository's ``examples/notebooks``.

    Raises:
        FileNotFoundError: neither location has it (a broken install).
    """
    packaged = importlib.resources.files("funcache_ipy") / "notebooks" / "quickstart.ipynb"
    if packaged.is_file():
        return str(packaged), packaged.read_text(encoding="utf-8")
    checkout = Path(__file__).resolve().parent.parent / "examples" / "notebooks"
    source = checkout / "quickstart.ipynb"
    if source.is_file():
        return str(source), source.read_text(encoding="utf-8")
    raise FileNotFoundError(
        f"quickstart.ipynb is neither in {packaged} nor in {checkout}; reinstall funcache_ipy"
    )


def run_demo(out: TextIO = sys.stdout) -> int:
    """Run the quickstart twice with a restart in between, print the table, return a status.

    Returns:
        0 when both runs succeeded and every cached cell hit on the second run, else 1.
    """
    where, notebook = quickstart_notebook()
    cells = read_code_cells(notebook)
    print(f"funcache_ipy demo: running {where} twice, restarting the kernel in between", file=out)
    with tempfile.TemporaryDirectory(prefix="funcache-demo-") as tmp:
        work = Path(tmp)
        env = {
            **os.environ,
            "FUNCACHE_IPY_DIR": str(work / ".funcache"),
            "IPYTHONDIR": str(work / "ipython"),
        }
        with KernelSession(work, env) as kernel:
            print("  run 1: empty cache ...", file=out, flush=True)
            first = run_notebook(kernel, cells)
            kernel.restart()
            print("  run 2: fresh kernel, same cache ...", file=out, flush=True)
            second = run_notebook(kernel, cells) if all(r.error is None for r in first) else []
    print(file=out)
    for label, runs in (("run 1", first), ("run 2", second)):
        for run in runs:
            if run.error is not None:
                print(f"{label} failed in cell {_headline(run.source)!r}:\n{run.error}", file=out)
                return 1
    print(format_table(first, second), file=out)
    for said in _what_it_said(first, second):
        print(said, file=out)
    cached = [run for run in second if run.cache]
    hits = [run for run in cached if run.cache == "hit"]
    before = sum(run.seconds for run in first)
    after = sum(run.seconds for run in second)
    print(
        f"\nsecond run: {len(hits)} of {len(cached)} cached cells hit; "
        f"{before:.1f} s -> {after:.1f} s. The temporary cache was removed.",
        file=out,
    )
    return 0 if cached and len(hits) == len(cached) else 1


def _what_it_said(first: Sequence[CellRun], second: Sequence[CellRun]) -> list[str]:
    """The lines that sell the tool: why an edit recomputed (run 1's ``explain``), and
    one hit notice of run 2."""
    said = ["", "what the notebook said:"]
    for label, runs, wanted in (("run 1", first, ": miss\n"), ("run 2", second, HIT_NOTICE)):
        for number, run in enumerate(runs, start=1):
            at = run.stdout.find(wanted)
            if at >= 0:
                start = run.stdout.rfind("\n", 0, at) + 1
                lines = run.stdout[start:].splitlines()[: 2 if wanted == ": miss\n" else 1]
                said.append(f"  {label}, cell {number}: {' '.join(ln.strip() for ln in lines)}")
                break
    return said


def format_table(first: Sequence[CellRun], second: Sequence[CellRun]) -> str:
    """A markdown table: cell number and first line, time and cache status in each run."""
    rows = [("#", "cell", "run 1", "run 2", "cache")]
    for number, (one, two) in enumerate(zip(first, second, strict=True), start=1):
        status = f"{one.cache} -> {two.cache}" if one.cache or two.cache else ""
        timings = (f"{one.seconds:.2f} s", f"{two.seconds:.2f} s")
        rows.append((str(number), _headline(one.source), *timings, status))
    totals = (f"{sum(r.seconds for r in first):.2f} s", f"{sum(r.seconds for r in second):.2f} s")
    rows.append(("", "total", *totals, ""))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [
        "| "
        + " | ".join(
            cell.rjust(w) if i in (2, 3) else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        + " |"
        for row in rows
    ]
    rule = (
        "|"
        + "|".join("-" * (w + 1) + (":" if i in (2, 3) else "-") for i, w in enumerate(widths))
        + "|"
    )
    return "\n".join([lines[0], rule, *lines[1:]])


def _headline(source: str, width: int = 40) -> str:
    """The first non-blank line of a cell, shortened to ``width`` characters."""
    line = next((ln.strip() for ln in source.splitlines() if ln.strip()), "")
    return line if len(line) <= width else line[: width - 3] + "..."
