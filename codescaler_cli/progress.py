"""Human output on stderr: a rich progress bar and end-of-run summary tables."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichBar
from rich.table import Table
from rich.text import Text

from .pipeline import Progress, RunSummary

stderr = Console(stderr=True, highlight=False)


class _Rates(ProgressColumn):
    """candidates/s and tokens/s since the start of scoring."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        if elapsed <= 0:
            return Text("")
        tokens = task.fields.get("tokens", 0)
        return Text(f"{task.completed / elapsed:,.1f} cand/s  {tokens / elapsed:,.0f} tok/s", style="cyan")


class RichProgress(Progress):
    """A progress bar on stderr; silent (messages only) when stderr is not a terminal."""

    def __init__(self, label: str, *, quiet: bool = False, console: Console | None = None) -> None:
        self.console = console or stderr
        self.quiet = quiet
        self.label = label
        self.bar: RichBar | None = None
        self.task: Any = None
        self.tokens = 0
        self.started = time.perf_counter()

    def start(self, total: int | None) -> None:
        if self.quiet or not self.console.is_terminal:
            return
        self.bar = RichBar(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _Rates(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.bar.start()
        self.task = self.bar.add_task(self.label, total=total, tokens=0)

    def advance(self, rows: int, tokens: int = 0) -> None:
        self.tokens += tokens
        if self.bar is not None:
            self.bar.update(self.task, advance=rows, tokens=self.tokens)

    def message(self, text: str) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.console.print(f"[dim]{text}[/dim]")
        else:
            self.console.print(text, markup=False)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def print_summary(summary: RunSummary, title: str, console: Console | None = None) -> None:
    console = console or stderr
    table = Table(title=title, show_header=False, title_justify="left", box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [
        ("rows read", f"{summary.rows_read:,}"),
        ("rows written", f"{summary.rows_written:,}"),
    ]
    if summary.scored or summary.unique_scored:
        rows += [
            ("scored", f"{summary.scored:,}"),
            ("deduplicated", f"{summary.deduplicated:,}"),
            ("truncated", f"{summary.truncated:,}"),
        ]
    valid = summary.rows_written - summary.invalid
    pct = 100.0 * valid / summary.rows_written if summary.rows_written else 0.0
    rows += [
        ("valid code", f"{valid:,} ({pct:.1f}%)"),
        ("invalid / no code", f"{summary.invalid:,}"),
        ("rejected rows", f"{summary.rejected:,}"),
    ]
    if summary.chunks_resumed:
        rows.append(("chunks resumed", f"{summary.chunks_resumed} of {summary.chunks}"))
    rows += [
        ("time", f"{summary.seconds:.1f} s"),
        ("rows/s", f"{summary.rows_per_second:,.1f}"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    if summary.methods:
        methods = Table(title="extraction methods", title_justify="left", box=None)
        methods.add_column("method")
        methods.add_column("rows", justify="right")
        methods.add_column("%", justify="right")
        total = sum(summary.methods.values())
        for m, n in sorted(summary.methods.items(), key=lambda kv: -kv[1]):
            methods.add_row(m, f"{n:,}", f"{100.0 * n / total:.1f}")
        console.print(methods)
    if summary.rejected_path:
        console.print(f"rejected rows written to {summary.rejected_path}", markup=False)


def is_tty() -> bool:
    return sys.stderr.isatty()
