"""Readers, input resolution, schema drift between chunks, and multi-input runs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from codescaler_cli.cli import app
from codescaler_cli.errors import InputError, UsageError
from codescaler_cli.io.inputs import fingerprint_inputs, resolve_inputs
from codescaler_cli.io.readers import iter_chunks
from codescaler_cli.tables import conform, json_columns, records_to_table, unify_parts

runner = CliRunner()


def _rows(n: int, start: int = 0) -> list[dict]:
    return [
        {"question": f"q{i % 3}", "response": f"```python\nx = {i}\n```", "i": i}
        for i in range(start, start + n)
    ]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _score(model_dir: Path, *args: str):
    """`codescaler score ARGS` with the tiny model on CPU, quiet."""
    return runner.invoke(app, ["score", *args, "--model", str(model_dir), "--device", "cpu", "-q"])


def test_chunks_are_bounded_and_keep_locations(tmp_path):
    src = _jsonl(tmp_path / "a.jsonl", _rows(25))
    chunks = list(iter_chunks(resolve_inputs([str(src)]), 10))
    assert [len(c.records) for c in chunks] == [10, 10, 5]
    assert [c.index for c in chunks] == [0, 1, 2]
    assert chunks[1].locations[0].endswith("a.jsonl:11")


def test_crlf_and_blank_lines(tmp_path):
    src = tmp_path / "crlf.jsonl"
    src.write_bytes(
        b"\r\n" + b"".join((json.dumps(r) + "\r\n").encode() for r in _rows(3)) + b"\r\n"
    )
    (chunk,) = iter_chunks(resolve_inputs([str(src)]), 100)
    assert [r["i"] for r in chunk.records] == [0, 1, 2] and not chunk.bad


def test_json_array_file(tmp_path):
    src = tmp_path / "arr.json"
    src.write_text(json.dumps(_rows(4)))
    (chunk,) = iter_chunks(resolve_inputs([str(src)]), 100)
    assert [r["i"] for r in chunk.records] == [0, 1, 2, 3]


def test_stdin_without_peek():
    data = io.BytesIO(b"".join((json.dumps(r) + "\n").encode() for r in _rows(2)))
    (chunk,) = iter_chunks(resolve_inputs(["-"]), 100, stdin=data)
    assert len(chunk.records) == 2


def test_globs_directories_and_multiple_files(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    _jsonl(d / "b.jsonl", _rows(2, 10))
    _jsonl(d / "a.jsonl", _rows(2, 0))
    pq.write_table(pa.Table.from_pylist(_rows(2, 20)), d / "c.parquet")
    (d / "notes.txt").write_text("ignored")
    by_dir = resolve_inputs([str(d)])
    by_glob = resolve_inputs([str(d / "*.jsonl")])
    assert [Path(s.path).name for s in by_dir] == ["a.jsonl", "b.jsonl", "c.parquet"]
    assert [Path(s.path).name for s in by_glob] == ["a.jsonl", "b.jsonl"]
    chunks = list(iter_chunks(by_dir, 100))
    assert [r["i"] for c in chunks for r in c.records] == [0, 1, 10, 11, 20, 21]
    with pytest.raises(InputError, match="no files match"):
        resolve_inputs([str(d / "*.nothing")])
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(InputError, match="holds no"):
        resolve_inputs([str(empty)])
    with pytest.raises(UsageError, match="only once"):
        resolve_inputs(["-", "-"])


def test_fingerprint_changes_with_content(tmp_path):
    src = _jsonl(tmp_path / "a.jsonl", _rows(3))
    specs = resolve_inputs([str(src)])
    before = fingerprint_inputs(specs)
    assert before == fingerprint_inputs(specs)
    _jsonl(src, _rows(3, 1))
    assert fingerprint_inputs(specs) != before


def test_mixed_json_types_become_json_text_not_errors():
    t = records_to_table([{"a": 1, "b": "x"}, {"a": "one", "b": "y"}, {"a": [1], "b": None}])
    assert t.column("a").to_pylist() == ["1", '"one"', "[1]"]  # every value as JSON
    assert t.column("b").to_pylist() == ["x", "y", None]
    assert json_columns(t.schema) == ["a"]


def test_schema_drift_between_chunks_is_unified():
    a = pa.table({"x": pa.array([None, None], pa.null()), "y": [1, 2]})
    b = pa.table({"x": ["s", "t"], "z": [1.5, 2.5]})
    c = pa.table({"y": [[1], [2]]})
    schema = unify_parts([a.schema, b.schema, c.schema])
    assert schema.names == ["x", "y", "z"] and json_columns(schema) == ["y"]
    rows = [conform(t, schema).to_pylist() for t in (a, b, c)]
    assert rows[0][0] == {"x": None, "y": "1", "z": None}
    assert rows[1][1] == {"x": "t", "y": None, "z": 2.5}
    assert rows[2][0]["y"] == "[1]"


def test_cli_multiple_inputs_keep_order(tiny_model_dir, tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", _rows(3, 0))
    b = tmp_path / "b.parquet"
    pq.write_table(pa.Table.from_pylist(_rows(3, 3)), b)
    out = tmp_path / "out.parquet"
    r = _score(tiny_model_dir, str(a), str(b), "-o", str(out), "--chunk-size", "2")
    assert r.exit_code == 0, r.output
    t = pq.read_table(out)
    assert t.column("i").to_pylist() == [0, 1, 2, 3, 4, 5]
    assert all(s is not None for s in t.column("score").to_pylist())


def test_saved_hf_dataset_and_dataset_option(tiny_model_dir, tmp_path):
    import datasets

    ds = datasets.Dataset.from_list(_rows(5))
    saved = tmp_path / "saved"
    datasets.DatasetDict(
        {"train": ds, "test": datasets.Dataset.from_list(_rows(2, 50))}
    ).save_to_disk(saved)
    out = tmp_path / "o.jsonl"
    r = _score(tiny_model_dir, str(saved), "--split", "test", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert [json.loads(x)["i"] for x in out.read_text().splitlines()] == [50, 51]
    # --dataset NAME goes through datasets.load_dataset (a local data dir here, offline).
    data_dir = tmp_path / "hub_like"
    data_dir.mkdir()
    _jsonl(data_dir / "train.jsonl", _rows(4))
    out2 = tmp_path / "o2.jsonl"
    r = _score(tiny_model_dir, "--dataset", str(data_dir), "-o", str(out2))
    assert r.exit_code == 0, r.output
    assert [json.loads(x)["i"] for x in out2.read_text().splitlines()] == [0, 1, 2, 3]


def test_hf_dataset_offline_and_not_cached_is_a_clear_error(tmp_path, monkeypatch, hf_offline):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    out = tmp_path / "o.parquet"
    r = runner.invoke(app, ["extract", "hf://datasets/no-such/dataset", "-o", str(out)])
    assert r.exit_code == 1, r.output
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "no-such/dataset" in err and "HF_HUB_OFFLINE" in err
    assert not out.exists()
