"""Ranking, selection metrics, `rerank` and `eval-pairs`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from codescaler_cli.api import rerank
from codescaler_cli.cli import app
from codescaler_cli.config import RankBy
from codescaler_cli.errors import InputError
from codescaler_cli.exactness import FLOAT32
from codescaler_cli.provenance import OUTPUT_COLUMNS, Provenance, provenance_array
from codescaler_cli.rank import PairAccumulator, parse_label
from codescaler_cli.tasks.rerank import rank_file

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data" / "candidates.jsonl"
SCORED_BY = Provenance(model="m", dtype="float32", max_length=64, columns=OUTPUT_COLUMNS)


def scored_rows(**cols) -> pa.Table:
    """Rows as ``score`` writes them (each with its provenance)."""
    n = len(next(iter(cols.values())))
    cols.setdefault("code_valid", [True] * n)
    t = pa.table(cols)
    return t.append_column("codescaler", provenance_array([SCORED_BY] * n))


def ranked(tmp_path, table, top_k=0, by=RankBy.reward, labels=None, as_text=False):
    src, out = tmp_path / "in.parquet", tmp_path / "out.parquet"
    pq.write_table(table, src)
    m = rank_file(str(src), "g", labels, top_k, by, as_text, str(out), None, str(tmp_path))
    return pq.read_table(out).to_pylist(), m


# ---------------------------------------------------------------- ranking


def test_rank_by_reward_ties_by_score_then_input_order(tmp_path):
    t = scored_rows(
        g=["a", "a", "a", "a", "b"],
        reward=[1.0, 2.0, 2.0, 2.0, 0.5],
        score=[1.0, 1.5, 1.7, 1.5, 0.1],
        i=[0, 1, 2, 3, 4],
    )
    rows, _ = ranked(tmp_path, t)
    assert [(r["i"], r["rank"], r["group_size"]) for r in rows] == [
        (2, 1, 4), (1, 2, 4), (3, 3, 4), (0, 4, 4), (4, 1, 1)
    ]  # fmt: skip
    assert rows[0]["codescaler"]["columns"][-2:] == ["rank", "group_size"]


def test_missing_or_nan_scores_sort_last_and_by_score(tmp_path):
    t = scored_rows(
        g=["g"] * 4,
        reward=[0.0, 0.0, 0.0, 0.0],
        score=[-1.0, 3.0, None, float("nan")],
        i=[0, 1, 2, 3],
    )
    rows, _ = ranked(tmp_path, t)
    assert [r["i"] for r in rows] == [1, 0, 2, 3]
    t = scored_rows(g=["g", "g"], reward=[0.0, 0.2], score=[5.0, -1.0], i=[0, 1])
    rows, _ = ranked(tmp_path, t, by=RankBy.score)
    assert [r["i"] for r in rows] == [0, 1]


def test_top_k_larger_than_group_and_group_order(tmp_path):
    t = scored_rows(
        g=["x", "y", "x", "y", "x"],
        reward=[1.0, 3.0, 3.0, 2.0, 2.0],
        score=[0.0] * 5,
        i=[0, 1, 2, 3, 4],
    )
    assert [r["i"] for r in ranked(tmp_path, t, top_k=1)[0]] == [2, 1]
    assert [r["i"] for r in ranked(tmp_path, t, top_k=10)[0]] == [2, 4, 0, 1, 3]


def test_groups_are_exact_values_unless_as_text(tmp_path):
    t = scored_rows(g=["1", "1", "2"], reward=[1.0, 2.0, 3.0], score=[0.0] * 3, i=[0, 1, 2])
    t = t.set_column(0, "g", pa.array(['"1"', "1", "2"]))
    meta = {b"codescaler.json_columns": b'["g"]'}
    t = t.replace_schema_metadata(meta)
    rows, m = ranked(tmp_path, t, top_k=1)
    assert m.groups == 3
    rows, m = ranked(tmp_path, t, top_k=1, as_text=True)
    assert m.groups == 2 and [r["i"] for r in rows] == [1, 2]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (0, False), (1.0, True), ("false", False), ("1", True), (None, None)],
)
def test_parse_label(value, expected):
    assert parse_label(value, "row 0") is expected


def test_parse_label_rejects_other_values():
    with pytest.raises(InputError, match="not a boolean"):
        parse_label(2, "row 3")


def test_metrics_by_hand(tmp_path):
    # group a: 3 candidates, 1 passes, top-1 is the passing one
    # group b: 2 candidates, both fail; group c: 1 candidate that passes, top-1 passes
    t = scored_rows(
        g=["a", "a", "a", "b", "b", "c"],
        reward=[0.5, 2.0, 0.0, 1.0, 0.7, 0.3],
        score=[0.1, 1.9, -4.0, 0.5, 0.2, -1.0],
        passed=[False, True, False, False, False, True],
        code_valid=[True, True, False, True, True, True],
    )
    _, m = ranked(tmp_path, t, top_k=1, labels="passed")
    assert m.groups == 3 and m.candidates == 6 and m.selected == 3
    assert m.best_of_n_accuracy == pytest.approx(2 / 3)  # a: pass, b: fail, c: pass
    assert m.random_accuracy == pytest.approx((1 / 3 + 0 + 1) / 3)
    assert m.oracle_accuracy == pytest.approx(2 / 3)
    assert m.selected_mean_reward == pytest.approx((2.0 + 1.0 + 0.3) / 3)
    assert m.gate_value() == ("best-of-N accuracy", pytest.approx(2 / 3))
    _, unlabelled = ranked(tmp_path, t, top_k=1)
    assert unlabelled.gate_value() == ("best-of-N accuracy", None)


def test_pair_accuracy():
    acc = PairAccumulator()
    assert acc.add([2.0, 1.0], [1.0, 1.0]) == [True, False]
    assert acc.add([None, 3.0], [0.0, None]) == [False, True]
    m = acc.result()
    assert m.accuracy == 0.5 and m.ties == 1 and m.unscored == 2
    assert m.mean_margin == pytest.approx(0.5)


# ---------------------------------------------------------------- Python API


def test_rerank_api_on_scored_records_needs_no_model(monkeypatch):
    import codescaler_cli.model.load as model_mod

    monkeypatch.setattr(model_mod, "load_reward_model", _no_model)
    prov = {**SCORED_BY.as_value(), "question_field": "question", "response_field": "response"}
    rows = [
        {"task_id": "t1", "question": "q", "response": "a", "score": 1.0, "reward": 1.3},
        {"task_id": "t1", "question": "q", "response": "b", "score": 3.0, "reward": 3.05},
        {"task_id": "t2", "question": "r", "response": "c", "score": 9.0, "reward": 0.0},
    ]
    for r in rows:
        r.update(code="x", code_valid=r["reward"] > 0, extract_method="verbatim")
        r.update(n_code_blocks=0, n_tokens=5, truncated=False, codescaler=prov)
    out = rerank(rows, top_k=1)
    assert [(r["task_id"], r["score"], r["rank"]) for r in out] == [("t1", 3.0, 1), ("t2", 9.0, 1)]


def _no_model(*a, **k):
    raise AssertionError("the model must not be loaded")


# ---------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def scored(tiny_model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rank") / "scored.parquet"
    r = runner.invoke(
        app,
        [
            "score",
            str(SAMPLE),
            "-o",
            str(out),
            "--model",
            str(tiny_model_dir),
            "--device",
            "cpu",
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    return out


def test_rerank_scored_equals_rerank_raw_without_loading(
    scored, tiny_model_dir, tmp_path, monkeypatch
):
    raw_out = tmp_path / "raw.jsonl"
    r = runner.invoke(
        app,
        [
            "rerank",
            str(SAMPLE),
            "-o",
            str(raw_out),
            "--model",
            str(tiny_model_dir),
            "--device",
            "cpu",
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    import codescaler_cli.model.load as model_mod

    monkeypatch.setattr(model_mod, "load_reward_model", _no_model)
    scored_out = tmp_path / "scored.jsonl"
    r = runner.invoke(app, ["rerank", str(scored), "-o", str(scored_out), "-q"])
    assert r.exit_code == 0, r.output
    a = [json.loads(x) for x in raw_out.read_text().splitlines()]
    b = [json.loads(x) for x in scored_out.read_text().splitlines()]
    assert len(a) == 4  # one per problem
    assert [(x["problem_id"], x["candidate"], x["rank"]) for x in a] == [
        (x["problem_id"], x["candidate"], x["rank"]) for x in b
    ]
    for x, y in zip(a, b, strict=True):
        assert x["score"] == pytest.approx(y["score"], abs=FLOAT32)


def test_rerank_all_and_metrics_json(scored, tmp_path):
    out = tmp_path / "all.parquet"
    metrics = tmp_path / "m.json"
    r = runner.invoke(
        app, ["rerank", str(scored), "-o", str(out), "--all", "--metrics-json", str(metrics)]
    )
    assert r.exit_code == 0, r.output
    t = pq.read_table(out)
    assert t.num_rows == 17
    pids = t.column("problem_id").to_pylist()
    ranks = t.column("rank").to_pylist()
    # grouped by problem (first appearance order), ranks ascending within a group
    assert pids == sorted(
        pids, key=["two-sum", "word-count", "fizzbuzz", "median-two-sorted"].index
    )
    for pid in set(pids):
        rs = [rk for p, rk in zip(pids, ranks, strict=True) if p == pid]
        assert rs == list(range(1, len(rs) + 1))
    data = json.loads(metrics.read_text())
    assert data["labelled"] is True and data["groups"] == 4
    assert 0.0 <= data["best_of_n_accuracy"] <= 1.0
    assert data["oracle_accuracy"] == 1.0
    assert "best-of-N accuracy" in r.stderr


def test_fail_under_gates_the_exit_code(scored, tmp_path):
    ok = runner.invoke(app, ["rerank", str(scored), "-o", "-", "--fail-under", "0.0", "-q"])
    assert ok.exit_code == 0
    assert "best-of-N accuracy" in ok.stderr and "passed" in ok.stderr
    bad = runner.invoke(app, ["rerank", str(scored), "-o", "-", "--fail-under", "0.99", "-q"])
    assert bad.exit_code == 1
    assert "best-of-N accuracy" in bad.stderr and "below --fail-under 0.99" in bad.stderr
    for value in ("25", "1.01", "-0.1", "nan"):  # a percent is refused, not never-passing
        r = runner.invoke(app, ["rerank", str(scored), "-o", "-", "--fail-under", value])
        assert r.exit_code == 2 and "fraction between 0 and 1" in r.stderr, value
    # labels all null: the metric cannot be computed, so the gate fails (never switches)
    t = pq.read_table(scored)
    t = t.set_column(t.column_names.index("passed"), "passed", pa.nulls(t.num_rows, pa.bool_()))
    pq.write_table(t, tmp_path / "nolabels.parquet")
    r = runner.invoke(
        app, ["rerank", str(tmp_path / "nolabels.parquet"), "-o", "-", "--fail-under", "0"]
    )
    assert r.exit_code == 1 and "cannot be computed" in r.stderr
    # no label column: refused before any work
    pq.write_table(t.drop_columns(["passed"]), tmp_path / "unlabelled.parquet")
    out = tmp_path / "o.jsonl"
    r = runner.invoke(
        app, ["rerank", str(tmp_path / "unlabelled.parquet"), "-o", str(out), "--fail-under", "0"]
    )
    assert r.exit_code == 2 and "needs a label column" in r.stderr and not out.exists()


def test_group_field_fallback_to_question(tiny_model_dir, tmp_path):
    src = tmp_path / "nogroup.jsonl"
    src.write_text(
        "".join(
            json.dumps({"question": r["question"], "response": r["response"]}) + "\n"
            for r in map(json.loads, SAMPLE.read_text().splitlines())
        )
    )
    r = runner.invoke(
        app,
        ["rerank", str(src), "-o", "-", "--model", str(tiny_model_dir), "--device", "cpu", "-q"],
    )
    assert r.exit_code == 0, r.output
    assert len(r.stdout.splitlines()) == 4


def test_shell_pipeline_one_line_per_problem(tiny_model_dir):
    env = {**os.environ, "CODESCALER_MODEL": str(tiny_model_dir)}
    cmd = (
        f"cat {SAMPLE} | {sys.executable} -m codescaler_cli rerank - -o - --top-k 1 --device cpu"
        f' | {sys.executable} -c "import sys, json; rows=[json.loads(l) for l in sys.stdin];'
        " print(len(rows), len({r['problem_id'] for r in rows}))\""
    )
    proc = subprocess.run(
        cmd, shell=True, capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "4 4"


def test_eval_pairs(tiny_model_dir, tmp_path):
    rows = list(map(json.loads, SAMPLE.read_text().splitlines()))
    by_pid: dict[str, list[dict]] = {}
    for r in rows:
        by_pid.setdefault(r["problem_id"], []).append(r)
    pairs = []
    for cands in by_pid.values():
        good = [c for c in cands if c["passed"]]
        bad = [c for c in cands if not c["passed"]]
        for g, b in zip(good, bad, strict=False):
            pairs.append(
                {
                    "question_content": g["question"],
                    "code_pos": g["response"],
                    "code_neg": b["response"],
                }
            )
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    out = tmp_path / "pairs_scored.jsonl"
    metrics = tmp_path / "m.json"
    r = runner.invoke(
        app,
        [
            "eval-pairs",
            str(src),
            "-o",
            str(out),
            "--metrics-json",
            str(metrics),
            "--model",
            str(tiny_model_dir),
            "--device",
            "cpu",
        ],
    )
    assert r.exit_code == 0, r.output
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(got) == len(pairs)
    from codescaler_cli import score_records

    singles = score_records(
        [
            {"question": p["question_content"], "response": p[side]}
            for p in pairs
            for side in ("code_pos", "code_neg")
        ],
        model=str(tiny_model_dir),
        device="cpu",
    )
    for i, g in enumerate(got):
        for side, s in (("chosen", singles[2 * i]), ("rejected", singles[2 * i + 1])):
            if s["score"] is None:
                assert g[f"{side}_score"] is None
            else:
                assert g[f"{side}_score"] == pytest.approx(s["score"], abs=FLOAT32)
        expected = (g["chosen_score"] if g["chosen_score"] is not None else -1e9) > (
            g["rejected_score"] if g["rejected_score"] is not None else -1e9
        )
        assert g["correct"] == expected
    data = json.loads(metrics.read_text())
    assert data["pairs"] == len(pairs)
    assert data["accuracy"] == pytest.approx(sum(g["correct"] for g in got) / len(got))
    assert "accuracy" in r.stderr
