"""Human output on stderr: a rich progress bar and end-of-run summary tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
)
from rich.progress import Progress as RichBar
from rich.table import Column, Table
from rich.text import Text

from ..progress import Progress, RunSummary

stderr = Console(stderr=True, highlight=False)


def compact(n: float) -> str:
    """A count in about 6 characters: exact below 100,000 (``12,345``), else 3 significant
    digits (``123k``, ``1.23M``), so the progress line fits 80 columns at any size."""
    if abs(n) < 100_000:
        return f"{n:,.0f}" if n >= 10 or n == int(n) else f"{n:.1f}"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            v = n / scale
            digits = 0 if v >= 100 else 1 if v >= 10 else 2
            return f"{v:.{digits}f}{unit}"
    return f"{n:,.0f}"  # pragma: no cover - caught by the first branch


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


def _fixed() -> Column:
    # Text that never wraps: when the line is short of room, the bar gives it up instead.
    return Column(no_wrap=True)


class _Count(ProgressColumn):
    """Candidates done, of how many when known."""

    def __init__(self) -> None:
        super().__init__(table_column=_fixed())

    def render(self, task: Task) -> Text:
        done = compact(task.completed)
        text = done if task.total is None else f"{done}/{compact(task.total)}"
        return Text(text, style="progress.download")


class _Rates(ProgressColumn):
    """candidates/s and tokens/s since the first candidate (loading the model left out)."""

    def __init__(self) -> None:
        super().__init__(table_column=_fixed())

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        if elapsed <= 0:
            return Text("")
        tokens = task.fields.get("tokens", 0)
        rates = f"{compact(task.completed / elapsed)} cand/s  {compact(tokens / elapsed)} tok/s"
        return Text(rates, style="cyan")


class _Time(ProgressColumn):
    """Time left while it can be estimated; the time taken once done or when the total is
    unknown (one clock, not two, so the line fits 80 columns)."""

    def __init__(self) -> None:
        super().__init__(table_column=_fixed())

    def render(self, task: Task) -> Text:
        if task.finished or task.total is None:
            return Text(_clock(task.finished_time or task.elapsed), style="progress.elapsed")
        return Text(_clock(task.time_remaining), style="progress.remaining")


class _Bar(RichBar):
    """Scoring rows with every column; a stage row (loading the model) with only a spinner,
    its text and its time: a stage has nothing to count and no end to estimate."""

    def __init__(self, *columns: ProgressColumn, **kwargs: Any) -> None:
        # The text takes what the line leaves and is cut there (a model's path can be long).
        text = Column(ratio=1, no_wrap=True, overflow="ellipsis")
        self.stage_columns: tuple[ProgressColumn, ...] = (
            SpinnerColumn(finished_text="[green]✓"),
            TextColumn("{task.description}", markup=False, table_column=text),
            _Time(),
        )
        super().__init__(*columns, **kwargs)

    def get_renderables(self) -> Iterable[RenderableType]:
        stages = [t for t in self.tasks if t.fields.get("stage")]
        if stages:
            table = self._table(self.stage_columns, stages, expand=True)
            # As wide as its longest text needs (spinner, clock), at most the terminal.
            longest = max(len(t.description) for t in stages)
            table.width = min(longest + 12, self.console.width)
            yield table
        yield self._table(self.columns, [t for t in self.tasks if not t.fields.get("stage")])

    def _table(self, columns: Sequence[Any], tasks: list[Task], expand: bool = False) -> Table:
        table = Table.grid(
            *(c.get_table_column().copy() for c in columns), padding=(0, 1), expand=expand
        )
        for task in tasks:
            if task.visible:
                table.add_row(*(column(task) for column in columns))
        return table


class RichProgress(Progress):
    """A progress bar on stderr; silent (messages only) when stderr is not a terminal."""

    def __init__(self, label: str, *, quiet: bool = False, console: Console | None = None) -> None:
        self.console = console or stderr
        self.quiet = quiet
        self.label = label
        self.bar: RichBar | None = None
        self.task: Any = None
        self.stage_task: Any = None
        self.scoring = False
        self.tokens = 0

    def start(self, total: int | None) -> None:
        if self.quiet or not self.console.is_terminal:
            return
        self.bar = _Bar(
            SpinnerColumn(finished_text="[green]✓"),
            TextColumn("[bold]{task.description}", table_column=_fixed()),
            BarColumn(bar_width=None, table_column=Column(max_width=40)),  # what is left
            _Count(),
            _Rates(),
            _Time(),
            console=self.console,
            transient=False,
        )
        self.bar.start()
        # Started on the first candidates, so the rates leave out loading the model.
        self.task = self.bar.add_task(self.label, total=total, tokens=0, start=False)

    def stage(self, text: str) -> None:
        """A step before scoring (loading the model): its own row until :meth:`stage_done`."""
        if self.bar is None:
            self.message(text)
            return
        self.stage_done()
        self.stage_task = self.bar.add_task(text, total=None, stage=True)

    def stage_done(self) -> None:
        """The step ended: its row stays, with a check mark and the time it took."""
        if self.bar is not None and self.stage_task is not None:
            self.bar.update(self.stage_task, total=1, completed=1)
            self.bar.stop_task(self.stage_task)
            self.stage_task = None

    def advance(self, rows: int, tokens: int = 0) -> None:
        self.tokens += tokens
        if self.bar is not None:
            self.stage_done()
            if not self.scoring:
                self.scoring = True
                self.bar.start_task(self.task)
            self.bar.update(self.task, advance=rows, tokens=self.tokens)

    def message(self, text: str) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.console.print(f"[dim]{text}[/dim]")
        else:
            self.console.print(text, markup=False, soft_wrap=True)

    def stop(self) -> None:
        if self.bar is not None:
            if self.stage_task is not None:  # the step failed: no check mark for it
                self.bar.remove_task(self.stage_task)
                self.stage_task = None
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
    if summary.cached:
        share = 100.0 * summary.cached / summary.rows_written if summary.rows_written else 0.0
        rows.append(("from cache", f"{summary.cached:,} ({share:.1f}%)"))
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


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100.0 * x:.1f}%"


def print_selection_metrics(
    m: Any, group_field: str, label_field: str | None, console: Console | None = None
) -> None:
    console = console or stderr
    t = Table(
        title=f"rerank: {m.groups} groups (by {group_field}), {m.candidates} candidates",
        title_justify="left",
        show_header=False,
        box=None,
    )
    t.add_column(style="bold")
    t.add_column(justify="right")
    t.add_row("selected", f"{m.selected:,}")
    t.add_row("selected mean reward", f"{m.selected_mean_reward:.4f}")
    if m.selected_mean_score is not None:
        t.add_row("selected mean score", f"{m.selected_mean_score:.4f}")
    t.add_row("selected with valid code", _pct(m.selected_valid_fraction))
    if m.labelled:
        t.add_row(f"best-of-N accuracy ({label_field})", _pct(m.best_of_n_accuracy))
        t.add_row("random pick (expected)", _pct(m.random_accuracy))
        t.add_row("oracle (any passes)", _pct(m.oracle_accuracy))
    console.print(t)
    if m.labelled and len(m.per_group) <= 50:
        g = Table(title="per group", title_justify="left", box=None)
        for col in ("group", "size", "top-1 reward", "top-1 passed", "random", "oracle"):
            g.add_column(col, justify="left" if col == "group" else "right")
        for gm in m.per_group:
            g.add_row(
                gm.group[:40],
                str(gm.size),
                f"{gm.top1_reward or 0.0:.3f}",
                "-" if gm.top1_passed is None else ("yes" if gm.top1_passed else "no"),
                _pct(gm.random_accuracy),
                "-" if gm.oracle is None else ("yes" if gm.oracle else "no"),
            )
        console.print(g)


def print_pair_metrics(m: Any, console: Console | None = None) -> None:
    console = console or stderr
    t = Table(title="eval-pairs", title_justify="left", show_header=False, box=None)
    t.add_column(style="bold")
    t.add_column(justify="right")
    t.add_row("pairs", f"{m.pairs:,}")
    t.add_row("accuracy (chosen > rejected)", _pct(m.accuracy))
    t.add_row("ties", str(m.ties))
    t.add_row("pairs with an unscored side", str(m.unscored))
    if m.mean_margin is not None:
        t.add_row("mean margin", f"{m.mean_margin:.4f}")
    console.print(t)
