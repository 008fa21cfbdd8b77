"""One data contract on every path: provenance decides, never column names or a first row."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from codescaler_cli import rerank, score_records
from codescaler_cli.cli import app
from codescaler_cli.errors import InputError
from codescaler_cli.provenance import escaped

runner = CliRunner()
FENCE = "```"


def _rows(n: int = 6) -> list[dict]:
    """Candidates whose user columns collide with codescaler's names."""
    return [
        {
            "problem_id": f"p{i % 2}",
            "question": f"Return {i % 2}.",
            "response": f"{FENCE}python\ndef f():\n    return {i}\n{FENCE}",
            "score": 100 + i,  # another reward model's output
            "reward": f"r{i}",
            "code_valid": i % 3 == 0,
            "rank": i,
            "group_size": -i,
            "input_score": "mine",
        }
        for i in range(n)
    ]


def _write(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _read(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
@pytest.mark.parametrize("chunk", ["1", "2", "50000"])
def test_user_columns_named_like_outputs_are_kept_whatever_the_chunk(tmp_path, suffix, chunk):
    src = _write(tmp_path / f"in{suffix}", _rows())
    out = tmp_path / "out.jsonl"
    r = runner.invoke(app, ["extract", str(src), "-o", str(out), "--chunk-size", chunk])
    assert r.exit_code == 0, r.output
    got = _read(out)
    for row, orig in zip(got, _rows(), strict=True):
        for name, value in orig.items():
            assert row[escaped(name)] == value, name  # every user value, under its name
        assert row["input_input_score"] == "mine"
        assert row["codescaler"]["task"] == "extract"


def test_escaping_is_a_rule_of_the_name():
    assert escaped("score") == "input_score"
    assert escaped("input_score") == "input_input_score"
    assert escaped("input_problem") == "input_problem"
    assert escaped("codescaler") == "input_codescaler"


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_rescoring_an_output_gives_the_same_rows(tiny_model_dir, tmp_path, suffix):
    rows = [{"question": "Add.", "code": "def add(a, b):\n    return a + b", "k": 1}]
    src = _write(tmp_path / f"in{suffix}", rows)
    once, twice = tmp_path / f"once{suffix}", tmp_path / f"twice{suffix}"
    model = ["--model", str(tiny_model_dir), "--device", "cpu", "-q"]
    assert runner.invoke(app, ["score", str(src), "-o", str(once), *model]).exit_code == 0
    r = runner.invoke(app, ["score", str(once), "-o", str(twice), *model])
    assert r.exit_code == 0, r.output
    a, b = _read(once), _read(twice)
    assert a == b  # the response column named `code` is the user's, not the extracted code
    assert a[0]["input_code"] == rows[0]["code"]
    assert a[0]["codescaler"]["response_field"] == "input_code"


def test_rerank_of_a_partly_scored_file_scores_the_rest(tiny_model_dir, tmp_path, monkeypatch):
    model = ["--model", str(tiny_model_dir), "--device", "cpu", "-q"]
    rows = _rows(8)
    half = _write(tmp_path / "half.jsonl", rows[:4])
    scored = tmp_path / "scored.jsonl"
    assert runner.invoke(app, ["score", str(half), "-o", str(scored), *model]).exit_code == 0
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(scored.read_text() + "".join(json.dumps(r) + "\n" for r in rows[4:]))
    full = _write(tmp_path / "full.jsonl", rows)
    want, got = tmp_path / "want.jsonl", tmp_path / "got.jsonl"
    r = runner.invoke(app, ["rerank", str(full), "-o", str(want), "--all", *model])
    assert r.exit_code == 0, r.output
    # no --model: the unscored rows are scored with the model that scored the others
    r = runner.invoke(app, ["rerank", str(mixed), "-o", str(got), "--all", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    a, b = _read(want), _read(got)
    assert [(x["input_rank"], x["rank"]) for x in a] == [(x["input_rank"], x["rank"]) for x in b]
    for x, y in zip(a, b, strict=True):
        assert x["score"] == pytest.approx(y["score"], rel=1e-5, abs=1e-5)
        assert x["input_score"] == y["input_score"]  # the user's columns survive


def test_rows_scored_by_different_settings_are_refused_or_rescored(tiny_model_dir, tmp_path):
    model = ["--model", str(tiny_model_dir), "--device", "cpu", "-q"]
    src = _write(tmp_path / "in.jsonl", _rows(4))
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert runner.invoke(app, ["score", str(src), "-o", str(a), *model]).exit_code == 0
    r = runner.invoke(app, ["score", str(src), "-o", str(b), *model, "--max-length", "64"])
    assert r.exit_code == 0
    both = tmp_path / "both.jsonl"
    both.write_text(a.read_text() + b.read_text())
    r = runner.invoke(app, ["rerank", str(both), "-o", str(tmp_path / "o.jsonl")])
    assert r.exit_code == 2 and "different models or settings" in r.stderr
    assert "max length 64" in r.stderr and "both.jsonl" in r.stderr
    # --model is never ignored: rows scored otherwise are scored again with it
    out = tmp_path / "o.jsonl"
    r = runner.invoke(app, ["rerank", str(both), "-o", str(out), "--all", *model[:-1]])
    assert r.exit_code == 0, r.output
    got = _read(out)
    assert {x["codescaler"]["max_length"] for x in got} == {4096}


def test_rerank_keeps_metadata_json_columns_and_types(tiny_model_dir, tmp_path):
    rows = [dict(r, extra={} if i % 2 else {"a": 1}, n=i) for i, r in enumerate(_rows(4))]
    src = _write(tmp_path / "in.jsonl", rows)
    scored, ranked = tmp_path / "s.parquet", tmp_path / "r.parquet"
    model = ["--model", str(tiny_model_dir), "--device", "cpu", "-q"]
    assert runner.invoke(app, ["score", str(src), "-o", str(scored), *model]).exit_code == 0
    r = runner.invoke(app, ["rerank", str(scored), "-o", str(ranked), "--all", "-q"])
    assert r.exit_code == 0, r.output
    s, k = pq.read_schema(scored), pq.read_schema(ranked)
    for field in s:
        assert k.field(field.name).type == field.type, field.name
    for key, value in s.metadata.items():
        assert k.metadata[key] == value, key
    back = tmp_path / "r.jsonl"
    assert runner.invoke(app, ["rerank", str(scored), "-o", str(back), "--all"]).exit_code == 0
    assert sorted(map(str, (x["extra"] for x in _read(back)))) == sorted(
        map(str, (r["extra"] for r in rows))
    )


def test_api_keeps_every_key_and_lists_rejected_rows(tiny_model_dir):
    rows = [
        {"question": "q", "response": "def f():\n    return 1", "a": 1},
        {"question": "q", "response": 7, "b": [1, 2]},  # bad: response is not text
        {"question": "q", "response": "def g():\n    return 2", "c": {"x": None}},
    ]
    out = score_records(rows, str(tiny_model_dir), device="cpu", on_bad_row="skip")
    assert [r.get("a") for r in out] == [1, None] and out[1]["c"] == {"x": None}
    assert [(x.index, "response" in x.reason) for x in out.rejected] == [(1, True)]
    with pytest.raises(InputError, match="record 1"):
        score_records(rows, str(tiny_model_dir), device="cpu")
    ranked = rerank(list(out), top_k=0)  # scored rows: ranked as they are
    assert {r["rank"] for r in ranked} == {1, 2} and "c" in ranked[0]


def test_a_mistyped_local_model_fails_at_once(tmp_path):
    src = _write(tmp_path / "in.jsonl", _rows(1))
    out = tmp_path / "o.parquet"
    r = runner.invoke(app, ["score", str(src), "-o", str(out), "--model", "./no-such-model"])
    assert r.exit_code == 2 and "--model ./no-such-model: no such directory" in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("as_table", [False, True])
def test_api_keeps_user_columns_and_types_like_the_cli(tiny_model_dir, tmp_path, as_table):
    rows = _rows(3)
    records = pa.Table.from_pylist(rows) if as_table else rows
    got = score_records(records, str(tiny_model_dir), device="cpu")
    src = _write(tmp_path / ("in.parquet" if as_table else "in.jsonl"), rows)
    out = tmp_path / "cli.parquet"
    r = runner.invoke(
        app, ["score", str(src), "-o", str(out), "--model", str(tiny_model_dir), "--device", "cpu"]
    )
    assert r.exit_code == 0, r.output
    cli = pq.read_table(out)
    if as_table:
        assert got.schema.remove_metadata() == cli.schema.remove_metadata()
        got = got.to_pylist()
    assert [row["input_score"] for row in got] == [row["score"] for row in rows]
    assert got == cli.to_pylist()  # provenance included


def test_a_parquet_column_name_twice_is_refused_not_dropped(tmp_path):
    t = pa.Table.from_arrays(
        [pa.array(["q"]), pa.array(["x = 1"]), pa.array([1]), pa.array([2])],
        names=["question", "response", "x", "x"],
    )
    pq.write_table(t, tmp_path / "dup.parquet")
    out = tmp_path / "o.jsonl"
    r = runner.invoke(app, ["extract", str(tmp_path / "dup.parquet"), "-o", str(out)])
    assert r.exit_code == 1 and "column name 'x' appears more than once" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()


def test_eval_pairs_keeps_every_value_of_rows_another_task_wrote(tiny_model_dir, tmp_path):
    from support.scored import SCORED_BY

    pair = {"question": "Add.", "chosen": "def f(a, b):\n    return a + b", "rejected": "x = 1"}
    rows = [{**pair, "score": 0.5, "input_score": "mine", "codescaler": SCORED_BY.as_value()}]
    src = _write(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "o.jsonl"
    r = runner.invoke(
        app,
        ["eval-pairs", str(src), "-o", str(out), "--model", str(tiny_model_dir), "--device", "cpu"],
    )
    assert r.exit_code == 0, r.output
    (got,) = _read(out)
    assert (got["input_score"], got["input_input_score"]) == (0.5, "mine")  # nothing dropped
    assert got["input_codescaler"] == SCORED_BY.as_value()
    assert got["codescaler"]["task"] == "eval-pairs" and got["chosen_score"] is not None
