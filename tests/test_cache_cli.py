"""The score cache on every path that writes rows: the CLI, the run loop, the Python API.

(The store, its keys and its failures: test_cache.py. The Ray engine: test_ray_engine.py.)
Each test has its own cache directory (conftest's $CODESCALER_CACHE_DIR).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from codescaler_cli.cache.sqlite import FILE_NAME
from codescaler_cli.cli import app
from codescaler_cli.config import CacheOptions, ModelOptions, RowOptions, RunOptions
from codescaler_cli.engines.loop import run
from codescaler_cli.io.inputs import resolve_inputs
from codescaler_cli.progress import Progress

REPO = Path(__file__).resolve().parents[1]


def _rows(n: int, tag: str = "p") -> list[dict]:
    """Best-of-N rows: 4 candidates per problem, a duplicate and a row without code."""
    rows = []
    for i in range(n):
        code = f"def f(xs):\n    return sum(x * {i} for x in xs)  # {tag}"
        response = f"```python\n{code}\n```" if i % 7 else "no code here"
        rows.append({"problem_id": f"{tag}{i // 4}", "question": f"Sum {tag}{i // 4}.",
                     "response": response})  # fmt: skip
    rows.append(dict(rows[1]))  # a duplicate
    return rows


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _score(*args: str) -> dict:
    """`codescaler score ARGS`; its summary."""
    summary = Path(args[args.index("-o") + 1] + ".summary.json")
    r = CliRunner().invoke(app, ["score", *args, "--summary-json", str(summary), "-q"])
    assert r.exit_code == 0, r.output
    return json.loads(summary.read_text())


def _model(model_dir: Path) -> list[str]:
    return ["--model", str(model_dir), "--device", "cpu", "--dtype", "float32"]


def _bits(values: list) -> list:
    return [None if v is None else struct.pack("<d", v) for v in values]


def test_a_rerun_runs_no_forward_pass_and_writes_the_same_output(tiny_model_dir, tmp_path):
    src = _write(tmp_path / "in.jsonl", _rows(24))
    cold = _score(str(src), "-o", str(tmp_path / "cold.jsonl"), *_model(tiny_model_dir))
    assert cold["forward_calls"] > 0 and cold["cached"] == 0
    warm = _score(str(src), "-o", str(tmp_path / "warm.jsonl"), *_model(tiny_model_dir))
    assert warm["forward_calls"] == 0
    assert warm["cached"] == cold["scored"] == 21  # every row with code (3 without)
    assert (tmp_path / "warm.jsonl").read_bytes() == (tmp_path / "cold.jsonl").read_bytes()

    # Parquet: the same rows, scores bit for bit; the metadata says where they came from.
    _score(str(src), "-o", str(tmp_path / "warm.parquet"), *_model(tiny_model_dir))
    got = pq.read_table(tmp_path / "warm.parquet")
    cold_rows = [json.loads(line) for line in (tmp_path / "cold.jsonl").read_text().splitlines()]
    assert got.to_pylist() == cold_rows
    assert _bits(got.column("score").to_pylist()) == _bits([r["score"] for r in cold_rows])
    meta = got.schema.metadata
    assert meta[b"codescaler.cached_rows"] == b"21"
    assert meta[b"codescaler.cache"] == os.environ["CODESCALER_CACHE_DIR"].encode()


class _Ticks(Progress):
    """Rows counted as done, and how many of them ran through the model (those ticks
    come with their tokens)."""

    def __init__(self) -> None:
        self.done = self.through_model = 0

    def advance(self, rows: int, tokens: int = 0) -> None:
        self.done += rows
        self.through_model += rows if tokens else 0


def _run(src: Path, out: Path, model_dir: Path, cache: CacheOptions | None = None):
    model = ModelOptions(model=str(model_dir), device="cpu", dtype="float32")
    opts = RunOptions(str(out), RowOptions(), model, cache=cache or CacheOptions())
    ticks = _Ticks()
    summary = run(resolve_inputs([str(src)]), opts, progress=ticks)
    return summary, ticks


def test_only_new_rows_are_scored_and_hits_count_as_done(tiny_model_dir, tmp_path):
    old, new = _rows(40), _rows(4, tag="q")  # 10% new rows, appended
    _run(_write(tmp_path / "old.jsonl", old), tmp_path / "old.parquet", tiny_model_dir)
    grown = _write(tmp_path / "grown.jsonl", old + new)
    summary, ticks = _run(grown, tmp_path / "grown.parquet", tiny_model_dir)
    assert summary.cached == 35  # the old rows with code
    # Only the 3 new candidates with code went through the model; every row counts as done.
    assert ticks.through_model == 3 and ticks.done == len(old) + len(new) == summary.rows_read
    # Hits and fresh scores in input order, as a run without the cache writes them.
    _run(grown, tmp_path / "plain.parquet", tiny_model_dir, CacheOptions(enabled=False))
    got, plain = (pq.read_table(tmp_path / f"{n}.parquet") for n in ("grown", "plain"))
    assert got.drop_columns(["score", "reward"]).equals(plain.drop_columns(["score", "reward"]))
    for a, b in zip(
        got.column("score").to_pylist(), plain.column("score").to_pylist(), strict=True
    ):
        assert (a is None) == (b is None) and (a is None or abs(a - b) <= 1e-5 * max(1, abs(b)))


def test_no_cache_stores_nothing_and_cache_dir_chooses_the_store(tiny_model_dir, tmp_path):
    default = Path(os.environ["CODESCALER_CACHE_DIR"])
    src = _write(tmp_path / "in.jsonl", _rows(8))
    off = _score(str(src), "-o", str(tmp_path / "a.jsonl"), "--no-cache", *_model(tiny_model_dir))
    assert off["cached"] == 0 and not (default / FILE_NAME).exists()
    elsewhere = tmp_path / "elsewhere"
    _score(str(src), "-o", str(tmp_path / "b.jsonl"), "--cache-dir", str(elsewhere),
           *_model(tiny_model_dir))  # fmt: skip
    assert (elsewhere / FILE_NAME).exists() and not (default / FILE_NAME).exists()
    both = CliRunner().invoke(
        app, ["score", str(src), "-o", str(tmp_path / "c.jsonl"), "--no-cache", "--cache-dir", "x"]
    )
    assert both.exit_code == 2
    assert both.stderr.strip().endswith("--no-cache and --cache-dir cannot be used together")


def test_the_api_answers_a_repeated_call_from_the_cache(tiny_model_dir):
    from codescaler_cli import api, score_records

    rows = _rows(12)
    first = score_records(rows, str(tiny_model_dir), device="cpu", dtype="float32")
    key = ModelOptions(model=str(tiny_model_dir), device="cpu", dtype="float32")
    used = api._MODELS.get(key) or api._LAZY[key]  # kept for the process, loaded or lazily
    calls = used.forward_calls
    assert calls > 0
    again = score_records(rows, str(tiny_model_dir), device="cpu", dtype="float32")
    assert used.forward_calls == calls  # every row from the cache
    assert again == first and _bits([r["score"] for r in again]) == _bits(
        [r["score"] for r in first]
    )
    # no_cache: the model runs again.
    score_records(rows, str(tiny_model_dir), device="cpu", dtype="float32", no_cache=True)
    model = api.load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    assert model.forward_calls > calls  # the same model, which ran again


def test_an_all_hit_cli_run_imports_no_torch(tiny_model_dir, tmp_path):
    src = _write(tmp_path / "in.jsonl", _rows(8))
    _score(str(src), "-o", str(tmp_path / "cold.parquet"), *_model(tiny_model_dir))
    out = tmp_path / "warm.parquet"
    code = (
        "import sys\n"
        "from codescaler_cli.cli import main\n"
        f"sys.argv = ['codescaler', 'score', {str(src)!r}, '-o', {str(out)!r}, '-q', "
        f"'--model', {str(tiny_model_dir)!r}, '--device', 'cpu', '--dtype', 'float32']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "loaded = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert pq.read_table(out).equals(pq.read_table(tmp_path / "cold.parquet"))
