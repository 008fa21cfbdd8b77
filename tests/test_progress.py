"""The progress bar shows on a terminal only, and never with --quiet."""

from __future__ import annotations

import io

from rich.console import Console

from codescaler_cli.cli.display import RichProgress, print_summary
from codescaler_cli.progress import RunSummary


def _console(tty: bool) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=tty, width=120), buf


def test_bar_on_a_terminal_shows_rates():
    console, buf = _console(tty=True)
    p = RichProgress("scoring", console=console)
    p.start(10)
    p.advance(4, 1000)
    p.advance(6, 500)
    p.stop()
    text = buf.getvalue()
    assert "scoring" in text and "10/10" in text and "cand/s" in text and "tok/s" in text


def test_no_bar_when_not_a_terminal_but_messages_still_print():
    console, buf = _console(tty=False)
    p = RichProgress("scoring", console=console)
    p.start(10)
    p.advance(10, 100)
    p.message("resuming: 2 finished chunk(s)")
    p.stop()
    assert buf.getvalue() == "resuming: 2 finished chunk(s)\n"


def test_quiet_prints_nothing():
    console, buf = _console(tty=True)
    p = RichProgress("scoring", quiet=True, console=console)
    p.start(3)
    p.advance(3, 10)
    p.message("hello")
    p.stop()
    assert buf.getvalue() == ""


def test_summary_table():
    console, buf = _console(tty=False)
    s = RunSummary(
        rows_read=10,
        rows_written=9,
        scored=8,
        unique_scored=7,
        deduplicated=1,
        invalid=2,
        rejected=1,
        seconds=2.0,
        methods={"fence:python": 7, "none": 2},
    )
    print_summary(s, "codescaler score", console=console)
    text = buf.getvalue()
    for needle in (
        "rows read",
        "10",
        "deduplicated",
        "valid code",
        "7 (77.8%)",
        "rejected rows",
        "fence:python",
        "rows/s",
        "5.0",
    ):
        assert needle in text, needle
