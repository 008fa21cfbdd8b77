"""The Ray engine gives the local engine's output, on a 2-CPU local Ray cluster.

One cluster serves the whole module; every test runs under an alarm so a hang fails
fast (and faulthandler kills the process if even the alarm cannot get through).
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codescaler_cli.config import (
    CacheOptions,
    ModelOptions,
    OnBadRow,
    RayOptions,
    ResumeMode,
    RunOptions,
    ScoringOptions,
)
from codescaler_cli.engines.loop import run
from codescaler_cli.engines.ray.engine import RayEngine
from codescaler_cli.errors import BadRowError, MissingDependencyError, ModelError
from codescaler_cli.io.inputs import resolve_inputs
from codescaler_cli.progress import Progress

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

TOL = 1e-6
TEST_TIMEOUT_S = 240
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _fail_fast():
    """A test that hangs fails after TEST_TIMEOUT_S; one that cannot be interrupted dies."""

    def expire(signum, frame):
        raise TimeoutError(f"test took longer than {TEST_TIMEOUT_S} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TEST_TIMEOUT_S)
    faulthandler.dump_traceback_later(TEST_TIMEOUT_S + 60, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    old_term = signal.getsignal(signal.SIGTERM)
    # 5 CPUs: one kept for reading, two actors of 2 CPUs each (their threads) fit.
    ray.init(address="local", num_cpus=5, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        signal.signal(signal.SIGTERM, old_term)  # ray.init installed its own


@contextlib.contextmanager
def _torch_threads(n: int):
    """CPU kernels sum in an order that depends on the thread count; the 2 CPU actors run
    one thread each, so the local reference does too (GPU runs do not depend on it)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class _Messages(Progress):
    def __init__(self) -> None:
        self.messages: list[str] = []

    def message(self, text: str) -> None:
        self.messages.append(text)


# ---------------------------------------------------------------- data


def _rows(n_problems: int = 12, n_candidates: int = 25) -> list[dict]:
    """Best-of-N candidates: fenced, bare, invalid, no code, and exact duplicates."""
    rows = []
    for p in range(n_problems):
        question = (
            f"Problem {p}: write f{p}(xs) returning the sum of the items times {p}. "
            "Read the input carefully; the list may be empty.\n"
        ) * (1 + p % 3)
        for c in range(n_candidates):
            body = "\n".join(f"        total += x * {p} + {c * 7 + k}" for k in range(c % 6 + 1))
            code = f"def f{p}(xs):\n    total = 0\n    for x in xs:\n{body}\n    return total\n"
            kind = c % 6
            if kind == 0:
                response = f"Here is my solution.\n\n```python\n{code}```\nIt runs in O(n)."
            elif kind == 1:
                response = code
            elif kind == 2:
                response = f"```python\ndef f{p}(xs:\n    return (\n```"
            elif kind == 3:
                response = "I am not sure how to solve this problem."
            elif kind == 4:
                response = rows[-4]["response"]  # a duplicate of an earlier candidate
            else:
                response = f"<think>loop over xs</think>\n```py\n{code}```"
            rows.append(
                {
                    "problem_id": f"p{p}",
                    "candidate": c,
                    "question": question,
                    "response": response,
                    "passed": c % 2 == 0,
                }
            )
    return rows


BAD_LINES = [
    "{not json at all",
    "[1, 2, 3]",
    json.dumps({"problem_id": "x", "candidate": 0, "question": "q only"}),
    json.dumps({"problem_id": "x", "candidate": 1, "question": 7, "response": "x = 1"}),
    "",  # blank lines are skipped, but count in line numbers
]


