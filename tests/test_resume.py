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


HOOKED = REPO / "tests" / "support" / "hooked_cli.py"


def _cmd(src: Path, out: Path, model: Path, *extra: str, hooked: bool = False) -> list[str]:
    entry = [str(HOOKED)] if hooked else ["-m", "codescaler_cli"]
    return [
        sys.executable,
        *entry,
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


def _logged_run(args: list[str], monkeypatch) -> tuple[dict[int, int], object]:
    """``codescaler score ARGS`` in this process, with each chunk's forward passes."""
    from typer.testing import CliRunner

    from codescaler_cli.cli import app
    from codescaler_cli.engines import local

    real, passes = local.finish_chunk, {}

    def finish_chunk(prepared, options, scorer, *a, **k):
        before = scorer.rm.forward_calls
        result = real(prepared, options, scorer, *a, **k)
        passes[prepared.chunk.index] = scorer.rm.forward_calls - before
        return result

    monkeypatch.setattr(local, "finish_chunk", finish_chunk)
    result = CliRunner().invoke(app, ["score", *args])
    assert result.exit_code == 0, result.output
    monkeypatch.setattr(local, "finish_chunk", real)
    return passes, result


def test_sigkill_then_resume_gives_identical_output(tiny_model_dir, tmp_path, monkeypatch):
    src = tmp_path / "in.jsonl"
    _write_input(src, 120)
    # --no-cache: the resumed run must run the other chunks' passes again (counted below).
    opts = (
        "--chunk-size",
        "15",
        "--max-tokens-per-batch",
        "300",
        "--no-prefix-reuse",
        "--no-cache",
    )
    common = ["--model", str(tiny_model_dir), "--device", "cpu", "-q", *opts]
    # Reference: one uninterrupted run, with each chunk's forward passes.
    ref_out = tmp_path / "ref.parquet"
    per_chunk, _ = _logged_run([str(src), "-o", str(ref_out), *common], monkeypatch)
    assert sorted(per_chunk) == list(range(8))

    # A run that blocks after its 2nd checkpointed chunk, signals, and is killed there.
    out = tmp_path / "out.parquet"
    partial = Path(str(out) + ".partial")
    signal_file = tmp_path / "two-chunks-done"
    env = {
        **os.environ,
        "CODESCALER_TEST_BLOCK_AFTER": "2",
        "CODESCALER_TEST_SIGNAL": str(signal_file),
    }
    cmd = _cmd(src, out, tiny_model_dir, *opts, hooked=True)
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not signal_file.exists():
            assert proc.poll() is None, "the run ended before its 2nd chunk was checkpointed"
            assert time.monotonic() < deadline, "no chunk checkpointed within 300 s"
            time.sleep(0.05)
        assert not out.exists(), "final output appeared before the run completed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    done_before = sorted(int(p.name[5:11]) for p in partial.glob("part-*.parquet"))
    assert len(done_before) >= 2 and not out.exists()

    summary = tmp_path / "summary.json"
    args = [str(src), "-o", str(out), *common, "--summary-json", str(summary)]
    rerun, _ = _logged_run(args, monkeypatch)
    assert not partial.exists()
    data = json.loads(summary.read_text())
    assert data["chunks_resumed"] == len(done_before) and data["chunks"] == 8
    # Only the other chunks went through the model, each with its own passes again.
    assert sorted(rerun) == [i for i in range(8) if i not in done_before]
    assert data["forward_calls"] == sum(per_chunk[i] for i in rerun) == sum(rerun.values())
    assert pq.read_table(out).equals(pq.read_table(ref_out))
    assert pq.read_schema(out).metadata == pq.read_schema(ref_out).metadata


def test_changed_option_starts_over(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from codescaler_cli.cli import app
    from codescaler_cli.io.checkpoint import PartialRun

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


def test_finished_chunks_are_not_prepared_again(tiny_model_dir, tmp_path, monkeypatch):
    """A crash after two chunks; the rerun prepares only the other two."""
    from codescaler_cli.config import ModelOptions, RunOptions
    from codescaler_cli.engines import local
    from codescaler_cli.engines.loop import run
    from codescaler_cli.io.inputs import resolve_inputs

    src = tmp_path / "in.jsonl"
    _write_input(src, 40)
    out = tmp_path / "out.parquet"
    opts = RunOptions(
        output=str(out), model=ModelOptions(model=str(tiny_model_dir), device="cpu"), chunk_size=10
    )
    specs = resolve_inputs([str(src)])

    class Crash(Exception):
        pass

    real = local.prepare_chunk
    seen = []

    def crash_on_third(chunk, *a, **k):
        if chunk.index == 2:
            raise Crash()
        seen.append(chunk.index)
        return real(chunk, *a, **k)

    monkeypatch.setattr(local, "prepare_chunk", crash_on_third)
    with pytest.raises(Crash):
        run(specs, opts)
    assert seen == [0, 1] and not out.exists()
    scored_again = []

    def count(chunk, *a, **k):
        scored_again.append(chunk.index)
        return real(chunk, *a, **k)

    monkeypatch.setattr(local, "prepare_chunk", count)
    summary = run(specs, opts)
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
    """4x the rows (each carrying 64 KB of pass-through data) must not raise peak RSS:
    rows stream through in chunks, and the final merge streams the parts."""
    small, big = tmp_path / "small.jsonl", tmp_path / "big.jsonl"
    _write_input(small, 125, payload=65536)
    _write_input(big, 500, payload=65536)  # ~33 MB of input
    opts = ["--chunk-size", "60", "--no-prefix-reuse"]
    rss_small = _peak_rss_mb(_cmd(small, tmp_path / "s.parquet", tiny_model_dir, *opts))
    rss_big = _peak_rss_mb(_cmd(big, tmp_path / "b.parquet", tiny_model_dir, *opts))
    assert pq.read_metadata(tmp_path / "b.parquet").num_rows == 500
    # Loading all rows would add ~33 MB of Python strings (several times that as dicts/Arrow).
    assert rss_big < rss_small + 40, (rss_small, rss_big)
