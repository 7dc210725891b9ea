"""Record what a cell prints and displays while it shows live, and replay it on a hit.

A cached cell must look the same on a hit as on a run: its printed text and rich
displays (tables, plots, HTML) come back in their original order. Recording cannot
cost the live view, so output is teed rather than swallowed, and the display publisher
is shadowed on the instance rather than swapped, because kernels, widgets and
``IPython.display`` hold on to that very object.

The publisher is handed in by :mod:`funcache_ipy.magics`; this module never imports IPython.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

__all__ = [
    "DisplayOutput",
    "DisplayPublisher",
    "Output",
    "OutputCapture",
    "StreamOutput",
    "flush_inline_figures",
    "replay_outputs",
]

_WIDGET_MIME = "application/vnd.jupyter.widget-view+json"  # live widget views cannot be replayed


class DisplayPublisher(Protocol):
    """The part of IPython's display publisher that capture and replay use."""

    def publish(
        self, data: dict[str, Any], metadata: dict[str, Any] | None = None, **kwargs: Any
    ) -> None: ...

    def clear_output(self, wait: bool = False) -> None: ...


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
        sys.stdout = _Tee(sys.stdout, lambda text: self._text("stdout", text))
        sys.stderr = _Tee(sys.stderr, lambda text: self._text("stderr", text))
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


def flush_inline_figures() -> None:
    """Show pending inline matplotlib figures now, while the output is still captured.

    IPython shows them from a ``post_execute`` hook, after the magic has returned, which
    would leave them out of the stored output; afterwards that hook finds nothing to show.
    """
    backend = sys.modules.get("matplotlib_inline.backend_inline")
    if backend is not None:
        backend.flush_figures()
