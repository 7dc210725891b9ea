"""Audit ``%%funcache`` on real notebooks: does a hit leave what a run would leave?

Why: the promise is "restart, run all, same notebook, only faster". Unit tests check the
cases someone thought of; public notebooks bring the ones nobody did. For each notebook
this script runs every code cell, in real Jupyter kernels, four times:

* plain A and plain B: the notebook as written (B after a restart), to learn which
  outputs and variables are nondeterministic (timings, unseeded randomness, set order);
* run 1 and run 2: each code cell prefixed with ``%%funcache`` (after ``%load_ext
  funcache_ipy``), with a restart in between and one cache directory.

After every cell a probe (a silent, empty request whose ``user_expressions`` call a
module outside the notebook's namespace, so it binds nothing and leaves no history)
digests every user variable, and the process state cells set for later ones (numpy's
global random state and print options, pandas options, matplotlib's rcParams,
``os.environ``, the working directory, ``sys.path``), named like ``<os.environ>``.
Then, cell by cell:

* run 2 vs run 1: a cell that hit must show the same outputs (bar the hit notice) and
  leave the same digests; a cell that missed is held to that except where plain A and B
  disagree; every miss is listed with ``%funcache explain`` for its cell;
* run 1 vs plain A: funcache must not change what a run shows or computes (differences
  that plain B also has vs A are noise and are counted, not reported as bugs);
* errors: any cell that raises under funcache but not plain, or in run 2 but not run 1.

Cells starting with a ``%%`` cell magic or made only of ``!shell`` lines are run as they
are, not cached, and listed as skipped. Everything lives in one temporary directory per
notebook (the notebook's folder is copied there, cache, IPython profile, HMAC key, HOME),
removed at the end. The kernels import the same ``funcache_ipy`` as this script.

Usage::

    PYTHONPATH=. python benchmarks/audit_notebooks.py NB.ipynb ... [--timeout 120]
        [--jobs 2] [--json results.json]
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from report import table

import funcache_ipy
from funcache_ipy.demo import HIT_NOTICE, KernelSession, read_code_cells

_PROBE_MODULE = "_funcache_audit_probe"
_PROBE_EXPRESSION = f"__import__({_PROBE_MODULE!r}).probe()"
# The probe lives in a module of its own so that it binds nothing in the user namespace.
# NB. It hashes with funcache_ipy's own hashing (functions and classes by fingerprint),
# which never caches on the objects it reads (no ``__slotnames__``), so probing is silent.
_PROBE_SOURCE = '''\
"""funcache audit probe: digests of the user namespace and the %%funcache cell stats."""
import hashlib, json, re, types
from IPython import get_ipython

_SKIP = {"In", "Out", "exit", "quit", "get_ipython"}
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{4,}")
_seen = {}  # cell name -> (hits, misses) at the previous probe


def probe():
    """JSON: the namespace digests and the cells whose hit/miss counts moved."""
    shell = get_ipython()
    namespace = {**_namespace(shell), **_process_state()}
    return json.dumps({"ns": namespace, "cells": _cells(shell)})


def _process_state():
    """State outside the namespace that cells commonly set and later cells depend on."""
    import os, sys
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FUNCACHE_")}
    cwd = os.path.relpath(os.getcwd(), os.environ["FUNCACHE_AUDIT_WORK"])
    state = {"<os.environ>": sorted(environ.items()), "<cwd>": cwd}
    state["<sys.path>"] = list(sys.path)
    np = sys.modules.get("numpy")
    if np is not None:
        state["<numpy.random global state>"] = np.random.get_state()
        state["<numpy print options>"] = sorted(np.get_printoptions().items(), key=str)
    pd = sys.modules.get("pandas")
    if pd is not None:
        state["<pandas options>"] = repr(pd._config.config._global_config)
    mpl = sys.modules.get("matplotlib")
    if mpl is not None:
        # NB. "%matplotlib inline" renames the backend ipykernel already uses; same backend.
        params = sorted((k, v) for k, v in mpl.rcParams.items() if k != "backend")
        state["<matplotlib.rcParams>"] = repr(params)
    return {name: _digest(value) for name, value in state.items()}


def _namespace(shell):
    hidden = shell.user_ns_hidden
    digests = {}
    for name, value in list(shell.user_ns.items()):
        if name.startswith("_") or name in _SKIP or isinstance(value, types.ModuleType):
            continue
        if name in hidden and hidden[name] is value:
            continue
        digests[name] = _digest(value)
    return digests


def _digest(value):
    """funcache's content digest, else a digest of the repr with addresses masked."""
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    try:
        from funcache_ipy.fingerprint import hash_content
        return "content:" + hash_content(value).hex()[:16]
    except Exception:
        pass
    try:
        text = _ADDRESS.sub("0x?", repr(value))
    except Exception as exc:
        text = f"<repr failed: {type(exc).__name__}>"
    return f"repr of {kind}:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _cells(shell):
    magics = shell.magics_manager.registry.get("FuncacheMagics")
    if magics is None:
        return {}
    changed = {}
    for name, stats in magics.cells.stats.items():
        now = (stats.hits, stats.misses)
        before = _seen.get(name, (0, 0))
        if now == before:
            continue
        _seen[name] = now
        if now[1] > before[1]:
            changed[name] = {"cache": "miss", "explain": str(magics.cells.explain_last(name))}
        else:
            changed[name] = {"cache": "hit", "explain": ""}
    return changed
