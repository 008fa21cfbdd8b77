"""The "too long" guard measures what would be tokenized (the extracted code), not the raw
response; the raw size only meets a multi-megabyte safety cap."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from codescaler_cli import stages
from codescaler_cli.cli import app
from codescaler_cli.config import ExtractMode, ScoringOptions
from codescaler_cli.scoring.scorer import Scorer
from support.extract_cases import ADD  # tests/ is on sys.path under pytest

MAX_LENGTH = 128


def test_a_long_think_trace_before_short_code_is_scored_and_long_code_is_not(
    tiny_model_dir, rm, tmp_path
):
    limit = Scorer(rm, ScoringOptions(max_length=MAX_LENGTH)).max_response_chars
    trace = "Let me think about adding two numbers carefully. " * (200_000 // 50)
    short = f"<think>\n{trace}\n</think>\nHere it is:\n```python\n{ADD}\n```\n"
    long_code = "```python\n" + "x = 1\n" * (limit // 6 + 10) + "```\n"
    assert len(short) > limit and len(long_code) - 14 > limit  # the old guard refused both
    src = tmp_path / "in.jsonl"
    rows = [{"question": "Add.", "response": short}, {"question": "Add.", "response": long_code}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    args = ["score", str(src), "-o", str(out), "--max-length", str(MAX_LENGTH)]
    result = CliRunner().invoke(app, [*args, "--model", str(tiny_model_dir), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    scored, refused = (json.loads(line) for line in out.read_text().splitlines())
    assert (scored["code"], scored["extract_method"], scored["code_valid"]) == (
        ADD,
        "fence:python",
        True,
    )
    assert scored["score"] is not None and scored["reward"] > 0 and not scored["truncated"]
    assert scored["n_tokens"] <= MAX_LENGTH
    assert (refused["extract_method"], refused["code"], refused["truncated"]) == (
        "too_long",
        "",
        True,
    )
    assert (refused["code_valid"], refused["score"], refused["reward"]) == (False, None, 0.0)


def test_a_response_over_the_safety_cap_is_never_extracted(monkeypatch):
    def refuse(*_):
        raise AssertionError("extracted")

    at_cap = "x = 1\n" + " " * (stages.MAX_RESPONSE_CHARS - 6)
    monkeypatch.setattr(stages, "extract_code", refuse)
    assert stages.extract_responses([at_cap + " "], ExtractMode.auto, None) == [stages.TOO_LONG]
    monkeypatch.undo()
    # up to the cap it is extracted, whatever its raw size, unless its code is too long
    assert stages.extract_responses([at_cap], ExtractMode.auto, 10)[0].code == "x = 1"
    assert stages.extract_responses([at_cap], ExtractMode.auto, 4) == [stages.TOO_LONG]
