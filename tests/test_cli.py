"""End-to-end `codescaler score` / `extract` through typer's CliRunner with the tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from codescaler_cli import __version__
from codescaler_cli.cli import app
from codescaler_cli.extract import extract_code
from support.reference import model_card_scores

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data" / "candidates.jsonl"
TOL = 1e-5


def _rows(path: Path = SAMPLE) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _score(args: list[str], **kw):
    result = runner.invoke(app, ["score", *args], **kw)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def scored(tiny_model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "scored.parquet"
    _score([str(SAMPLE), "-o", str(out), "--model", str(tiny_model_dir), "--device", "cpu", "-q"])
    return out


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.stdout


def test_scores_equal_model_card_reference(scored, tiny_model_dir):
    table = pq.read_table(scored)
    rows = table.to_pylist()
    pairs = [(r["question"], r["code"]) for r in rows if r["code"]]
    ref = model_card_scores(str(tiny_model_dir), pairs=pairs, batch=False, max_length=4096)
    got = [r["score"] for r in rows if r["code"]]
    assert len(got) == len(ref) > 10
    assert max(abs(a - b) for a, b in zip(got, ref, strict=True)) <= TOL


def test_order_columns_types_and_shaping(scored):
    import pyarrow as pa

    table = pq.read_table(scored)
    inputs = _rows()
    rows = table.to_pylist()
    assert len(rows) == len(inputs)
    for inp, out in zip(inputs, rows, strict=True):
        for k, v in inp.items():
            assert out[k] == v  # every input column kept, in input order
        ext = extract_code(inp["response"])
        assert out["code"] == ext.code and out["extract_method"] == ext.method
        if out["code"]:
            assert out["score"] is not None and out["n_tokens"] > 0
        else:
            assert out["score"] is None
        if out["code_valid"]:
            assert out["reward"] == pytest.approx(
                __import__("math").log1p(__import__("math").exp(out["score"]))
            )
        else:
            assert out["reward"] == 0.0
    schema = table.schema
    assert schema.field("score").type == pa.float64()
    assert schema.field("reward").type == pa.float64()
    assert schema.field("code_valid").type == pa.bool_()
    assert schema.field("truncated").type == pa.bool_()
    assert pa.types.is_integer(schema.field("n_tokens").type)


def test_provenance_metadata(scored, tiny_model_dir):
    meta = {k.decode(): v.decode() for k, v in pq.read_schema(scored).metadata.items()}
    assert meta["codescaler.model"] == str(tiny_model_dir)
    assert meta["codescaler.dtype"] == "float32"
    assert meta["codescaler.max_length"] == "4096"
    assert meta["codescaler.version"] == __version__
    assert "codescaler.revision" in meta


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "stdout", "stdin"])
def test_formats_give_identical_rows(scored, tiny_model_dir, tmp_path, fmt):
    expected = pq.read_table(scored).to_pylist()
    common = ["--model", str(tiny_model_dir), "--device", "cpu", "-q"]
    if fmt == "parquet":
        src = tmp_path / "in.parquet"
        import pyarrow as pa

        pq.write_table(pa.Table.from_pylist(_rows()), src)
        out = tmp_path / "o.parquet"
        _score([str(src), "-o", str(out), *common])
        got = pq.read_table(out).to_pylist()
    elif fmt == "jsonl":
        out = tmp_path / "o.jsonl"
        _score([str(SAMPLE), "-o", str(out), *common])
        got = _rows(out)
    elif fmt == "stdout":
        result = _score([str(SAMPLE), "-o", "-", *common])
        got = [json.loads(line) for line in result.stdout.splitlines()]
    else:
        result = _score(["-", "-o", "-", *common], input=SAMPLE.read_bytes())
        got = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            if isinstance(a[k], float):
                assert a[k] == pytest.approx(b[k], abs=TOL)
            else:
                assert a[k] == b[k]


def test_stdout_holds_only_data(tiny_model_dir):
    result = _score([str(SAMPLE), "-o", "-", "--model", str(tiny_model_dir), "--device", "cpu"])
    lines = result.stdout.splitlines()
    assert len(lines) == len(_rows())
    assert all(line.startswith("{") for line in lines)
    assert "rows read" in result.stderr  # the summary went to stderr


def test_token_budget_does_not_change_scores(scored, tiny_model_dir, tmp_path):
    base = pq.read_table(scored).column("score").to_pylist()
    for budget in ("128", "1000"):
        out = tmp_path / f"b{budget}.parquet"
        _score(
            [
                str(SAMPLE),
                "-o",
                str(out),
                "--model",
                str(tiny_model_dir),
                "--device",
                "cpu",
                "--max-tokens-per-batch",
                budget,
                "--no-prefix-reuse",
                "--no-dedup",
                "-q",
            ]
        )
        got = pq.read_table(out).column("score").to_pylist()
        for a, b in zip(got, base, strict=True):
            assert (a is None and b is None) or abs(a - b) <= TOL


@pytest.mark.parametrize("streams", ["1", "3"])
def test_streams_do_not_change_scores(scored, tiny_model_dir, tmp_path, streams, monkeypatch):
    from codescaler_cli.scoring.scorer import Scorer

    used = []
    streams_of = Scorer._streams

    def record(self):
        used.append(streams_of(self))
        return used[-1]

    monkeypatch.setattr(Scorer, "_streams", record)
    base = pq.read_table(scored).column("score").to_pylist()
    out = tmp_path / "s.parquet"
    common = ["--model", str(tiny_model_dir), "--device", "cpu", "-q"]
    _score(
        [
            str(SAMPLE),
            "-o",
            str(out),
            *common,
            "--streams",
            streams,
            "--max-tokens-per-batch",
            "128",
        ]
    )
    assert used and set(used) == {int(streams)}
    got = pq.read_table(out).column("score").to_pylist()
    for a, b in zip(got, base, strict=True):
        assert (a is None and b is None) or abs(a - b) <= TOL


def test_streams_below_one_is_a_usage_error(tiny_model_dir, tmp_path):
    out = tmp_path / "s.parquet"
    args = [str(SAMPLE), "-o", str(out), "--model", str(tiny_model_dir), "--streams", "0"]
    result = runner.invoke(app, ["score", *args])
    assert result.exit_code == 2 and "--streams" in result.output
    assert not out.exists()


def test_question_and_response_fields(tiny_model_dir, tmp_path):
    src = tmp_path / "renamed.jsonl"
    src.write_text(
        "".join(
            json.dumps({"task": r["question"], "gen": r["response"]}) + "\n" for r in _rows()[:3]
        )
    )
    out = tmp_path / "o.jsonl"
    common = ["--model", str(tiny_model_dir), "--device", "cpu", "-q"]
    bad = runner.invoke(app, ["score", str(src), "-o", str(out), *common])
    assert bad.exit_code == 2
    assert "no question column found" in bad.stderr and "task, gen" in bad.stderr
    _score(
        [str(src), "-o", str(out), "--question-field", "task", "--response-field", "gen", *common]
    )
    assert [r["task"] for r in _rows(out)] == [r["question"] for r in _rows()[:3]]


def test_input_column_named_like_an_output_is_kept(tiny_model_dir, tmp_path):
    src = tmp_path / "code.jsonl"
    src.write_text(
        json.dumps(
            {
                "prompt": "add two numbers",
                "code": "```python\ndef add(a, b):\n    return a + b\n```",
            }
        )
        + "\n"
    )
    out = tmp_path / "o.jsonl"
    _score([str(src), "-o", str(out), "--model", str(tiny_model_dir), "--device", "cpu", "-q"])
    (row,) = _rows(out)
    assert row["input_code"].startswith("```python")
    assert row["code"] == "def add(a, b):\n    return a + b"


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from codescaler_cli.cli import app\n"
        "for args in (['--help'], ['score', '--help'], ['rerank', '--help']):\n"
        "    assert CliRunner().invoke(app, args).exit_code == 0\n"
        "heavy = [m for m in ('torch', 'transformers', 'datasets', 'ray') if m in sys.modules]\n"
        "print(heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_bad_option_values_exit_2_before_torch_loads_and_write_nothing(tmp_path):
    """Typos in choices and out-of-range numbers are refused by the options themselves: one
    line, exit 2, torch never imported, no output and no OUT.partial/."""
    out = tmp_path / "o.parquet"
    cases = [
        (["--extract", "foo"], "'foo' is not one of 'auto', 'paper', 'last', 'none'"),
        (["--max-tokens-per-batch", "0"], "--max-tokens-per-batch must be at least 1, got 0"),
        (["--max-tokens-per-batch", "-5"], "--max-tokens-per-batch must be at least 1, got -5"),
        (["--streams", "0"], "--streams must be at least 1"),
        (["--device", "tpu"], "--device 'tpu'"),
        (["--dtype", "float8"], "'float8' is not one of"),
    ]
    code = (
        "import sys, json\n"
        "from typer.testing import CliRunner\n"
        "from codescaler_cli.cli import app\n"
        "for extra, needle in json.loads(sys.argv[1]):\n"
        f"    r = CliRunner().invoke(app, ['score', {str(SAMPLE)!r}, '-o', {str(out)!r}, *extra])\n"
        "    err = r.stderr.strip()\n"
        "    assert r.exit_code == 2 and len(err.splitlines()) == 1, (extra, r.exit_code, err)\n"
        "    assert err.startswith('codescaler: error: ') and needle in err, (extra, err)\n"
        "assert 'torch' not in sys.modules\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(cases)], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_extract_command_never_imports_torch(tmp_path):
    out = tmp_path / "e.parquet"
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from codescaler_cli.cli import app\n"
        f"r = CliRunner().invoke(app, ['extract', {str(SAMPLE)!r}, '-o', {str(out)!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(r.stderr)\n"
        "sys.exit(1 if 'torch' in sys.modules else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "extraction methods" in proc.stdout and "valid code" in proc.stdout
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == len(_rows())
    assert {"code", "code_valid", "extract_method", "n_code_blocks"} <= rows[0].keys()
    assert "score" not in rows[0]


def test_python_api_matches_cli(scored, tiny_model_dir):
    from codescaler_cli import score_records

    got = score_records(_rows(), model=str(tiny_model_dir), device="cpu")
    expected = pq.read_table(scored).to_pylist()
    for a, b in zip(got, expected, strict=True):
        assert a["code"] == b["code"]
        assert (a["score"] is None and b["score"] is None) or abs(a["score"] - b["score"]) <= TOL


def test_make_test_model_then_score_offline(tmp_path):
    """The documented way to try codescaler without the weights."""
    model = tmp_path / "tiny"
    made = runner.invoke(app, ["make-test-model", str(model), "--layers", "1", "--seed", "3"])
    assert made.exit_code == 0, made.output
    assert (model / "config.json").is_file() and (model / "model.safetensors").is_file()
    out = tmp_path / "s.parquet"
    scored = runner.invoke(app, ["score", str(SAMPLE), "-o", str(out), "--model", str(model), "-q"])
    assert scored.exit_code == 0, scored.output
    table = pq.read_table(out)
    assert table.num_rows == 17 and table.column("score").null_count < 17
    bad = runner.invoke(app, ["make-test-model", str(tmp_path / "x"), "--hidden-size", "6"])
    assert bad.exit_code == 2 and "--hidden-size" in bad.stderr
