"""Bad input and bad models: one clear line, the right exit code, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from codescaler_cli.cli import app
from codescaler_cli.exactness import FLOAT32
from codescaler_cli.tiny_model import build_tiny_reward_model
from support.errors import one_line

runner = CliRunner()
GOOD = {
    "question": "Add two numbers.",
    "response": "```python\ndef add(a, b):\n    return a + b\n```",
}


def _line(obj) -> bytes:
    return (json.dumps(obj) + "\n").encode()


def _invoke(args, model_dir, **kw):
    return runner.invoke(app, [*args, "--model", str(model_dir), "--device", "cpu", "-q"], **kw)


# Each case: (name, file name, file bytes, exit code, expected message parts)
BAD_FILES = [
    (
        "malformed-json",
        "in.jsonl",
        _line(GOOD) + b'{"question": "q", "response": \n',
        1,
        ["in.jsonl:2", "malformed JSON"],
    ),
    (
        "non-object-line",
        "in.jsonl",
        _line(GOOD) + b"[1, 2]\n",
        1,
        ["in.jsonl:2", "expected a JSON object, got an array"],
    ),
    (
        "string-line",
        "in.jsonl",
        b'"just a string"\n' + _line(GOOD),
        1,
        ["in.jsonl:1", "expected a JSON object, got a string"],
    ),
    (
        "missing-field",
        "in.jsonl",
        _line(GOOD) + _line({"question": "q"}),
        1,
        ["in.jsonl:2", "missing field 'response'"],
    ),
    (
        "number-field",
        "in.jsonl",
        _line(GOOD) + _line({"question": "q", "response": 42}),
        1,
        ["in.jsonl:2", "field 'response' must be a string, got a number"],
    ),
    (
        "list-field",
        "in.jsonl",
        _line(GOOD) + _line({"question": ["q"], "response": "x"}),
        1,
        ["in.jsonl:2", "field 'question' must be a string, got an array"],
    ),
    (
        "null-field",
        "in.jsonl",
        _line(GOOD) + _line({"question": "q", "response": None}),
        1,
        ["in.jsonl:2", "got null"],
    ),
    ("empty-file", "in.jsonl", b"", 1, ["in.jsonl", "input is empty"]),
    ("blank-file", "in.jsonl", b"\n\n  \n", 1, ["in.jsonl", "input is empty"]),
    (
        "non-utf8",
        "in.jsonl",
        _line(GOOD) + b'{"question": "q\xff\xfe", "response": "x"}\n',
        1,
        ["in.jsonl:2", "not valid UTF-8"],
    ),
    (
        "unknown-extension",
        "in.csv",
        b"question,response\nq,x\n",
        1,
        ["in.csv", "unknown input format"],
    ),
    (
        "corrupt-parquet",
        "in.parquet",
        b"PAR1 this is not parquet",
        1,
        ["in.parquet", "not a readable Parquet file"],
    ),
    (
        "json-array-non-object",
        "in.json",
        b'[{"question": "q", "response": "x"}, 7]',
        1,
        ["in.json[1]", "expected a JSON object"],
    ),
    (
        "no-question-column",
        "in.jsonl",
        _line({"text": "q", "response": "x"}),
        2,
        ["no question column found", "text, response"],
    ),
]


@pytest.mark.parametrize(
    ("name", "fname", "data", "code", "needles"), BAD_FILES, ids=[c[0] for c in BAD_FILES]
)
def test_bad_input_files(tiny_model_dir, tmp_path, name, fname, data, code, needles):
    src = tmp_path / fname
    src.write_bytes(data)
    out = tmp_path / "out.parquet"
    result = _invoke(["score", str(src), "-o", str(out)], tiny_model_dir)
    one_line(result, code, *needles)
    assert not out.exists()
    assert not Path(str(out) + ".partial").exists()


def test_empty_parquet(tiny_model_dir, tmp_path):
    src = tmp_path / "empty.parquet"
    pq.write_table(
        pa.table({"question": pa.array([], pa.string()), "response": pa.array([], pa.string())}),
        src,
    )
    out = tmp_path / "out.parquet"
    one_line(_invoke(["score", str(src), "-o", str(out)], tiny_model_dir), 1, "0 rows")
    assert not out.exists()


def test_missing_path(tiny_model_dir, tmp_path):
    out = tmp_path / "out.parquet"
    result = _invoke(["score", str(tmp_path / "nope.jsonl"), "-o", str(out)], tiny_model_dir)
    one_line(result, 1, "nope.jsonl", "no such file")
    assert not out.exists()


def test_unreadable_path(tiny_model_dir, tmp_path, monkeypatch):
    src = tmp_path / "locked.jsonl"
    src.write_bytes(_line(GOOD))
    import os

    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, m: False if str(p) == str(src) else real_access(p, m)
    )
    out = tmp_path / "out.parquet"
    one_line(_invoke(["score", str(src), "-o", str(out)], tiny_model_dir), 1, "permission denied")
    assert not out.exists()


def test_output_in_missing_directory(tiny_model_dir, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(_line(GOOD))
    out = tmp_path / "missing" / "out.parquet"
    one_line(_invoke(["score", str(src), "-o", str(out)], tiny_model_dir), 1, "does not exist")
    assert not out.parent.exists()


def test_output_equal_to_input(tiny_model_dir, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(_line(GOOD))
    before = src.read_bytes()
    one_line(_invoke(["score", str(src), "-o", str(src)], tiny_model_dir), 2, "is an input")
    assert src.read_bytes() == before


def test_unknown_output_extension(tiny_model_dir, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(_line(GOOD))
    out = tmp_path / "out.csv"
    one_line(
        _invoke(["score", str(src), "-o", str(out)], tiny_model_dir), 2, "unknown output format"
    )
    assert not out.exists()


def test_bad_option_values(tiny_model_dir, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(_line(GOOD))
    out = tmp_path / "o.parquet"
    one_line(
        _invoke(["score", str(src), "-o", str(out), "--extract", "magic"], tiny_model_dir),
        2,
        "--extract",
    )
    tpu = runner.invoke(
        app, ["score", str(src), "-o", str(out), "--model", str(tiny_model_dir), "--device", "tpu"]
    )
    one_line(tpu, 2, "--device")
    one_line(
        _invoke(["score", str(src), "-o", str(out), "--on-bad-row", "ignore"], tiny_model_dir),
        2,
        "--on-bad-row",
    )
    assert not out.exists()


def test_skip_bad_rows_goes_to_rejected_file(tiny_model_dir, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(
        _line(GOOD)
        + b"not json\n"
        + _line({"question": "q", "response": 3})
        + _line(GOOD)
        + b'{"question": "\xff", "response": "x"}\n'
    )
    out = tmp_path / "out.jsonl"
    summary = tmp_path / "s.json"
    result = _invoke(
        ["score", str(src), "-o", str(out), "--on-bad-row", "skip", "--summary-json", str(summary)],
        tiny_model_dir,
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 2 and all(r["score"] is not None for r in rows)
    rejected = [json.loads(x) for x in (tmp_path / "out.rejected.jsonl").read_text().splitlines()]
    assert [r["location"] for r in rejected] == [f"{src}:2", f"{src}:3", f"{src}:5"]
    assert rejected[0]["row"] == "not json"
    reasons = " ".join(r["reason"] for r in rejected)
    assert "malformed JSON" in reasons and "must be a string" in reasons and "UTF-8" in reasons
    data = json.loads(summary.read_text())
    assert data["rejected"] == 3 and data["rows_read"] == 5 and data["rows_written"] == 2


def test_empty_no_code_and_huge_responses_are_flagged_rows(tiny_model_dir, tmp_path):
    huge = "```python\n" + "".join(f"x{i} = {i}\n" for i in range(3000)) + "```"
    rows = [
        {"question": "q", "response": ""},
        {"question": "q", "response": "I cannot solve this, sorry."},
        {"question": "q", "response": huge},
        GOOD,
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    result = _invoke(["score", str(src), "-o", str(out), "--max-length", "512"], tiny_model_dir)
    assert result.exit_code == 0, result.output
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["code_valid"] for r in got] == [False, False, False, True]
    assert [r["reward"] for r in got][:3] == [0.0, 0.0, 0.0]
    assert got[2]["truncated"] is True and got[2]["score"] is None and got[2]["n_tokens"] > 512
    assert got[0]["score"] is None and got[1]["score"] is None


# ---------------------------------------------------------------- model problems


def _score_with(model_dir, tmp_path, *extra):
    src = tmp_path / "in.jsonl"
    src.write_bytes(_line(GOOD))
    out = tmp_path / "out.parquet"
    result = runner.invoke(
        app,
        [
            "score",
            str(src),
            "-o",
            str(out),
            "--model",
            str(model_dir),
            "--device",
            "cpu",
            "-q",
            *extra,
        ],
    )
    return result, out


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"num_labels": 2}, "num_labels=2"),
        ({"chat_template": None}, "no chat template"),
        ({"pad_token_id": 5}, "pad_token_id=5"),
        ({"safetensors": False}, "--allow-pickle-weights"),
    ],
    ids=["num-labels", "no-chat-template", "pad-mismatch", "pickle-only"],
)
def test_bad_models_are_refused(tmp_path, kwargs, needle):
    model_dir = build_tiny_reward_model(tmp_path / "model", **kwargs)
    result, out = _score_with(model_dir, tmp_path)
    one_line(result, 1, needle)
    assert not out.exists()


def test_pickle_weights_load_when_allowed(tmp_path, tiny_model_dir):
    model_dir = build_tiny_reward_model(tmp_path / "model", safetensors=False)
    assert not list(Path(model_dir).glob("*.safetensors"))
    result, out = _score_with(model_dir, tmp_path, "--allow-pickle-weights")
    assert result.exit_code == 0, result.output
    (tmp_path / "ref").mkdir()
    _, out2 = _score_with(tiny_model_dir, tmp_path / "ref")
    assert out2 != out
    assert pq.read_table(out).column("score").to_pylist()[0] == pytest.approx(
        pq.read_table(out2).column("score").to_pylist()[0], abs=FLOAT32
    )


def test_missing_pad_id_is_taken_from_tokenizer(tmp_path):
    model_dir = build_tiny_reward_model(tmp_path / "model", pad_token_id=None)
    result, out = _score_with(model_dir, tmp_path)
    assert result.exit_code == 0, result.output
    assert pq.read_table(out).column("score").to_pylist()[0] is not None


def test_model_not_found_says_how_to_use_a_local_dir(tmp_path, hf_offline):
    result, out = _score_with("no-such-org/no-such-model", tmp_path)
    one_line(result, 1, "no-such-org/no-such-model", "--model DIR")
    assert not out.exists()


def test_missing_local_model_dir(tmp_path):
    result, out = _score_with(tmp_path / "not-a-model", tmp_path)
    one_line(result, 2, "not-a-model: no such directory")
    assert not out.exists()


def test_cuda_requested_but_unavailable(tiny_model_dir, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    src = tmp_path / "in.jsonl"
    src.write_bytes(_line(GOOD))
    out = tmp_path / "out.parquet"
    result = runner.invoke(
        app,
        [
            "score",
            str(src),
            "-o",
            str(out),
            "--model",
            str(tiny_model_dir),
            "--device",
            "cuda",
            "-q",
        ],
    )
    one_line(result, 1, "CUDA is not available")


def test_causal_lm_without_score_head_is_refused(tmp_path):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from codescaler_cli.tiny_model import build_tokenizer

    tok = build_tokenizer()
    cfg = Qwen3Config(
        vocab_size=1088,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    Qwen3ForCausalLM(cfg).save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    result, out = _score_with(tmp_path / "lm", tmp_path)
    one_line(result, 1, "not a reward model")
    assert not out.exists()


def test_debug_env_shows_traceback(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CODESCALER_DEBUG", "1")
    out = tmp_path / "out.parquet"
    result = runner.invoke(app, ["score", str(tmp_path / "nope.jsonl"), "-o", str(out)])
    assert result.exit_code != 0
    assert result.exception is not None and "no such file" in str(result.exception)


def test_skip_when_the_first_chunks_are_all_bad(tiny_model_dir, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"{oops\n" + b"[1]\n" + _line(GOOD) + _line(GOOD))
    out = tmp_path / "out.parquet"
    result = _invoke(
        ["score", str(src), "-o", str(out), "--on-bad-row", "skip", "--chunk-size", "1"],
        tiny_model_dir,
    )
    assert result.exit_code == 0, result.output
    t = pq.read_table(out)
    assert t.num_rows == 2 and t.column("question").to_pylist() == [GOOD["question"]] * 2
    assert all(s is not None for s in t.column("score").to_pylist())
    rejected = (tmp_path / "out.rejected.jsonl").read_text().splitlines()
    assert [json.loads(x)["location"] for x in rejected] == [f"{src}:1", f"{src}:2"]
