"""End-to-end `codescaler score` / `extract` through typer's CliRunner with the tiny model."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from codescaler_cli import __version__
from codescaler_cli.cli import app
from codescaler_cli.exactness import FLOAT32
from codescaler_cli.extract import extract_code
from support.reference import assert_exact, model_card_scores

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data" / "candidates.jsonl"
TOL = FLOAT32  # absolute here: stricter than the guarantee's relative form


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
    assert_exact(got, ref)


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
        (["--chunk-size", "0"], "--chunk-size must be at least 1, got 0"),
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


# ---------------------------------------------------------------- defaults, choices, help

OPTION_SOURCES = [
    *sorted((REPO / "codescaler_cli" / "cli").glob("*.py")),
    REPO / "codescaler_cli" / "api.py",
]


def _option_fields() -> set[str]:
    from dataclasses import fields, is_dataclass

    from codescaler_cli import config

    classes = (
        config.CacheOptions,
        config.ModelOptions,
        config.ScoringOptions,
        config.RowOptions,
        config.RunOptions,
        config.RayOptions,
        config.RerankOptions,
        config.ServeOptions,
    )
    # A field holding another option class (RunOptions.cache) has no literal default.
    return {f.name for cls in classes for f in fields(cls) if not is_dataclass(f.default_factory)}


def _option_aliases() -> set[str]:
    """Names of the shared option declarations (``Quiet = Annotated[bool, option(...)]``)."""
    from typing import Annotated, get_origin

    from codescaler_cli.cli import gate, options

    return {
        name
        for module in (options, gate)
        for name, value in vars(module).items()
        if get_origin(value) is Annotated
    }


def test_no_option_default_is_written_twice():
    """A default is read from its option class (default_of, or the class's attribute), never
    written again as a literal: not for a command-line option (a number or a string; True or
    False only for a command's own flag, like --quiet), nor for any parameter of a command
    or the Python API named like a field of an option class."""
    import ast

    fields, aliases = _option_fields(), _option_aliases()

    def is_option(arg: ast.arg) -> bool:
        ann = arg.annotation
        if isinstance(ann, ast.Subscript) and getattr(ann.value, "id", "") == "Annotated":
            return True
        return isinstance(ann, ast.Name) and ann.id in aliases

    written = []
    for path in OPTION_SOURCES:
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            a = fn.args
            positional = a.posonlyargs + a.args
            pairs = [*zip(positional[len(positional) - len(a.defaults) :], a.defaults, strict=True)]
            pairs += [(arg, d) for arg, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d]
            for arg, default in pairs:
                if not isinstance(default, ast.Constant) or default.value is None:
                    continue
                if not (arg.arg in fields or is_option(arg)):
                    continue
                if isinstance(default.value, bool) and arg.arg not in fields:
                    continue
                written.append(f"{path.name}:{default.lineno} {arg.arg}={default.value!r}")
    assert not written, written
    assert {"Quiet", "MaxLength", "Extract"} <= aliases  # the scan sees the declarations


def test_every_option_group_with_no_options_builds_the_class_defaults(monkeypatch):
    """What each command gets with no options at all is what the library's classes give."""
    import inspect

    from codescaler_cli.cli import groups
    from codescaler_cli.cli.serve import server_options
    from codescaler_cli.config import (
        RayOptions,
        RowOptions,
        RunOptions,
        ScoringOptions,
        ServeOptions,
    )
    from codescaler_cli.io.inputs import resolve_inputs

    monkeypatch.setenv("CODESCALER_MODEL", "my-org/my-model")
    from codescaler_cli.config import ModelOptions

    assert groups.model_options() == ModelOptions()
    assert groups.scoring_options() == ScoringOptions()
    for group in (groups.row_options, groups.reward_row_options, groups.pair_row_options):
        assert group() == RowOptions()
    assert groups.extract_row_options() == RowOptions(score=False)
    assert groups.robustness().run_options("o.jsonl", RowOptions()) == RunOptions("o.jsonl")
    assert groups.engine_options().ray == RayOptions()
    assert server_options() == ServeOptions()
    split = inspect.signature(resolve_inputs).parameters["split"].default
    assert groups.sources().split == split


def test_model_options_honour_codescaler_model_like_the_cli(monkeypatch):
    from codescaler_cli.config import DEFAULT_MODEL, ModelOptions, RowOptions, RunOptions

    monkeypatch.delenv("CODESCALER_MODEL", raising=False)
    assert ModelOptions().model == DEFAULT_MODEL
    monkeypatch.setenv("CODESCALER_MODEL", "my-org/my-model")
    assert ModelOptions().model == "my-org/my-model"
    assert RunOptions("o.jsonl", RowOptions()).model.model == "my-org/my-model"
    assert ModelOptions(model="other").model == "other"


def test_every_choice_option_shows_all_its_values_in_help():
    """From the Enum: in the help text (options.choices) or in Typer's own metavar."""
    import typer.main

    root = typer.main.get_command(app)
    seen = 0
    for name, command in root.commands.items():
        for param in command.params:
            desc = getattr(param, "type_descriptor", None)
            if desc is None or not desc.is_choice:
                continue
            seen += 1
            values = [str(c.value) for c in desc.choices]
            if param.metavar is not None:  # a short metavar: the help lists the values
                missing = [v for v in values if v not in (param.help or "")]
                assert not missing, (name, param.name, missing, param.help)
    assert seen >= 10


def test_choices_lists_every_value_in_order_with_meanings():
    from codescaler_cli.cli.options import choices
    from codescaler_cli.config import Dtype, EngineKind

    assert choices(EngineKind) == "local or ray"
    assert choices(Dtype, auto="x") == "auto (x), float32, bfloat16 or float16"
    with pytest.raises(ValueError, match="no value bogus"):
        choices(Dtype, bogus="x")


def test_bare_codescaler_prints_help_without_an_error_line():
    result = runner.invoke(app, [], prog_name="codescaler")
    assert result.exit_code == 0
    assert "Usage: codescaler" in result.stdout and "score" in result.stdout
    assert result.stderr == ""


def test_help_at_80_columns_fills_its_lines_and_leaves_no_word_alone():
    """Prose paragraphs are reflowed (not cut at the docstring's line breaks) on every page;
    the serve and make-test-model pages leave no single word on a line anywhere."""
    import re

    sys.path.insert(0, str(REPO / "docs"))
    import gen_cli

    commands = ["", *gen_cli.COMMANDS]
    for name, text in zip(commands, gen_cli.help_texts(commands, width=80), strict=True):
        lines = text.splitlines()
        prose = [ln.strip() for ln in lines if not ln.startswith(("│", "╭", "╰"))]
        for line, after in itertools.pairwise(prose):
            if line and after and not line.startswith("Usage:"):
                # the next line's first word did not fit on this one
                assert len(line) + 1 + len(after.split()[0]) > 78, (name, line, after)
        if name not in ("serve", "make-test-model"):
            continue
        for line in lines:
            cells = re.split(r"\s{2,}", line.strip().strip("│╭╮╰╯─").strip())
            lone = len(cells) == 1 and " " not in cells[0] and cells[0]
            if lone and line.startswith(("│" + " " * 8, " ")) and not cells[0].startswith("["):
                raise AssertionError((name, line))


def test_describe_error_gives_one_line():
    from codescaler_cli.errors import InputError, describe_error

    assert describe_error(InputError("a.jsonl line 3: bad")) == "a.jsonl line 3: bad"
    assert describe_error(ValueError("first\nsecond")) == "ValueError: first"
    assert describe_error(KeyError()) == "KeyError"
    assert describe_error(OSError("  \n")) == "OSError"
    assert len(describe_error(RuntimeError("x" * 1000))) == 300
