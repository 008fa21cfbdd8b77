"""The progress bar shows on a terminal only, and never with --quiet."""

from __future__ import annotations

import io
import re

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


def _frame(p: RichProgress) -> list[str]:
    """The bar's current rows as a terminal of the bar's width shows them."""
    from rich.console import Group

    out = Console(file=io.StringIO(), width=p.console.width, color_system=None)
    out.print(Group(*p.bar.get_renderables()))
    return out.file.getvalue().splitlines()


def test_the_line_fits_80_columns_at_any_size():
    console, _ = _console(tty=True)
    console.width = 80
    p = RichProgress("scoring pairs", console=console)
    p.start(12_345_678)
    p.advance(1_234_567, 987_654_321)
    lines = _frame(p)
    p.stop()
    (line,) = lines  # one row, not wrapped
    assert len(line) <= 80
    assert "1.23M/12.3M" in line and "cand/s" in line and "tok/s" in line


def test_compact_counts():
    from codescaler_cli.cli.display import compact

    assert [compact(n) for n in (0, 7, 99_999, 100_000, 1_234_567, 12_345_678_901)] == [
        "0",
        "7",
        "99,999",
        "100k",
        "1.23M",
        "12.3G",
    ]
    assert compact(2.5) == "2.5"


def test_the_model_loading_row_has_no_counters_and_ends_when_loaded():
    console, _ = _console(tty=True)
    console.width = 80
    p = RichProgress("scoring", console=console)
    p.start(100)
    p.stage("loading model /a/path/that/is/rather/long/" + "x" * 80)
    loading = [ln for ln in _frame(p) if "loading model" in ln]
    assert len(loading) == 1 and len(loading[0]) <= 80
    assert re.search(r" \d+:\d\d:\d\d$", loading[0])  # its clock, and nothing else
    for meaningless in ("/?", "0/", "cand/s", "-:--:--", "━"):
        assert meaningless not in loading[0]
    p.stage_done()
    task = next(t for t in p.bar.tasks if t.fields.get("stage"))
    assert task.finished and task.finished_time is not None  # its clock stopped
    (done,) = [ln for ln in _frame(p) if "loading model" in ln]
    assert done.startswith("✓")
    p.stop()


def test_a_step_that_fails_gets_no_check_mark():
    console, buf = _console(tty=True)
    p = RichProgress("scoring", console=console)
    p.start(10)
    p.stage("loading model m")
    p.stop()  # the load raised: the run stops with the step unfinished
    assert "✓" not in buf.getvalue()


def test_the_local_engine_ends_the_loading_step_before_scoring(tiny_model_dir, tmp_path):
    from codescaler_cli.config import ModelOptions, RowOptions, RunOptions
    from codescaler_cli.engines.loop import run
    from codescaler_cli.io.inputs import resolve_inputs
    from codescaler_cli.progress import Progress

    class Recorder(Progress):
        def __init__(self) -> None:
            self.events: list[str] = []

        def stage(self, text: str) -> None:
            self.events.append("stage")

        def stage_done(self) -> None:
            self.events.append("stage_done")

        def advance(self, rows: int, tokens: int = 0) -> None:
            self.events.append("advance")

    src = tmp_path / "in.jsonl"
    src.write_text('{"question": "Add.", "response": "def f(a, b):\\n    return a + b"}\n')
    model = ModelOptions(model=str(tiny_model_dir), device="cpu", dtype="float32")
    opts = RunOptions(str(tmp_path / "out.jsonl"), RowOptions(), model)
    recorder = Recorder()
    run(resolve_inputs([str(src)]), opts, progress=recorder)
    # Two loading steps (the tokenizer at the first miss, the weights at the first pass),
    # each ended before the first candidate is counted.
    assert recorder.events[:5] == ["stage", "stage_done", "stage", "stage_done", "advance"]