def _write_jsonl(path: Path, rows: list[dict], bad_every: int = 0) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for i, row in enumerate(rows):
            fh.write(json.dumps(row) + "\n")
            if bad_every and i % bad_every == bad_every - 1:
                fh.write(BAD_LINES[(i // bad_every) % len(BAD_LINES)] + "\n")
    return path


def _cfg(model_dir: Path, output: Path | str, **kw) -> RunOptions:
    # No score cache unless asked: a second run of the same rows must run the model again.
    kw.setdefault("cache", CacheOptions(enabled=False))
    return RunOptions(
        output=str(output),
        model=ModelOptions(model=str(model_dir), device="cpu"),
        resume=ResumeMode.never,
        **kw,
    )


def _local(specs, opts: RunOptions, threads: int = 1, **kw):
    with _torch_threads(threads):
        return run(specs, opts, **kw)


def _ray(specs, opts: RunOptions, cpus_per_worker: float = 1, workers: int = 2, **kw):
    """Two actors; with one CPU each they run one torch thread, like ``_local``."""
    progress = _Messages()
    ray_opts = RayOptions(num_workers=workers, cpus_per_worker=cpus_per_worker)
    summary = run(specs, opts, RayEngine(opts, ray_opts), progress=progress, **kw)
    return summary, progress.messages


def _assert_same_rows(local: list[dict], ray: list[dict]) -> None:
    assert len(local) == len(ray)
    for i, (a, b) in enumerate(zip(local, ray, strict=True)):
        assert list(a) == list(b), f"row {i}: columns differ"
        for key, x in a.items():
            y = b[key]
            if isinstance(x, float) and isinstance(y, float):
                assert math.isclose(x, y, rel_tol=0, abs_tol=TOL), (i, key, x, y)
            else:
                assert x == y, (i, key, x, y)


def _assert_same_tables(local: pa.Table, ray: pa.Table) -> None:
    assert local.schema.remove_metadata().equals(ray.schema.remove_metadata())
    assert local.schema.metadata == ray.schema.metadata  # provenance
    _assert_same_rows(local.to_pylist(), ray.to_pylist())


SUMMARY_FIELDS = (
    "rows_read",
    "rows_written",
    "scored",
    "unique_scored",
    "deduplicated",
    "invalid",
    "truncated",
    "rejected",
    "chunks",
    "methods",
)


def _assert_same_summary(local, ray) -> None:
    for name in SUMMARY_FIELDS:
        assert getattr(local, name) == getattr(ray, name), name


# ---------------------------------------------------------------- packaging


def test_without_ray_exits_2_with_install_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails
    src = _write_jsonl(tmp_path / "in.jsonl", _rows(1, 2))
    opts = _cfg(tmp_path, tmp_path / "out.parquet")
    with pytest.raises(MissingDependencyError) as err:
        run(resolve_inputs([str(src)]), opts, RayEngine(opts))
    assert err.value.exit_code == 2
    assert "pip install 'codescaler-cli[ray]'" in str(err.value)
    assert not (tmp_path / "out.parquet").exists()


# ---------------------------------------------------------------- equivalence


def test_one_chunk_sharded_over_two_thread_workers_in_two_streams_matches_local(
    ray_cluster, tiny_model_dir, tmp_path
):
    """A small file is one chunk: it is split over 2 actors of 2 threads, each running its
    share of the passes in 2 streams (so in any order). Every row's score comes from the
    shard that says it ran it: the output is the local engine's with the same 2 threads and
    2 streams, bit for bit, and bad rows go to the same rejected file."""
    src = _write_jsonl(tmp_path / "in.jsonl", _rows(6, 12), bad_every=23)
    specs = resolve_inputs([str(src)])
    kw = {
        "scoring": ScoringOptions(streams=2, max_tokens_per_batch=256),
        "on_bad_row": OnBadRow.skip,
    }
    local = _local(specs, _cfg(tiny_model_dir, tmp_path / "local.parquet", **kw), threads=2)
    summary, messages = _ray(
        specs, _cfg(tiny_model_dir, tmp_path / "ray.parquet", **kw), cpus_per_worker=2
    )
    assert any("in 2 shards" in m for m in messages)
    assert any("by 2 worker(s)" in m for m in messages)  # every actor got work
    assert local.unique_scored > 30 and local.rejected > 0
    expected = pq.read_table(tmp_path / "local.parquet")
    got = pq.read_table(tmp_path / "ray.parquet")
    assert got.equals(expected) and got.schema.metadata == expected.schema.metadata
    _assert_same_summary(local, summary)
    assert (tmp_path / "local.rejected.jsonl").read_text() == (
        tmp_path / "ray.rejected.jsonl"
    ).read_text()
    assert summary.rejected_path == str(tmp_path / "ray.rejected.jsonl")
    assert not (tmp_path / "ray.parquet.partial").exists()


class _StopInThirdChunk(Progress):
    """Ctrl-C while the third chunk of 64 rows is scored (two are checkpointed by then)."""

    rows = 0

    def advance(self, rows: int, tokens: int = 0) -> None:
        self.rows += rows
        if self.rows > 2 * 64:
            raise KeyboardInterrupt


def test_many_chunks_resume_a_local_run_into_a_directory_of_parts(
    ray_cluster, tiny_model_dir, tmp_path
):
    """JSON Lines and Parquet inputs cut into byte and row ranges are the local engine's
    chunks: the Ray engine resumes a run the local engine left unfinished, and writes the
    parts in input order."""
    rows = _rows()
    jsonl = _write_jsonl(tmp_path / "a.jsonl", rows[:170])
    parquet = tmp_path / "b.parquet"
    pq.write_table(pa.Table.from_pylist(rows[170:]), parquet, row_group_size=50)
    specs = resolve_inputs([str(jsonl), str(parquet)])
    local = _local(specs, _cfg(tiny_model_dir, tmp_path / "local.parquet", chunk_size=64))
    out_dir = tmp_path / "parts"
    opts = replace(_cfg(tiny_model_dir, f"{out_dir}/", chunk_size=64), resume=ResumeMode.auto)
    with pytest.raises(KeyboardInterrupt):
        _local(specs, opts, progress=_StopInThirdChunk())
    summary, messages = _ray(specs, opts)
    assert summary.chunks_resumed == 2, messages

    parts = sorted(out_dir.glob("part-*.parquet"))
    assert len(parts) == local.chunks == 6  # 3 chunks per input, in input order
    expected = pq.read_table(tmp_path / "local.parquet")
    for part in parts:
        assert pq.read_schema(part).metadata == expected.schema.metadata
    got = pa.concat_tables([pq.read_table(p) for p in parts])
    _assert_same_tables(expected, got.replace_schema_metadata(expected.schema.metadata))
    _assert_same_summary(local, summary)
    assert not Path(f"{out_dir}.partial").exists()


def test_workers_look_up_in_the_score_cache_the_driver_names(ray_cluster, tiny_model_dir, tmp_path):
    """Lookups happen on the workers, in the store the driver names ($CODESCALER_CACHE_DIR
    here): after a local run, a Ray run answers every row from it (no forward pass, no
    weights loaded on a worker) and writes the same rows."""
    src = _write_jsonl(tmp_path / "in.jsonl", _rows(2, 6))
    specs = resolve_inputs([str(src)])
    on = {"cache": CacheOptions(), "chunk_size": 6}  # 2 chunks for 2 workers: not sharded
    local = _local(specs, _cfg(tiny_model_dir, tmp_path / "local.parquet", **on))
    assert local.forward_calls > 0 and local.cached == 0
    warm, _ = _ray(specs, _cfg(tiny_model_dir, tmp_path / "ray.parquet", **on))
    assert warm.forward_calls == 0 and warm.cached == local.scored > 0
    got, expected = (pq.read_table(tmp_path / f"{n}.parquet") for n in ("ray", "local"))
    assert got.equals(expected)
    assert got.schema.metadata[b"codescaler.cached_rows"] == str(local.scored).encode()


def test_first_bad_row_fails_like_the_local_engine_after_rows_in_order(
    ray_cluster, tiny_model_dir, tmp_path
):
    """Chunks finish in any order on 2 actors; stdout still gets the rows of the chunks
    before the first bad row, in input order, then the local engine's error."""
    rows = [{**r, "response": None} if i in (47, 53) else r for i, r in enumerate(_rows(6, 10))]
    src = _write_jsonl(tmp_path / "in.jsonl", rows)  # 47, 53: the fifth and sixth chunks
    specs = resolve_inputs([str(src)])
    local_out, ray_out = io.StringIO(), io.StringIO()
    with pytest.raises(BadRowError) as local_err:
        _local(specs, _cfg(tiny_model_dir, "-", chunk_size=10), stdout=local_out)
    with pytest.raises(BadRowError) as ray_err:
        _ray(specs, _cfg(tiny_model_dir, "-", chunk_size=10), stdout=ray_out)
    assert str(ray_err.value) == str(local_err.value)
    assert str(ray_err.value).endswith(":48: field 'response' must be a string, got null")
    local_rows = [json.loads(line) for line in local_out.getvalue().splitlines()]
    ray_rows = [json.loads(line) for line in ray_out.getvalue().splitlines()]
    assert len(local_rows) == 40  # the four chunks before the bad row
    _assert_same_rows(local_rows, ray_rows)


# ---------------------------------------------------------------- interruption


def _processes_with(marker: bytes) -> list[str]:
    """Processes whose environment holds ``marker``: everything a Ray cluster started by
    our child inherits it (raylet, GCS, agents, workers), whatever their names."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if marker not in fh.read():
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{pid} {cmdline[:100]}")
        except OSError:
            continue
    return found


def _tagged_env(**extra: str) -> tuple[dict[str, str], bytes]:
    """Environment for a child run with its own Ray cluster, and the marker that finds every
    process it starts."""
    tag = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own cluster
    env.update(CODESCALER_RAY_TEST=tag, **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env, f"CODESCALER_RAY_TEST={tag}".encode()


def _ray_left(marker: bytes, wait_s: float = 20) -> list[str]:
    """Processes of the run still alive after up to ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while (left := _processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def _reap(child: subprocess.Popen, marker: bytes) -> None:
    if child.poll() is None:
        child.kill()
    for proc in _processes_with(marker):
        with contextlib.suppress(OSError):
            os.kill(int(proc.split()[0]), signal.SIGKILL)


def test_model_that_cannot_load_fails_with_the_local_message(ray_cluster, tiny_model_dir, tmp_path):
    src = _write_jsonl(tmp_path / "in.jsonl", _rows(2, 5))
    specs = resolve_inputs([str(src)])
    missing = tmp_path / "not-a-model"  # a directory without a model in it
    missing.mkdir()
    with pytest.raises(ModelError) as local_err:
        _local(specs, _cfg(missing, tmp_path / "local.parquet"))
    with pytest.raises(ModelError) as ray_err:
        _ray(specs, _cfg(missing, tmp_path / "ray.parquet"))
    assert str(ray_err.value) == str(local_err.value)


# ---------------------------------------------------------------- through the CLI


def test_cli_without_ray_exits_2(monkeypatch, tmp_path, tiny_model_dir):
    from typer.testing import CliRunner

    from codescaler_cli.cli import app

    monkeypatch.setitem(sys.modules, "ray", None)
    src = _write_jsonl(tmp_path / "in.jsonl", _rows(1, 2))
    out = tmp_path / "out.parquet"
    r = CliRunner().invoke(app, ["score", str(src), "-o", str(out), "--engine", "ray",
                                 "--model", str(tiny_model_dir)])  # fmt: skip
    assert r.exit_code == 2
    assert r.stderr.strip() == (
        "codescaler: error: --engine ray needs Ray: pip install 'codescaler-cli[ray]'"
    )
    assert not out.exists()


def test_ray_only_options_need_the_ray_engine(tmp_path, tiny_model_dir):
    from typer.testing import CliRunner

    from codescaler_cli.cli import app

    src = _write_jsonl(tmp_path / "in.jsonl", _rows(1, 2))
    r = CliRunner().invoke(app, ["score", str(src), "-o", str(tmp_path / "o.parquet"),
                                 "--num-workers", "2", "--model", str(tiny_model_dir)])  # fmt: skip
    assert r.exit_code == 2 and "--num-workers needs --engine ray" in r.stderr


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_sigint_to_the_cli_leaves_no_ray_processes(ray_cluster, tiny_model_dir, tmp_path):
    """`codescaler score --engine ray` interrupted with Ctrl-C: exit 130, no Ray process
    left, no output, the finished chunks kept."""
    src = _write_jsonl(tmp_path / "in.jsonl", _rows(16, 25))  # 400 rows in 20 chunks
    out = tmp_path / "out.parquet"
    env, marker = _tagged_env(OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "codescaler_cli", "score", str(src), "-o", str(out),
           "--model", str(tiny_model_dir), "--device", "cpu", "--chunk-size", "20",
           "--engine", "ray", "--num-workers", "1", "-q"]  # fmt: skip
    child = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    partial = Path(str(out) + ".partial")
    try:
        while len(list(partial.glob("part-*.parquet"))) < 2:  # the alarm fixture bounds this
            assert child.poll() is None, child.communicate()[1]
            time.sleep(0.2)
        running = _processes_with(marker)
        assert any("raylet" in p for p in running), running
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
        assert child.returncode == 130, err
        assert "interrupted" in err and "Traceback" not in err
        left = _ray_left(marker)
        assert not left, f"Ray processes left behind: {left}"
        assert not out.exists()
    finally:
        _reap(child, marker)
    # Finished chunks stay for a resumed run (resuming across engines: the many-chunks test).
    assert len(list(partial.glob("part-*.parquet"))) >= 2


def test_both_readers_detect_fields_over_the_same_rows(tmp_path):
    """Bad lines among the first 1,000 must not shrink the rows fields are detected from: the
    range the Ray engine's driver probes gives the columns the local engine's chunk has."""
    from codescaler_cli.io.source import chunk_refs

    src = tmp_path / "in.jsonl"
    lines = ["{not json"] * 10
    lines += [json.dumps({"question": f"q{i}", "text": "x"}) for i in range(990)]
    lines += [json.dumps({"question": f"q{i}", "response": "x = 1"}) for i in range(20)]
    src.write_text("\n".join(lines) + "\n")
    specs = resolve_inputs([str(src)])
    streamed = next(chunk_refs(specs, 2000))
    ranged = next(chunk_refs(specs, 2000, ranges=True))
    assert streamed.chunk is not None and ranged.piece is not None
    assert streamed.columns() == ranged.columns() == ["question", "text", "response"]


def test_inputs_read_on_the_driver_are_spooled_and_match_local(ray_cluster, tmp_path):
    """stdin (a JSON array), a compressed file and a pretty-printed .json are read on the
    driver a chunk at a time and spooled; with a plain .jsonl cut into ranges, the output
    is the local engine's, in order, with the same rejected rows."""
    import gzip

    from codescaler_cli.config import RowOptions

    rows = _rows(2, 4)
    stdin = json.dumps(rows[:3]).encode()
    (tmp_path / "b.jsonl.gz").write_bytes(
        gzip.compress(b"".join((json.dumps(r) + "\n").encode() for r in rows[3:5]) + b"[1]\n")
    )
    (tmp_path / "c.json").write_text("\n".join(json.dumps(r, indent=2) for r in rows[5:7]))
    _write_jsonl(tmp_path / "d.jsonl", rows[7:])
    names = ["-", "b.jsonl.gz", "c.json", "d.jsonl"]
    specs = resolve_inputs([n if n == "-" else str(tmp_path / n) for n in names])
    kw = {"rows": RowOptions(score=False), "chunk_size": 2, "on_bad_row": OnBadRow.skip}
    outs = {}
    for name in ("local", "ray"):
        opts = _cfg(tmp_path, tmp_path / f"{name}.jsonl", **kw)
        if name == "local":
            _local(specs, opts, stdin=io.BytesIO(stdin))
        else:  # one actor is enough: what is proven happens on the driver
            _ray(specs, opts, workers=1, stdin=io.BytesIO(stdin))
        outs[name] = (tmp_path / f"{name}.jsonl").read_text()
    assert [json.loads(x)["candidate"] for x in outs["ray"].splitlines()] == [
        r["candidate"] for r in rows
    ]
    assert outs["ray"] == outs["local"]
    assert (tmp_path / "ray.rejected.jsonl").read_text() == (
        tmp_path / "local.rejected.jsonl"
    ).read_text()
