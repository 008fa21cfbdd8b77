"""Interruptions and streaming: kill -9 mid-run, rerun, same output; memory stays flat."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]


def _write_input(path: Path, n: int, payload: int = 0) -> None:
    with path.open("w") as fh:
        for i in range(n):
            row = {
                "problem_id": f"p{i // 4}",
                "question": f"Problem {i // 4}: return the sum of the first {i // 4} squares.",
                "response": f"```python\ndef f(n):\n    return sum(k * k for k in range({i}))\n```",
            }
            if payload:
                row["payload"] = "x" * payload
            fh.write(json.dumps(row) + "\n")


def _cmd(src: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "codescaler_cli",
        "score",
        str(src),
        "-o",
        str(out),
        "--model",
        str(model),
        "--device",
        "cpu",
        "-q",
        *extra,
    ]


def test_sigkill_then_resume_gives_identical_output(tiny_model_dir, tmp_path):
    src = tmp_path / "in.jsonl"
    _write_input(src, 240)
    opts = ("--chunk-size", "30", "--max-tokens-per-batch", "300", "--no-prefix-reuse")
    # Reference: one uninterrupted run.
    ref_out = tmp_path / "ref.parquet"
    subprocess.run(_cmd(src, ref_out, tiny_model_dir, *opts), check=True, timeout=600)

    out = tmp_path / "out.parquet"
    partial = Path(str(out) + ".partial")
    proc = subprocess.Popen(_cmd(src, out, tiny_model_dir, *opts), start_new_session=True)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            assert not out.exists(), "final output appeared before the run completed"
            parts = list(partial.glob("part-*.parquet")) if partial.exists() else []
            if len(parts) >= 2:
                break
            assert proc.poll() is None, (
                "run finished before it could be interrupted; make it longer"
            )
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not out.exists()
    done_before = len(list(partial.glob("part-*.parquet")))
    assert 2 <= done_before < 8

    summary = tmp_path / "summary.json"
    proc = subprocess.Popen(_cmd(src, out, tiny_model_dir, *opts, "--summary-json", str(summary)))
    while proc.poll() is None:
        # Never a partial file at the final path: it appears complete or not at all.
        if out.exists():
            assert pq.read_metadata(out).num_rows == 240
        time.sleep(0.02)
    assert proc.returncode == 0
    assert not partial.exists()
    data = json.loads(summary.read_text())
    assert data["chunks_resumed"] == done_before
    assert data["chunks"] == 8
    # Only the remaining chunks went through the model.
    assert data["unique_scored"] == 240  # counts resumed rows too
    assert pq.read_table(out).equals(pq.read_table(ref_out))
    assert pq.read_schema(out).metadata == pq.read_schema(ref_out).metadata


def test_changed_option_starts_over(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from codescaler_cli.checkpoint import PartialRun
    from codescaler_cli.cli import app

    src = tmp_path / "in.jsonl"
    _write_input(src, 20)
    out = tmp_path / "out.parquet"
    # A stale partial run with a different fingerprint must be discarded, with a message.
    stale = PartialRun(str(out), {"inputs": "something else"})
    stale.open("auto")
    pq.write_table(pa.table({"bogus": [1]}), stale.part_path(0))
    r = CliRunner().invoke(
        app,
        [
            "score",
            str(src),
            "-o",
            str(out),
            "--model",
            str(tiny_model_dir),
            "--device",
            "cpu",
            "--chunk-size",
            "10",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "starting over" in r.stderr
    t = pq.read_table(out)
    assert t.num_rows == 20 and "bogus" not in t.column_names


def test_forward_calls_skip_finished_chunks(tiny_model_dir, tmp_path):
    """Resume reuses finished parts: a run with all parts present never loads the model."""
    from codescaler_cli.io import resolve_inputs
    from codescaler_cli.model import ModelOptions
    from codescaler_cli.pipeline import PipelineOptions
    from codescaler_cli.runner import RunConfig, run_job

    src = tmp_path / "in.jsonl"
    _write_input(src, 40)
    out = tmp_path / "out.parquet"
    cfg = RunConfig(
        output=str(out),
        pipeline=PipelineOptions(),
        model=ModelOptions(model=str(tiny_model_dir), device="cpu"),
        chunk_size=10,
    )
    specs = resolve_inputs([str(src)])

    class Crash(Exception):
        pass

    import codescaler_cli.runner as runner_mod

    real = runner_mod.prepare_chunk
    seen = []

    def crash_on_third(chunk, *a, **k):
        if chunk.index == 2:
            raise Crash()
        seen.append(chunk.index)
        return real(chunk, *a, **k)

    runner_mod.prepare_chunk = crash_on_third
    try:
        with pytest.raises(Crash):
            run_job(specs, cfg)
    finally:
        runner_mod.prepare_chunk = real
    assert seen == [0, 1] and not out.exists()
    scored_again = []

    def count(chunk, *a, **k):
        scored_again.append(chunk.index)
        return real(chunk, *a, **k)

    runner_mod.prepare_chunk = count
    try:
        summary = run_job(specs, cfg)
    finally:
        runner_mod.prepare_chunk = real
    assert scored_again == [2, 3]
    assert summary.chunks_resumed == 2 and summary.rows_written == 40


def _peak_rss_mb(args: list[str]) -> float:
    code = (
        "import resource, subprocess, sys\n"
        f"subprocess.run({args!r}, check=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    return float(proc.stdout.strip().splitlines()[-1])


def test_peak_memory_does_not_grow_with_rows(tiny_model_dir, tmp_path):
    """4x the rows (each carrying 16 KB of pass-through data) must not raise peak RSS:
    rows stream through in chunks, and the final merge streams the parts."""
    small, big = tmp_path / "small.jsonl", tmp_path / "big.jsonl"
    _write_input(small, 1000, payload=16384)
    _write_input(big, 4000, payload=16384)  # ~66 MB of input
    opts = ["--chunk-size", "250", "--no-prefix-reuse"]
    rss_small = _peak_rss_mb(_cmd(small, tmp_path / "s.parquet", tiny_model_dir, *opts))
    rss_big = _peak_rss_mb(_cmd(big, tmp_path / "b.parquet", tiny_model_dir, *opts))
    assert pq.read_metadata(tmp_path / "b.parquet").num_rows == 4000
    # Loading all rows would add ~66 MB of Python strings (several times that as dicts/Arrow).
    assert rss_big < rss_small + 40, (rss_small, rss_big)
