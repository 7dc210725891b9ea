"""Capture and replay of a cell's output (``funcache_ipy.capture``).

A stand-in publisher plays IPython's display publisher; the magic end to end is tested
through IPython in ``test_magics.py``.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

from funcache_ipy.capture import DisplayOutput, OutputCapture, StreamOutput, show_outputs


class Publisher:
    """Stands in for IPython's terminal display publisher, which prints text/plain."""

    def __init__(self) -> None:
        self.shown: list[Any] = []

    def publish(self, data: dict, metadata: dict | None = None, **kwargs: Any) -> None:
        self.shown.append((data, metadata, kwargs))
        print(data.get("text/plain", ""))

    def clear_output(self, wait: bool = False) -> None:
        self.shown.append(("clear", wait))


def test_capture_records_in_order_while_output_stays_live(
    capsys: pytest.CaptureFixture,
) -> None:
    publisher = Publisher()
    stdout = sys.stdout
    with OutputCapture(publisher) as capture:
        print("a")
        sys.stdout.writelines(["b\n", "c\n"])
        print("warn", file=sys.stderr)
        publisher.publish({"text/html": "<i>x</i>", "text/plain": "x"}, {"k": 1}, transient={})
        print("d")
    assert sys.stdout is stdout and "publish" not in vars(publisher)
    assert capture.outputs == (
        StreamOutput("stdout", "a\nb\nc\n"),
        StreamOutput("stderr", "warn\n"),
        DisplayOutput({"text/html": "<i>x</i>", "text/plain": "x"}, {"k": 1}, {}, False),
        StreamOutput("stdout", "d\n"),
    )
    live = capsys.readouterr()
    assert (live.out, live.err) == ("a\nb\nc\nx\nd\n", "warn\n")
    assert len(publisher.shown) == 1, "the display went through to the publisher"


def test_clear_output_drops_what_it_clears_and_widgets_are_not_recorded() -> None:
    publisher = Publisher()
    with OutputCapture(publisher) as capture:
        print("10%")
        publisher.clear_output()
        print("50%")
        publisher.clear_output(wait=True)
        publisher.publish({"application/vnd.jupyter.widget-view+json": {"model_id": "1"}})
        print("100%")
        publisher.publish({"application/vnd.jupyter.widget-view+json": {}, "text/plain": "Bar"})
    assert capture.outputs == (
        StreamOutput("stdout", "100%\n"),
        DisplayOutput({"text/plain": "Bar"}, {}),
    )
    assert ("clear", False) in publisher.shown and ("clear", True) in publisher.shown


def test_replay_shows_outputs_in_order(capsys: pytest.CaptureFixture) -> None:
    publisher = Publisher()
    outputs = [
        StreamOutput("stdout", "first\n"),
        DisplayOutput({"text/plain": "shown"}, {}, {"display_id": "d1"}),
        DisplayOutput({"text/plain": "updated"}, {}, {"display_id": "d1"}, update=True),
        StreamOutput("stderr", "late\n"),
    ]
    show_outputs(outputs, publisher)
    assert [kwargs for _, _, kwargs in publisher.shown] == [
        {"transient": {"display_id": "d1"}},
        {"transient": {"display_id": "d1"}, "update": True},
    ]
    replayed = capsys.readouterr()
    assert (replayed.out, replayed.err) == ("first\nshown\nupdated\n", "late\n")
