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
import functools
import html
import re
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

__all__ = [
    "DisplayOutput",
    "DisplayPublisher",
    "Output",
    "OutputCapture",
    "StreamOutput",
    "load_figure_backend",
    "replay_outputs",
    "show_outputs",
    "shown_while_slow",
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
    after_result: bool = False  # a figure the inline backend shows after ``Out[n]``


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
        self._holding_back = False  # recording figures to show after Out[n]: not shown now
        self._saved: dict[str, object] = {}
        self._streams: tuple[TextIO, TextIO] | None = None
        self._widgets: list[tuple[DisplayOutput, str]] = []  # displays of live widgets

    @property
    def outputs(self) -> tuple[Output, ...]:
        """What was recorded so far, in order; widgets as the text of their state now."""
        final = {id(display): _widget_text(model_id) for display, model_id in self._widgets}
        recorded: list[Output] = []
        for item in self._items:
            if isinstance(item, tuple):
                recorded.append(StreamOutput(item[0], "".join(item[1])))
            elif id(item) not in final:
                recorded.append(item)
            elif (text := final[id(item)]) is not None:  # None: closed, shown no more
                recorded.append(DisplayOutput({"text/plain": text}, {}, None, item.update))
        return tuple(recorded)

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
                held = self._holding_back
                display = DisplayOutput(shown, dict(metadata or {}), transient, update, held)
                self._record(display)
                view = data.get(_WIDGET_MIME)
                if isinstance(view, dict) and isinstance(view.get("model_id"), str):
                    self._widgets.append((display, view["model_id"]))
            if self._holding_back:
                return
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

    def flush_figures(self) -> tuple[DisplayOutput, ...]:
        """Record the pending inline matplotlib figures without showing them yet.

        IPython's inline backend shows them from a ``post_execute`` hook, after the magic
        has returned and ``Out[n]`` is shown, which would leave them out of the record.
        So they are flushed into it now, and the caller shows them after ``Out[n]``, as
        a plain run would: a figure above the cell's value is not what the run showed.

        Returns:
            The figures, to show once ``Out[n]`` is.
        """
        backend = sys.modules.get("matplotlib_inline.backend_inline")
        if backend is None:
            return ()
        recorded = len(self._items)
        self._holding_back = True
        try:
            backend.flush_figures()
        finally:
            self._holding_back = False
        return tuple(o for o in self._items[recorded:] if isinstance(o, DisplayOutput))

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


def _widget_text(model_id: str) -> str | None:
    """What a live ipywidgets widget shows now, as text: a replayed view of it would be
    dead (its model is gone after a restart), frozen at the state it was displayed in
    (tqdm's bar at 0%). ``None`` once the widget is closed (a frontend removes it)."""
    module = sys.modules.get("ipywidgets.widgets.widget")
    instances = getattr(module, "_instances", None)
    widget = instances.get(model_id) if isinstance(instances, dict) else None
    return None if widget is None else _text_of(widget)


def _text_of(widget: Any) -> str:
    """``100%|██████████| 100/100 [00:01<00:00]`` for tqdm's box of HTML, bar and HTML."""
    children = getattr(widget, "children", None)
    if isinstance(children, (tuple, list)):
        return "".join(_text_of(child) for child in children)
    value, top = getattr(widget, "value", None), getattr(widget, "max", None)
    if "Progress" in type(widget).__name__ and isinstance(value, (int, float)) and top:
        filled = max(0, min(_BAR, round(_BAR * value / top)))
        return f"|{'█' * filled}{' ' * (_BAR - filled)}|"
    if isinstance(value, str):
        # NB. tqdm pads with figure spaces (U+2007), for aligned HTML; text wants spaces
        return html.unescape(_TAG.sub("", value)).replace("\u2007", " ")
    description = getattr(widget, "description", None)
    return description if isinstance(description, str) else ""


_BAR = 10  # characters in a replayed progress bar, as tqdm's text bar
_TAG = re.compile(r"<[^>]*>")


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


def replay_outputs(
    outputs: Iterable[Output],
    publisher: DisplayPublisher,
    after_result: Callable[[Callable[[], None]], None],
) -> None:
    """Show recorded outputs again as the run showed them.

    Args:
        after_result: runs a callback once ``Out[n]`` is shown; figures the inline
            backend showed after it (``DisplayOutput.after_result``) are shown there.
    """
    outputs = list(outputs)
    show_outputs([o for o in outputs if not _after_result(o)], publisher)
    figures = [o for o in outputs if _after_result(o)]
    if figures:
        after_result(functools.partial(show_outputs, figures, publisher))


def _after_result(output: Output) -> bool:
    return isinstance(output, DisplayOutput) and output.after_result


def show_outputs(outputs: Iterable[Output], publisher: DisplayPublisher) -> None:
    """Show recorded outputs, in their order.

    NB. Each piece of text is flushed before the next: a kernel buffers stdout and
    stderr apart and would send all of one before the other, losing their order.
    """
    for output in outputs:
        if isinstance(output, StreamOutput):
            stream = sys.stdout if output.name == "stdout" else sys.stderr
            stream.write(output.text)
            stream.flush()
            continue
        extra: dict[str, Any] = {}
        if output.transient:
            extra["transient"] = output.transient
        if output.update:
            extra["update"] = True
        publisher.publish(output.data, output.metadata, **extra)
    sys.stdout.flush()
    sys.stderr.flush()


def load_figure_backend(outputs: Iterable[Output], values: Iterable[object]) -> None:
    """Set matplotlib's backend up as a run that made figures would have.

    pyplot loads its backend when the first figure is made; the inline backend then
    registers the formatters that show a ``Figure`` as an image. A hit makes no figure,
    so without this a later cell showing ``fig`` after a restart printed
    ``<Figure size ...>``. Done only when pyplot is imported (matplotlib is never
    imported here) and the cell showed an image or restores a matplotlib object.
    """
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return
    showed_image = any(
        isinstance(o, DisplayOutput) and any(m.startswith("image/") for m in o.data)
        for o in outputs
    )
    if showed_image or any(type(v).__module__.startswith("matplotlib.") for v in values):
        pyplot._get_backend_mod()  # NB. what pyplot itself calls for a first figure


SLOW_SECONDS = 1.0  # a restore taking longer says what it is doing


@contextlib.contextmanager
def shown_while_slow(publisher: DisplayPublisher, text: Callable[[], str]) -> Iterator[None]:
    """Show ``text()`` while the block runs, if it runs longer than :data:`SLOW_SECONDS`.

    A transient display (a ``display_id`` updated to nothing afterwards), so it is not
    part of the cell's output: a long restore says what it is doing, a quick one says
    nothing. Shown from a timer thread: the block keeps the main thread busy.
    """
    display_id = f"funcache-{uuid.uuid4().hex}"
    shown = threading.Event()

    def show() -> None:
        with contextlib.suppress(Exception):  # NB. a notice must never break the restore
            publisher.publish({"text/plain": text()}, {}, transient={"display_id": display_id})
            shown.set()

    timer = threading.Timer(SLOW_SECONDS, show)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join()
        if shown.is_set():
            transient = {"display_id": display_id}
            publisher.publish({"text/plain": ""}, {}, transient=transient, update=True)
