"""Nothing lost, nothing silently wrong, at the edges: one test (or a table of cases) per
principle. Each case is a situation a hostile or unlucky user can create."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from codescaler_cli.cli import app
from support.errors import one_line

REPO = Path(__file__).resolve().parents[1]
HOOKED = REPO / "tests" / "support" / "hooked_cli.py"
runner = CliRunner()


def _rows(n: int, start: int = 0) -> list[dict]:
    return [
        {
            "problem_id": f"p{i // 3}",
            "question": f"Problem {i // 3}: return the sum of the first {i} squares.",
            "response": f"```python\ndef f(n):\n    return sum(k * k for k in range({i}))\n```",
        }
        for i in range(start, start + n)
    ]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _score(args: list[str], model: Path | None = None, **kw):
    extra = ["--model", str(model), "--device", "cpu"] if model else []
    return runner.invoke(app, ["score", *args, *extra], **kw)


@contextlib.contextmanager
def _interrupted_at_third_chunk(monkeypatch):
    """Ctrl-C while the third chunk is prepared (two are checkpointed by then)."""
    from codescaler_cli.engines import local

    real = local.prepare_chunk

    def interrupt(chunk, *a, **k):
        if chunk.index == 2:
            raise KeyboardInterrupt
        return real(chunk, *a, **k)

    monkeypatch.setattr(local, "prepare_chunk", interrupt)
    yield
    monkeypatch.setattr(local, "prepare_chunk", real)


# ---------------------------------------------------------------- one writer per output


def test_a_second_run_on_the_same_output_is_refused_and_the_first_finishes(
    tiny_model_dir, tmp_path
):
    src = _jsonl(tmp_path / "in.jsonl", _rows(12))
    out = tmp_path / "out.parquet"
    signal_file, release = tmp_path / "one-chunk-done", tmp_path / "go-on"
    env = {
        **os.environ,
        "CODESCALER_TEST_BLOCK_AFTER": "1",
        "CODESCALER_TEST_SIGNAL": str(signal_file),
        "CODESCALER_TEST_RELEASE": str(release),
    }
    cmd = [sys.executable, str(HOOKED), "score", str(src), "-o", str(out), "--model",
           str(tiny_model_dir), "--device", "cpu", "--chunk-size", "4", "-q"]  # fmt: skip
    first = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not signal_file.exists():
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
            time.sleep(0.05)
        # Another model, another chunk size: it would interleave its parts with the first's.
        second = _score([str(src), "-o", str(out), "--chunk-size", "5"], tiny_model_dir)
        one_line(second, 1, f"another codescaler run (pid {first.pid})", "choose another -o")
        release.touch()
        assert first.wait(timeout=120) == 0, first.stderr.read()
    finally:
        if first.poll() is None:
            first.kill()
    reference = tmp_path / "ref.parquet"
    assert (
        _score([str(src), "-o", str(reference), "--chunk-size", "4"], tiny_model_dir).exit_code == 0
    )
    assert pq.read_table(out).equals(pq.read_table(reference))
    assert not Path(f"{out}.partial").exists()


def test_a_stale_lock_is_taken_over_and_a_held_one_names_its_holder(tmp_path):
    from codescaler_cli.errors import OutputError
    from codescaler_cli.io.lock import OutputLock

    partial = tmp_path / "out.parquet.partial"
    partial.mkdir()
    (partial / "lock").write_text("4242\n")  # left by a killed run: nobody holds it
    lock = OutputLock(str(partial), "out.parquet")
    lock.acquire()
    assert lock.previous_pid == 4242
    assert (partial / "lock").read_text().strip() == str(os.getpid())
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time\n"
         f"fh = open({str(partial / 'lock')!r}, 'r+'); fcntl.flock(fh, fcntl.LOCK_EX)\n"
         "fh.seek(0); fh.truncate(); fh.write('777\\n'); fh.flush(); print('held', flush=True)\n"
         "time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    lock.release()
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputError, match=r"another codescaler run \(pid 777\)"):
            OutputLock(str(partial), "out.parquet").acquire()
    finally:
        holder.kill()
        holder.wait()


# ---------------------------------------------------------------- every path checked first


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--rejected", "{src}"], "--rejected {src} is an input"),
        (["--summary-json", "{src}"], "--summary-json {src} is an input"),
        (["--rejected", "{out}"], "--rejected {out} and -o {out} are the same file"),
        (["--summary-json", "{out}"], "--summary-json {out} and -o {out} are the same file"),
        (["--rejected", "{tmp}/no/such/dir/r.jsonl"], "--rejected {tmp}/no/such/dir/r.jsonl"),
        (["--summary-json", "{tmp}"], "is a directory"),
    ],
)
def test_side_outputs_are_checked_before_any_work(tmp_path, extra, needle, monkeypatch):
    import codescaler_cli.model.load as load

    monkeypatch.setattr(load, "load_reward_model", _no_model)
    src = _jsonl(tmp_path / "in.jsonl", _rows(5))
    before = src.read_bytes()
    out = tmp_path / "out.parquet"
    fill = {"src": str(src), "out": str(out), "tmp": str(tmp_path)}
    args = [str(src), "-o", str(out), *(a.format(**fill) for a in extra)]
    result = _score(args, Path(__file__).parent)  # a directory that exists; never loaded
    code = 1 if "no/such/dir" in needle or "directory" in needle else 2
    one_line(result, code, needle.format(**fill))
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_metrics_json_equal_to_the_input_is_refused_before_scoring(tmp_path, monkeypatch):
    import codescaler_cli.model.load as load

    monkeypatch.setattr(load, "load_reward_model", _no_model)
    src = _jsonl(tmp_path / "in.jsonl", _rows(5))
    for command in (["rerank"], ["eval-pairs"]):
        r = runner.invoke(app, [*command, str(src), "-o", str(tmp_path / "o.jsonl"),
                                "--metrics-json", str(src)])  # fmt: skip
        one_line(r, 2, f"--metrics-json {src} is an input")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_output_inside_the_input_directory_is_never_read_and_resumes(
    tiny_model_dir, tmp_path, monkeypatch
):

    data = tmp_path / "data"
    data.mkdir()
    _jsonl(data / "a.jsonl", _rows(8))
    _jsonl(data / "b.jsonl", _rows(8, 8))
    out = data / "scored.jsonl"
    args = [str(data), "-o", str(out), "--chunk-size", "4", "--summary-json", str(data / "s.json")]
    with _interrupted_at_third_chunk(monkeypatch):
        assert _score(args, tiny_model_dir).exit_code == 130
    assert Path(f"{out}.partial").is_dir()
    result = _score(args, tiny_model_dir)
    assert result.exit_code == 0, result.output
    summary = json.loads((data / "s.json").read_text())
    assert summary["chunks_resumed"] == 2 and summary["rows_read"] == 16
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["question"] for r in rows] == [r["question"] for r in _rows(16)]
    # A third run reads the same two inputs, not its own output, summary or checkpoint.
    result = _score(args, tiny_model_dir)
    assert result.exit_code == 0 and json.loads((data / "s.json").read_text())["rows_read"] == 16


# ---------------------------------------------------------------- resume only on the same model


def test_kill_swap_the_weights_rerun_starts_over_with_the_new_model(tmp_path, monkeypatch):
    from codescaler_cli.tiny_model import build_tiny_reward_model

    model = build_tiny_reward_model(tmp_path / "model", seed=1)
    src = _jsonl(tmp_path / "in.jsonl", _rows(12))
    out = tmp_path / "out.parquet"
    args = [str(src), "-o", str(out), "--chunk-size", "4"]
    with _interrupted_at_third_chunk(monkeypatch):
        assert _score([*args, "-q"], model).exit_code == 130
    build_tiny_reward_model(model, seed=2)  # new weights, same shapes, same directory
    result = _score(args, model)
    assert result.exit_code == 0, result.output
    assert "the model changed" in result.stderr and "starting over" in result.stderr
    fresh = tmp_path / "fresh.parquet"
    assert _score([str(src), "-o", str(fresh), "--chunk-size", "4", "-q"], model).exit_code == 0
    assert pq.read_table(out).column("score").equals(pq.read_table(fresh).column("score"))


@pytest.mark.parametrize("change", ["chat_template", "max_length", "dtype"])
def test_what_decides_a_score_is_in_the_fingerprint(tmp_path, change):
    from codescaler_cli.config import ModelOptions, RunOptions, ScoringOptions
    from codescaler_cli.engines.loop import run_fingerprint
    from codescaler_cli.io.inputs import resolve_inputs
    from codescaler_cli.tiny_model import build_tiny_reward_model

    model = build_tiny_reward_model(tmp_path / "m")
    specs = resolve_inputs([str(_jsonl(tmp_path / "in.jsonl", _rows(2)))])
    opts = RunOptions("o.parquet", model=ModelOptions(model=str(model), device="cpu"))
    before = run_fingerprint(specs, opts, "cpu")
    if change == "chat_template":
        template = model / "chat_template.jinja"
        template.write_text(template.read_text() + "\n")
    elif change == "max_length":
        opts = RunOptions("o.parquet", model=opts.model, scoring=ScoringOptions(max_length=512))
    else:
        opts = RunOptions(
            "o.parquet", model=ModelOptions(str(model), device="cpu", dtype="bfloat16")
        )
    assert run_fingerprint(specs, opts, "cpu") != before


# ---------------------------------------------------------------- pass-through round trip

ODD_ROWS = [
    {"nested": {"a": 1, "b": [1, 2]}, "empty": {}, "big": 2**70, "mixed": 1, "lst": []},
    {"nested": {"b": [], "a": None}, "empty": {}, "big": -(2**64), "mixed": 1.5, "lst": [[]]},
    {"nested": {"a": 3}, "empty": {"k": {}}, "big": 5, "mixed": "one", "lst": [1]},
    {"nested": None, "empty": [], "big": None, "mixed": True, "lst": [{"x": 1}]},
    {"nested": {"a": 1, "b": [1, 2]}, "empty": "", "big": 1.0, "mixed": [1, "a"], "lst": None},
]


def _odd_input(tmp_path: Path) -> tuple[Path, list[dict]]:
    rows = [
        {"question": f"q{i}", "response": f"x = {i}\n", **extra, "id": 10**20 + i if i % 2 else i}
        for i, extra in enumerate(ODD_ROWS)
    ]
    return _jsonl(tmp_path / "odd.jsonl", rows), rows


def _exact(value) -> str:
    """Type-exact comparison key: 1, 1.0 and True differ."""
    return json.dumps(value, sort_keys=False)


@pytest.mark.parametrize("chunk_size", ["1", "2", "50"])
def test_jsonl_to_jsonl_gives_back_every_value_and_type(tmp_path, chunk_size):
    src, rows = _odd_input(tmp_path)
    out = tmp_path / "out.jsonl"
    r = runner.invoke(app, ["extract", str(src), "-o", str(out), "--chunk-size", chunk_size, "-q"])
    assert r.exit_code == 0, r.output
    got = [json.loads(line) for line in out.read_text().splitlines()]
    for want, have in zip(rows, got, strict=True):
        assert {k: _exact(have[k]) for k in want} == {k: _exact(v) for k, v in want.items()}
    stdout = runner.invoke(app, ["extract", str(src), "-o", "-", "--chunk-size", chunk_size])
    streamed = [json.loads(line) for line in stdout.stdout.splitlines()]
    assert [_exact(r) for r in streamed] == [_exact(r) for r in got]


def test_jsonl_to_parquet_keeps_native_types_and_json_text_for_the_rest(tmp_path):
    from codescaler_cli.tables import json_columns

    src, rows = _odd_input(tmp_path)
    out = tmp_path / "out.parquet"
    r = runner.invoke(app, ["extract", str(src), "-o", str(out), "--chunk-size", "2", "-q"])
    assert r.exit_code == 0, r.output
    table = pq.read_table(out)
    as_json = json_columns(table.schema)
    assert set(as_json) == {"nested", "empty", "big", "mixed", "lst", "id"}
    assert str(table.schema.field("question").type) == "string"
    for name in as_json:
        values = [None if v is None else json.loads(v) for v in table.column(name).to_pylist()]
        assert [_exact(v) for v in values] == [_exact(r.get(name)) for r in rows], name
    # Parquet -> JSON Lines gives the values back too.
    back = tmp_path / "back.jsonl"
    assert runner.invoke(app, ["extract", str(out), "-o", str(back), "-q"]).exit_code == 0
    again = [json.loads(line) for line in back.read_text().splitlines()]
    assert [_exact(r["big"]) for r in again] == [_exact(r["big"]) for r in rows]


def test_a_type_that_drifts_between_chunks_still_merges(tmp_path):
    rows = [{"question": "q", "response": "x = 1\n", "id": v} for v in (2**70, 1.5, 3, "s", None)]
    src = _jsonl(tmp_path / "in.jsonl", rows)
    for out in (tmp_path / "o.parquet", tmp_path / "o.jsonl"):
        r = runner.invoke(app, ["extract", str(src), "-o", str(out), "--chunk-size", "1", "-q"])
        assert r.exit_code == 0, r.output
    got = [json.loads(line)["id"] for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [_exact(v) for v in got] == [_exact(r["id"]) for r in rows]


# ---------------------------------------------------------------- bad rows are rows


def test_a_lone_surrogate_is_a_bad_row_named_or_skipped(tmp_path):
    src = tmp_path / "in.jsonl"
    good = json.dumps({"question": "q", "response": "x = 1\n"})
    src.write_text(good + '\n{"question": "q\\ud800", "response": "x"}\n' + good + "\n")
    out = tmp_path / "o.jsonl"
    r = runner.invoke(app, ["extract", str(src), "-o", str(out)])
    one_line(r, 1, f"{src}:2", "lone surrogate")
    r = runner.invoke(app, ["extract", str(src), "-o", str(out), "--on-bad-row", "skip", "-q"])
    assert r.exit_code == 0, r.output
    assert len(out.read_text().splitlines()) == 2
    rejected = [json.loads(x) for x in (tmp_path / "o.rejected.jsonl").read_text().splitlines()]
    assert [x["location"] for x in rejected] == [f"{src}:2"]


def test_a_6_mb_response_is_flagged_in_bounded_time_and_memory(rm):
    import tracemalloc

    from codescaler_cli.config import RowOptions
    from codescaler_cli.fields import Fields
    from codescaler_cli.io.readers import Chunk
    from codescaler_cli.scoring.scorer import Scorer
    from codescaler_cli.stages import process_chunk

    huge = "```python\n" + "x = 1\n" * 1_000_000 + "```"  # 6 MB
    rows = [{"question": "q", "response": huge}, {"question": "q", "response": "y = 2\n"}]
    tracemalloc.start()
    started = time.perf_counter()
    result = process_chunk(Chunk(0, rows, ["a:1", "a:2"]), Fields("question", "response"),
                           RowOptions(), Scorer(rm))  # fmt: skip
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 5 and peak < 1 << 30, (seconds, peak)
    got = result.table.select(["truncated", "code_valid", "score", "reward", "extract_method"])
    assert got.to_pylist()[0] == {
        "truncated": True, "code_valid": False, "score": None, "reward": 0.0,
        "extract_method": "too_long",
    }  # fmt: skip
    assert got.to_pylist()[1]["score"] is not None


# ---------------------------------------------------------------- readers accept what producers write


def test_readers_take_a_bom_arrays_and_pretty_printed_objects(tmp_path):
    rows = _rows(3)
    bom = b"\xef\xbb\xbf"
    files = {
        "bom.jsonl": bom + "".join(json.dumps(r) + "\n" for r in rows).encode(),
        "bom_array.json": bom + json.dumps(rows).encode(),
        "pretty.json": "\n".join(json.dumps(r, indent=2) for r in rows).encode(),
        "one.json": json.dumps(rows[0], indent=4).encode(),
    }
    for name, data in files.items():
        src = tmp_path / name
        src.write_bytes(data)
        out = tmp_path / f"{name}.out.jsonl"
        r = runner.invoke(app, ["extract", str(src), "-o", str(out), "-q"])
        assert r.exit_code == 0, (name, r.output)
        got = [json.loads(line)["question"] for line in out.read_text().splitlines()]
        assert got == [r["question"] for r in rows][: 1 if name == "one.json" else 3], name


def test_mixed_files_in_a_directory_each_get_their_fields(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _jsonl(data / "a.jsonl", [{"question": "q1", "response": "x = 1\n"}])
    _jsonl(data / "b.jsonl", [{"prompt": "q2", "completion": "y = 2\n"}])
    out = tmp_path / "o.jsonl"
    r = runner.invoke(app, ["extract", str(data), "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert [json.loads(line)["code"] for line in out.read_text().splitlines()] == ["x = 1", "y = 2"]
    _jsonl(data / "c.jsonl", [{"title": "no fields here"}])
    r = runner.invoke(app, ["extract", str(data), "-o", str(out)])
    one_line(r, 2, f"{data / 'c.jsonl'}: no question column found")


def test_a_damaged_parquet_file_is_named(tmp_path):
    good = tmp_path / "good.parquet"
    pq.write_table(__import__("pyarrow").Table.from_pylist(_rows(200)), good)
    data = bytearray(good.read_bytes())
    data[200:400] = b"\x00" * 200  # a page of the first column
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(bytes(data))
    r = runner.invoke(app, ["extract", str(bad), "-o", str(tmp_path / "o.jsonl")])
    one_line(r, 1, f"{bad}: not a readable Parquet file")


# ---------------------------------------------------------------- clean failure


def test_a_model_that_cannot_load_leaves_no_partial_directory(tmp_path):
    src = _jsonl(tmp_path / "in.jsonl", _rows(3))
    out = tmp_path / "o.parquet"
    empty = tmp_path.parent / f"{tmp_path.name}-no-model"  # a directory with no model in it
    empty.mkdir()
    r = _score([str(src), "-o", str(out), "-q"], empty)
    one_line(r, 1, "cannot load model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_an_unexpected_error_before_a_chunk_finishes_leaves_nothing(tmp_path, monkeypatch):
    from codescaler_cli.engines import local

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(local, "prepare_chunk", boom)
    src = _jsonl(tmp_path / "in.jsonl", _rows(3))
    r = runner.invoke(app, ["extract", str(src), "-o", str(tmp_path / "o.parquet")])
    one_line(r, 1, "unexpected RuntimeError: disk on fire")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_temporaries_of_a_killed_merge_are_cleaned_and_outputs_honour_the_umask(tmp_path):
    src = _jsonl(tmp_path / "in.jsonl", _rows(3))
    out = tmp_path / "o.parquet"
    left = [tmp_path / ".o.parquet.abc123.tmp", tmp_path / ".o.rejected.jsonl.x1.tmp"]
    for path in left:
        path.write_bytes(b"half a merge")
    keep = tmp_path / ".other.tmp"
    keep.write_text("not ours")
    old = os.umask(0o027)
    try:
        r = runner.invoke(app, ["extract", str(src), "-o", str(out), "-q"])
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    assert not any(p.exists() for p in left) and keep.exists()
    mode = out.stat().st_mode & 0o777
    assert mode == 0o666 & ~old, oct(mode)  # umask at import (0o022 here): 0o644, not 0o600


# ---------------------------------------------------------------- grouping keeps types


def _scored_rows(groups: list) -> list[dict]:
    from support.scored import scored_row

    return [scored_row(float(i), problem_id=g) for i, g in enumerate(groups)]


def test_rerank_groups_by_exact_value_unless_asked(tmp_path):
    src = _jsonl(tmp_path / "in.jsonl", _scored_rows([1, "1", 1, "1", 1.0]))
    out = tmp_path / "o.jsonl"
    r = runner.invoke(app, ["rerank", str(src), "-o", str(out), "--all", "-q"])
    assert r.exit_code == 0, r.output
    sizes = [
        (x["problem_id"], x["group_size"]) for x in map(json.loads, out.read_text().splitlines())
    ]
    assert sorted(set(map(repr, sizes))) == sorted({repr((1, 2)), repr(("1", 2)), repr((1.0, 1))})
    r = runner.invoke(app, ["rerank", str(src), "-o", str(out), "--all", "--group-as-text", "-q"])
    assert r.exit_code == 0, r.output
    assert {json.loads(x)["group_size"] for x in out.read_text().splitlines()} == {4, 1}


@pytest.mark.parametrize(
    ("rows", "args", "code", "needle"),
    [
        ([{"problem_id": [1]}], [], 1, "in.jsonl:1: group field 'problem_id' holds a list"),
        ([{"problem_id": None}], [], 1, "in.jsonl:1: group field 'problem_id' is null"),
        ([{"passed": "maybe"}], [], 1, "in.jsonl:1: field 'passed': label 'maybe'"),
        ([{}], ["--group-field", "pid"], 2, "group field 'pid' not found"),
        ([{}], ["--label-field", "ok"], 2, "label field 'ok' not found"),
        ([{}], ["--by", "size"], 2, "'size' is not one of 'reward', 'score'"),
        ([{}], ["--fail-under", "nan"], 2, "--fail-under is a fraction between 0 and 1"),
    ],
)
def test_rerank_checks_every_option_and_field_before_scoring(
    tmp_path, monkeypatch, rows, args, code, needle
):
    import codescaler_cli.model.load as load

    monkeypatch.setattr(load, "load_reward_model", _no_model)
    base = {"problem_id": "p", "question": "q", "response": "x = 1\n"}
    src = _jsonl(tmp_path / "in.jsonl", [{**base, **r} for r in rows])
    r = runner.invoke(app, ["rerank", str(src), "-o", str(tmp_path / "o.jsonl"), *args])
    one_line(r, code, needle)


# ---------------------------------------------------------------- messages say what to do


def test_model_errors_name_the_flag_or_the_cause(tiny_model_dir, tmp_path):
    custom = tmp_path / "custom"
    shutil.copytree(tiny_model_dir, custom)
    config = json.loads((custom / "config.json").read_text())
    auto = {"AutoConfig": "conf.C", "AutoModelForSequenceClassification": "mod.M"}
    (custom / "config.json").write_text(json.dumps({**config, "auto_map": auto, "model_type": "x"}))
    mismatched = tmp_path / "mismatched"
    shutil.copytree(tiny_model_dir, mismatched)
    (mismatched / "config.json").write_text(json.dumps({**config, "intermediate_size": 96}))
    src = _jsonl(tmp_path / "in.jsonl", _rows(2))
    out = str(tmp_path / "o.parquet")
    one_line(_score([str(src), "-o", out, "-q"], custom), 1, "rerun with --trust-remote-code")
    err = one_line(_score([str(src), "-o", out, "-q"], mismatched), 1, "do not fit its config")
    assert "mlp" in err and "above" not in err


def _no_model(*a, **k):
    raise AssertionError("the model must not be loaded")


# ---------------------------------------------------------------- found in review


def test_objects_whose_keys_differ_between_chunks_keep_their_keys(tmp_path):
    rows = [
        {"question": "q", "response": "x = 1\n", "meta": {"a": 1, "b": 2}},
        {"question": "q", "response": "x = 1\n", "meta": {"b": 3}},
        {"question": "q", "response": "x = 1\n", "meta": {"b": 1, "a": 2}},
    ]
    src = _jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "o.parquet"
    r = runner.invoke(app, ["extract", str(src), "-o", str(out), "--chunk-size", "1", "-q"])
    assert r.exit_code == 0, r.output
    values = [json.loads(v) for v in pq.read_table(out).column("meta").to_pylist()]
    assert [list(v.items()) for v in values] == [list(r["meta"].items()) for r in rows]


def test_input_columns_named_like_outputs_never_collide(tmp_path):
    src = _jsonl(tmp_path / "in.jsonl", [
        {"question": "q", "response": "```python\nx = 1\n```", "code": 1, "input_code": 2}
    ])  # fmt: skip
    for out in (tmp_path / "o.jsonl", tmp_path / "o.parquet"):
        r = runner.invoke(app, ["extract", str(src), "-o", str(out), "-q"])
        assert r.exit_code == 0, r.output
    row = json.loads((tmp_path / "o.jsonl").read_text())
    assert (row["input_code"], row["input_input_code"], row["code"]) == (1, 2, "x = 1")
    assert pq.read_table(tmp_path / "o.parquet").column("input_input_code").to_pylist() == [2]


def test_ctrl_c_while_counting_rows_leaves_nothing_and_frees_the_lock(tmp_path, monkeypatch):
    import codescaler_cli.engines.loop as loop
    from codescaler_cli.config import RowOptions, RunOptions
    from codescaler_cli.io.inputs import resolve_inputs

    def interrupted(specs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "count_rows", interrupted)
    src = _jsonl(tmp_path / "in.jsonl", _rows(3))
    opts = RunOptions(str(tmp_path / "o.jsonl"), RowOptions(score=False))
    with pytest.raises(KeyboardInterrupt):
        loop.run(resolve_inputs([str(src)]), opts)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_a_file_where_the_checkpoint_goes_is_refused_first(tmp_path):
    src = _jsonl(tmp_path / "in.jsonl", _rows(3))
    (tmp_path / "o.jsonl.partial").write_text("not a directory")
    r = runner.invoke(app, ["extract", str(src), "-o", str(tmp_path / "o.jsonl")])
    one_line(r, 1, "o.jsonl.partial is a file")


def test_a_failed_batch_fails_only_the_request_at_fault():
    from codescaler_cli.config import ServeOptions
    from codescaler_cli.scoring.oom import ScoreStats
    from codescaler_cli.scoring.scorer import PairScores
    from codescaler_cli.serve.batcher import Batcher, Candidate, Ticket

    class Scorer:  # what the batcher uses of one; fails on a poisoned candidate
        stats = ScoreStats()

        def prepare(self, questions, codes):
            if "boom" in codes:
                raise RuntimeError("tokenizer failed")
            return type("P", (), {"owner": list(range(len(codes))), "encoded": codes})()

        def run(self, prepared, progress=None):
            n = len(prepared.encoded)
            return PairScores([1.0] * n, [3] * n, [False] * n, [False] * n, n)

    batcher = Batcher(Scorer(), ServeOptions(batch_window_ms=2000))  # type: ignore[arg-type]
    try:
        tickets = [Ticket(batcher), Ticket(batcher)]  # both announced: one batch holds both
        good = batcher.submit([Candidate("q", "x = 1")], tickets[0])
        bad = batcher.submit([Candidate("q", "boom")], tickets[1])
        assert good.result(timeout=30)[0].score == 1.0
        with pytest.raises(RuntimeError, match="tokenizer failed"):
            bad.result(timeout=30)
    finally:
        batcher.close()