'''

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{4,}")
# A SyntaxError names the cell's file, which ipykernel derives from the cell's text.
_CELL_FILE = re.compile(r"\([^()]*\.py, line")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# A warning as ``warnings.showwarning`` prints it: "file:line: Category: message" and,
# when the source is known, the offending line indented by two spaces.
_FUNCACHE_WARNING = re.compile(r"^.*FuncacheWarning: .*\n(?:  .*\n)?", re.MULTILINE)
_LOAD_EXTENSION = "%load_ext funcache_ipy"
_RUNS = ("plain A", "plain B", "run 1", "run 2")


@dataclass
class Shown:
    """What one cell showed, normalized (addresses masked, funcache's own lines removed)."""

    stdout: str = ""
    stderr: str = ""
    order: list[str] = field(default_factory=list)  # "stdout", "display", "result"...
    plain: list[str] = field(default_factory=list)  # text/plain of displays and result
    png: list[str] = field(default_factory=list)  # digests: a restyled figure differs
    html: int = 0
    error: str | None = None  # "Ename: evalue"
    hit_notice: bool = False
    warnings: list[str] = field(default_factory=list)  # FuncacheWarnings, as printed
    traceback_in_funcache: bool = False


@dataclass
class CellRecord:
    """One cell of one run: what it showed, the namespace after it, the cache's view."""

    shown: Shown
    namespace: dict[str, str]
    cache: str  # "hit", "miss" or "" (not a %%funcache cell, or plain)
    explain: str
    seconds: float


@dataclass
class Finding:
    """What the audit has to say about one code cell."""

    number: int  # 1-based among the notebook's code cells
    headline: str
    skipped: str | None  # why the cell is not cached, or None
    cache: str  # run 2's "hit" / "miss" / ""
    explain: str = ""
    hit_diffs: list[str] = field(default_factory=list)  # run 2 vs run 1
    plain_diffs: list[str] = field(default_factory=list)  # run 1 vs plain A
    errors: list[str] = field(default_factory=list)  # raised only under funcache
    warnings: list[str] = field(default_factory=list)
    noise: int = 0  # differences explained by plain A vs B
    run1_raised: bool = False

    @property
    def needless_miss(self) -> bool:
        """A miss that is not by design: run 1 did not raise and was stored."""
        by_design = self.explain_note.startswith(("not stored", "an input cannot be hashed"))
        return self.cache == "miss" and not self.run1_raised and not by_design

    @property
    def explain_note(self) -> str:
        """The reason line of the explanation, when it is a single one."""
        lines = self.explain.splitlines()
        return lines[1].strip(" -") if len(lines) == 2 else ""

    def interesting(self) -> bool:
        """Whether the cell gets a row in the notebook's table."""
        return bool(self.hit_diffs or self.plain_diffs or self.errors or self.warnings) or (
            self.cache == "miss"
        )


@dataclass
class NotebookAudit:
    """One notebook's result: the findings per cell and the raw records of the four runs."""

    path: str
    cells: int
    cached: int
    hits: int
    seconds: dict[str, float]
    aborted: dict[str, str]  # run label -> why it stopped early
    findings: list[Finding]
    records: dict[str, list[CellRecord | None]]

    def counts(self) -> dict[str, int]:
        """Cells with each kind of finding (noise: differences, not cells)."""
        return {
            "output/namespace diffs (run 2 vs 1)": sum(bool(f.hit_diffs) for f in self.findings),
            "diffs vs plain": sum(bool(f.plain_diffs) for f in self.findings),
            "needless misses": sum(f.needless_miss for f in self.findings),
            "errors": sum(bool(f.errors) for f in self.findings),
            "warned": sum(bool(f.warnings) for f in self.findings),
            "noise": sum(f.noise for f in self.findings),
        }


class AuditSession(KernelSession):
    """A ``KernelSession`` that digests each cell's outputs, in order, and probes after it."""

    def run_cell(self, code: str) -> CellRecord:
        """Run ``code`` as the next cell (history on, as Jupyter does), then probe."""
        run = self.run(code)
        shown = Shown()
        for kind, content in run.messages:
            if kind == "stream":
                _append_once(shown.order, content["name"])
            elif kind in ("display_data", "execute_result"):
                data = content["data"]
                shown.order.append("result" if kind == "execute_result" else "display")
                if "text/plain" in data:
                    shown.plain.append(_ADDRESS.sub("0x?", str(data["text/plain"])))
                if "image/png" in data:
                    png = str(data["image/png"]).encode()
                    shown.png.append(hashlib.sha256(png).hexdigest()[:12])
                shown.html += "text/html" in data
            elif kind == "error":
                evalue = _CELL_FILE.sub("(<cell>, line", _ADDRESS.sub("0x?", content["evalue"]))
                shown.error = f"{content['ename']}: {evalue}"
                text = _ANSI.sub("", "\n".join(content["traceback"]))
                shown.traceback_in_funcache = "funcache_ipy" in text
        _set_streams(shown, run.stdout, run.stderr)
        namespace, cells = self._probe()
        cache, explain = "", ""
        if cells:  # NB. one cell runs under one name; the last changed one is this cell's
            cache, explain = cells[-1]
        return CellRecord(shown, namespace, cache, explain, run.seconds)

    def _probe(self) -> tuple[dict[str, str], list[tuple[str, str]]]:
        """Digest the namespace without running anything that shows or binds."""
        client = self._require_client()
        started = time.perf_counter()
        msg_id = client.execute(
            "", silent=True, store_history=False, user_expressions={"p": _PROBE_EXPRESSION}
        )
        reply = self._drain_shell_reply(msg_id, started, "(namespace probe)")
        result = reply["content"].get("user_expressions", {}).get("p", {})
        if result.get("status") != "ok":
            detail = _ANSI.sub("", "\n".join(result.get("traceback", [])))
            raise RuntimeError(f"the namespace probe failed:\n{detail}")
        payload = json.loads(ast.literal_eval(result["data"]["text/plain"]))
        cells = [(c["cache"], c["explain"]) for c in payload["cells"].values()]
        return payload["ns"], cells

    def _drain_shell_reply(self, msg_id: str, started: float, code: str) -> dict[str, Any]:
        """The shell channel's reply to ``msg_id`` (earlier replies are skipped)."""
        client = self._require_client()
        while True:
            reply = self._next_message(client.get_shell_msg, started, code)
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply


def _append_once(order: list[str], kind: str) -> None:
    """Record an output kind, merging consecutive writes to one stream."""
    if not order or order[-1] != kind:
        order.append(kind)


def _set_streams(shown: Shown, stdout: str, stderr: str) -> None:
    """Keep the cell's own text: drop the hit notice and funcache's warnings (recorded)."""
    lines = stdout.splitlines(keepends=True)
    kept = [line for line in lines if HIT_NOTICE not in line]
    shown.hit_notice = len(kept) < len(lines)
    shown.warnings = [m.group(0).strip() for m in _FUNCACHE_WARNING.finditer(stderr)]
    shown.stdout = _ADDRESS.sub("0x?", "".join(kept))
    shown.stderr = _ADDRESS.sub("0x?", _FUNCACHE_WARNING.sub("", stderr))
    if not shown.stdout and "stdout" in shown.order:
        shown.order.remove("stdout")  # the notice alone is not cell output
    if not shown.stderr and "stderr" in shown.order:
        shown.order.remove("stderr")


def skip_reason(source: str) -> str | None:
    """Why a code cell is run as written rather than under ``%%funcache``, if it is."""
    lines = [line.strip() for line in source.splitlines() if line.strip()]
    if not lines:
        return "empty"
    if lines[0].startswith("%%"):
        return f"cell magic {lines[0].split()[0]}"
    if all(line.startswith("!") for line in lines):
        return "shell only"
    return None


def headline(source: str, width: int = 40) -> str:
    """The first non-blank line of a cell, shortened to ``width`` characters."""
    line = next((ln.strip() for ln in source.splitlines() if ln.strip()), "")
    return line if len(line) <= width else line[: width - 3] + "..."


def audit_notebook(path: Path, timeout: float) -> NotebookAudit:
    """Run ``path`` plain twice and under ``%%funcache`` twice; compare cell by cell."""
    sources = read_code_cells(path.read_text(encoding="utf-8"))
    skipped = [skip_reason(source) for source in sources]
    cached_sources = [
        source if reason else f"%%funcache\n{source}"
        for source, reason in zip(sources, skipped, strict=True)
    ]
    root = Path(tempfile.mkdtemp(prefix="funcache-audit-"))
    records: dict[str, list[CellRecord | None]] = {}
    aborted: dict[str, str] = {}
    seconds: dict[str, float] = {}
    try:
        env = _kernel_env(root)
        for mode, cells, labels in (
            ("plain", sources, _RUNS[:2]),
            ("funcache", cached_sources, _RUNS[2:]),
        ):
            work = _copy_notebook_folder(path, root / mode)
            # NB. The probe reports the cwd relative to this (it differs between modes).
            kernel = AuditSession(work, {**env, "FUNCACHE_AUDIT_WORK": str(work)}, timeout=timeout)
            with kernel:
                for number, label in enumerate(labels):
                    if number:
                        kernel.restart()
                    started = time.perf_counter()
                    if mode == "funcache":
                        loaded = kernel.run_cell(_LOAD_EXTENSION)
                        if loaded.shown.error is not None:
                            raise RuntimeError(f"{_LOAD_EXTENSION} failed: {loaded.shown.error}")
                    records[label], why = _run_all(kernel, cells)
                    seconds[label] = time.perf_counter() - started
                    if why is not None:
                        aborted[label] = why
                        kernel.restart()  # NB. a timed-out cell may still be running
    finally:
        shutil.rmtree(root, ignore_errors=True)
    carry = _Carry()
    findings = [
        _compare(number, source, reason, [records[label][number - 1] for label in _RUNS], carry)
        for number, (source, reason) in enumerate(zip(sources, skipped, strict=True), start=1)
    ]
    cached = [f for f in findings if f.skipped is None]
    return NotebookAudit(
        path=str(path),
        cells=len(sources),
        cached=len(cached),
        hits=sum(f.cache == "hit" for f in cached),
        seconds=seconds,
        aborted=aborted,
        findings=findings,
        records=records,
    )


def _kernel_env(root: Path) -> dict[str, str]:
    """This process's environment with every per-user location moved under ``root``."""
    package_parent = str(Path(funcache_ipy.__file__).resolve().parent.parent)
    probe_dir = root / "probe"
    probe_dir.mkdir()
    (probe_dir / f"{_PROBE_MODULE}.py").write_text(_PROBE_SOURCE, encoding="utf-8")
    paths = [str(probe_dir), package_parent, os.environ.get("PYTHONPATH", "")]
    home = root / "home"
    home.mkdir()
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "HOME": str(home),
        "FUNCACHE_IPY_DIR": str(root / "cache"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "IPYTHONDIR": str(home / ".ipython"),
        "MPLCONFIGDIR": str(home / ".matplotlib"),
        "JUPYTER_CONFIG_DIR": str(home / ".jupyter"),
        "JUPYTER_DATA_DIR": str(home / ".local" / "jupyter"),
        "JUPYTER_RUNTIME_DIR": str(home / ".local" / "jupyter" / "runtime"),
        # NB. a local module edited within the same second would load from a stale .pyc.
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _copy_notebook_folder(notebook: Path, work: Path) -> Path:
    """Copy the notebook's folder (its data and local modules) without other notebooks."""
    shutil.copytree(
        notebook.resolve().parent,
        work,
        ignore=shutil.ignore_patterns("*.ipynb", ".*", "__pycache__"),
    )
    return work


def _run_all(
    kernel: AuditSession, cells: Sequence[str]
) -> tuple[list[CellRecord | None], str | None]:
    """Run every cell, on past errors ("run all, continue on error"), until a timeout."""
    records: list[CellRecord | None] = [None] * len(cells)
    for index, source in enumerate(cells):
        try:
            records[index] = kernel.run_cell(source)
        except (TimeoutError, RuntimeError) as exc:
            return records, f"cell {index + 1}: {exc}"
    return records, None


@dataclass
class _Carry:
    """What comparing one cell leaves for the next."""

    reported: dict[str, set[str]] = field(default_factory=dict)  # per comparison
    namespaces: dict[str, set[str]] = field(default_factory=dict)  # per run, "name=digest"
    noisy: set[str] = field(default_factory=set)  # variables that differ between plain runs


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _compare(
    number: int,
    source: str,
    skipped: str | None,
    runs: Sequence[CellRecord | None],
    carry: _Carry,
) -> Finding:
    """Compare one cell across the four runs.

    Nondeterminism is what plain A and B disagree on, plus what a cell computes from a
    variable that was nondeterministic (a cell naming it in its source): an unseeded fit
    can land on equal-looking values in A and B and another one in run 1. A cell that hit
    is held to run 1 exactly for what it showed and for the variables run 1's cell bound.
    A namespace difference is reported at the cell where it appears, not at every later one.
    """
    plain_a, plain_b, one, two = runs
    finding = Finding(number, headline(source), skipped, "")
    if one is None or two is None or plain_a is None or plain_b is None:
        finding.errors.append("not run (an earlier cell timed out or killed the kernel)")
        return finding
    bound = {
        label: _changed_names(carry.namespaces.get(label, set()), record.namespace)
        for label, record in (("plain A", plain_a), ("run 1", one))
    }
    for label, record in (("plain A", plain_a), ("run 1", one)):
        carry.namespaces[label] = {f"{n}={d}" for n, d in record.namespace.items()}
    reads_noisy = bool(carry.noisy & set(_WORD.findall(source)))
    carry.noisy |= set(_namespace_diffs(plain_a.namespace, plain_b.namespace))
    if reads_noisy:
        carry.noisy |= bound["plain A"] | bound["run 1"]
    noisy_output = reads_noisy or bool(_output_diffs(plain_a.shown, plain_b.shown))

    finding.cache = two.cache if skipped is None else ""
    # NB. IPython prints a UsageError (an unknown %magic) to stderr, not as an error reply.
    finding.run1_raised = one.shown.error is not None or "UsageError: " in one.shown.stderr
    finding.explain = two.explain if two.cache == "miss" else ""
    finding.warnings = [*one.shown.warnings, *two.shown.warnings]

    hit = two.cache == "hit"
    # NB. Process state ("<os.environ>") is not what a hit restores: noise applies to it.
    strict = {name for name in bound["run 1"] if not name.startswith("<")} if hit else set()
    if hit and not two.shown.hit_notice:
        finding.hit_diffs.append("hit without the hit notice")
    for key, before, after, exact in (
        ("run 2", one, two, hit),
        ("run 1", plain_a, one, False),
    ):
        diffs = _output_diffs(before.shown, after.shown)
        if exact or not noisy_output:
            (finding.hit_diffs if key == "run 2" else finding.plain_diffs).extend(diffs)
        else:
            finding.noise += len(diffs)
        ns = _namespace_diffs(before.namespace, after.namespace)
        held = strict if key == "run 2" else set()
        real = {text for name, text in ns.items() if name not in carry.noisy or name in held}
        new = sorted(real - carry.reported.get(key, set()))
        (finding.hit_diffs if key == "run 2" else finding.plain_diffs).extend(new)
        carry.reported[key] = real
        finding.noise += len(ns) - len(real)

    for label, before, after in (("run 1", plain_a, one), ("run 2", one, two)):
        if after.shown.error is not None and after.shown.error != before.shown.error:
            finding.errors.append(
                f"{label} raised {after.shown.error} (before: {before.shown.error})"
            )
        if after.shown.traceback_in_funcache and not before.shown.traceback_in_funcache:
            finding.errors.append(f"{label}: funcache_ipy frames in the traceback")
    return finding


def _changed_names(before: set[str], after: dict[str, str]) -> set[str]:
    """Names bound or changed since ``before`` (a set of ``name=digest``)."""
    return {name for name, digest in after.items() if f"{name}={digest}" not in before}


def _output_diffs(first: Shown, second: Shown) -> list[str]:
    """How ``second`` shows differently from ``first``, one line per aspect."""
    diffs = []
    for aspect in ("error", "stdout", "stderr", "plain", "png", "html", "order"):
        a, b = getattr(first, aspect), getattr(second, aspect)
        if a != b:
            diffs.append(f"{aspect}: {_clip(a)} -> {_clip(b)}")
    return diffs


def _namespace_diffs(first: dict[str, str], second: dict[str, str]) -> dict[str, str]:
    """Variable -> how it differs (changed, only before, only after)."""
    diffs = {}
    for name in sorted(first.keys() | second.keys()):
        a, b = first.get(name), second.get(name)
        if a == b:
            continue
        if a is None:
            diffs[name] = f"`{name}` only after"
        elif b is None:
            diffs[name] = f"`{name}` only before"
        else:
            diffs[name] = f"`{name}` differs ({a} -> {b})"
    return diffs


def _clip(value: object, width: int = 160) -> str:
    """``repr(value)``, shortened to ``width`` characters for a table cell."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def format_notebook(audit: NotebookAudit) -> str:
    """A heading, the counts, and a table of the cells with something to report."""
    pct = f"{100 * audit.hits / audit.cached:.0f}%" if audit.cached else "-"
    counts = ", ".join(f"{k}: {v}" for k, v in audit.counts().items())
    times = ", ".join(f"{label} {s:.0f} s" for label, s in audit.seconds.items())
    lines = [
        f"### {Path(audit.path).name}",
        "",
        f"{audit.cells} code cells, {audit.cached} cached, run 2 hits {audit.hits} ({pct}); "
        f"{counts}. Times: {times}.",
    ]
    lines += [f"**{label} stopped early**: {why}" for label, why in audit.aborted.items()]
    skipped = [f"{f.number} ({f.skipped})" for f in audit.findings if f.skipped]
    if skipped:
        lines.append("Not cached: " + ", ".join(skipped) + ".")
    rows = []
    for f in audit.findings:
        if not f.interesting():
            continue
        what = [
            *(f"run2≠run1: {d}" for d in f.hit_diffs),
            *(f"run1≠plain: {d}" for d in f.plain_diffs),
            *(f"error: {e}" for e in f.errors),
            *(f"warning ({len(w)} chars): {_clip(w, 200)}" for w in f.warnings),
            *([f"{_miss_kind(f)}: {f.explain.replace(chr(10), ' ')}"] if f.cache == "miss" else []),
        ]
        rows.append([str(f.number), f.headline, f.cache or "-", "<br>".join(what)])
    if rows:
        lines += ["", table(["#", "cell", "run 2", "findings"], rows)]
    return "\n".join(lines)


def _miss_kind(finding: Finding) -> str:
    """How a run-2 miss is labelled in the table."""
    if finding.needless_miss:
        return "NEEDLESS MISS"
    return "miss (run 1 raised)" if finding.run1_raised else "miss (by design)"


def format_summary(audits: Iterable[NotebookAudit]) -> str:
    """One row per notebook: hit rate and the counts of ``NotebookAudit.counts``."""
    rows = []
    for audit in audits:
        c = audit.counts()
        rows.append(
            [
                Path(audit.path).name,
                str(audit.cells),
                str(audit.cached),
                f"{100 * audit.hits / audit.cached:.0f}%" if audit.cached else "-",
                *(str(v) for v in c.values()),
            ]
        )
    header = ["notebook", "cells", "cached", "hits", "run2≠run1", "≠plain", "needless"]
    return table([*header, "errors", "warned", "noise"], rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Audit the notebooks given on the command line; 1 if anything differs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per cell")
    parser.add_argument("--jobs", type=int, default=1, help="notebooks audited at once")
    parser.add_argument("--json", type=Path, help="also write the full results here")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.notebooks if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(audit_notebook, p, args.timeout) for p in args.notebooks]
        audits = []
        for future in futures:
            audit = future.result()
            print(format_notebook(audit), end="\n\n", flush=True)
            audits.append(audit)
    print("## Summary\n")
    print(format_summary(audits))
    if args.json is not None:
        payload = [dataclasses.asdict(audit) for audit in audits]
        args.json.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    clean = all(
        not any(f.hit_diffs or f.plain_diffs or f.errors for f in a.findings) for a in audits
    )
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
