"""The input and output file contract: outputs never destroy or get read back, inputs as
users have them (compressed, piped, DatasetDicts, misnamed), for chunk sizes 1, 2 and the
default. Extraction-only runs: no model is needed to prove what is read and written."""

from __future__ import annotations

import gc
import gzip
import io
import json
import os
import subprocess
import sys
import threading
import weakref
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from codescaler_cli.cli import app
from codescaler_cli.io.records import RECORD
from support.errors import one_line

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
CHUNKS = [["--chunk-size", "1"], ["--chunk-size", "2"], []]  # [] : the default
CHUNK_IDS = ["chunk1", "chunk2", "default"]


def _rows(n: int, start: int = 0) -> list[dict]:
    return [
        {"question": f"q{i}", "response": f"```python\nx = {i}\n```", "i": i}
        for i in range(start, start + n)
    ]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _extract(*args: str, **kw):
    return runner.invoke(app, ["extract", *args], **kw)


def _ids(path: Path) -> list[int]:
    """The ``i`` of each row of an output (any format codescaler writes)."""
    if path.suffix == ".parquet":
        return pq.read_table(path).column("i").to_pylist()
    if path.is_dir():
        return [i for p in sorted(path.glob("part-*.parquet")) for i in _ids(p)]
    text = path.read_text(encoding="utf-8")
    rows = (
        json.loads(text) if path.suffix == ".json" else [json.loads(x) for x in text.splitlines()]
    )
    return [r["i"] for r in rows]


# ---------------------------------------------------------------- outputs never destroy


def test_a_directory_output_refuses_a_directory_holding_files_it_did_not_write(
    tmp_path, monkeypatch
):
    src = _jsonl(tmp_path / "in.jsonl", _rows(3))
    spark = tmp_path / "spark"
    spark.mkdir()
    theirs = spark / "part-00000-1c2d.snappy.parquet"
    pq.write_table(pa.table({"x": [1]}), theirs)
    (spark / "_SUCCESS").write_text("")
    before = theirs.read_bytes()
    one_line(_extract(str(src), "-o", f"{spark}/"), 1, "did not write", "_SUCCESS")
    assert theirs.read_bytes() == before and sorted(p.name for p in spark.iterdir()) == [
        "_SUCCESS",
        theirs.name,
    ]
    # -o ./ in a working directory with the user's files: refused, nothing touched.
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    one_line(_extract(str(src), "-o", "./"), 1, "notes.txt", "choose a new or empty directory")
    assert [p.name for p in work.iterdir()] == ["notes.txt"]
    # An empty directory the user made is fine.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _extract(str(src), "-o", f"{empty}/", "-q").exit_code == 0
    assert _ids(empty) == [0, 1, 2]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_rerun_into_its_directory_replaces_only_its_recorded_parts(tmp_path, fmt):
    src = _jsonl(tmp_path / "in.jsonl", _rows(5))
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(_rows(5)), tmp_path / "in.parquet")
        src = tmp_path / "in.parquet"
    out = tmp_path / "out"
    assert _extract(str(src), "-o", f"{out}/", "--chunk-size", "1", "-q").exit_code == 0
    assert len(list(out.glob("part-*.parquet"))) == 5
    assert _extract(str(src), "-o", f"{out}/", "--chunk-size", "2", "-q").exit_code == 0
    parts = sorted(p.name for p in out.glob("part-*.parquet"))
    assert parts == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert sorted(json.loads((out / RECORD).read_text())["files"]) == parts
    assert _ids(out) == [0, 1, 2, 3, 4]
    # A part the user replaced is theirs now: the directory is refused, the part kept.
    mine = out / "part-00001.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), mine)
    one_line(_extract(str(src), "-o", f"{out}/", "-q"), 1, "part-00001.parquet")
    assert pq.read_table(mine).column_names == ["x"]


@pytest.mark.parametrize("chunk", CHUNKS, ids=CHUNK_IDS)
def test_earlier_outputs_in_an_input_directory_are_not_read_back(tmp_path, chunk):
    data = tmp_path / "data"
    data.mkdir()
    _jsonl(data / "a.jsonl", _rows(3))
    pq.write_table(pa.Table.from_pylist(_rows(2, 3)), data / "b.parquet")
    bad = data / "c.jsonl"
    bad.write_text(json.dumps(_rows(1, 5)[0]) + "\n{not json\n")
    skip = ["--on-bad-row", "skip", *chunk]
    # Every kind of file a run leaves: JSON Lines, .json, Parquet, parts, rejected rows,
    # a summary; each later run writes next to the data and reads only the data.
    outputs = ["o1.jsonl", "o2.json", "o3.parquet", "o4/"]
    for k, name in enumerate(outputs):
        summary = data / f"s{k}.json"
        r = _extract(str(data), "-o", f"{data}/{name}", "--summary-json", str(summary), *skip)
        assert r.exit_code == 0, r.output
        assert _ids(data / name.rstrip("/")) == [0, 1, 2, 3, 4, 5], name
        assert json.loads(summary.read_text())["rows_read"] == 7
        if k:
            assert "not reading" in r.stderr and f"o{k}" in r.stderr
    assert (data / "o1.rejected.jsonl").exists() and (data / "o4.rejected.jsonl").exists()
    # Named explicitly, an output is read.
    r = _extract(str(data / "o1.jsonl"), "-o", str(tmp_path / "again.jsonl"), "-q", *chunk)
    assert r.exit_code == 0 and _ids(tmp_path / "again.jsonl") == [0, 1, 2, 3, 4, 5]
    # A directory holding only outputs (here -o DIR/ parts) is read as given.
    r = _extract(str(data / "o4"), "-o", str(tmp_path / "parts.jsonl"), "-q", *chunk)
    assert r.exit_code == 0 and _ids(tmp_path / "parts.jsonl") == [0, 1, 2, 3, 4, 5]


def test_a_directory_of_outputs_is_read_without_their_rejected_rows_and_reports(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in _rows(3)) + "{bad\n")
    runs = tmp_path / "runs"
    runs.mkdir()
    for name in ("a.parquet", "b.jsonl"):
        r = _extract(str(src), "-o", str(runs / name), "--on-bad-row", "skip",
                     "--summary-json", str(runs / f"{name}.summary.json"))  # fmt: skip
        assert r.exit_code == 0, r.output
    assert (runs / "a.rejected.jsonl").exists()
    out = tmp_path / "o.jsonl"
    r = _extract(str(runs), "-o", str(out))
    assert r.exit_code == 0, r.output
    assert _ids(out) == [0, 1, 2, 0, 1, 2]
    assert "not reading 4 file(s)" in r.stderr and "a.rejected.jsonl" in r.stderr
    for f in runs.glob("*.parquet"):
        f.unlink()
    for f in runs.glob("*.jsonl"):
        if "rejected" not in f.name:
            f.unlink()
    one_line(_extract(str(runs), "-o", str(out)), 1, "only codescaler's rejected rows")


def test_a_jsonl_output_edited_by_the_user_is_input_again(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _jsonl(data / "a.jsonl", _rows(2))
    assert _extract(str(data), "-o", str(data / "o.jsonl"), "-q").exit_code == 0
    _jsonl(data / "o.jsonl", _rows(1, 10))  # no longer what codescaler wrote
    r = _extract(str(data), "-o", str(tmp_path / "x.jsonl"), "-q")
    assert r.exit_code == 0 and _ids(tmp_path / "x.jsonl") == [0, 1, 10]


@pytest.mark.parametrize("chunk", CHUNKS, ids=CHUNK_IDS)
def test_the_same_file_named_twice_is_read_once(tmp_path, monkeypatch, chunk):
    monkeypatch.chdir(tmp_path)
    _jsonl(tmp_path / "a.jsonl", _rows(3))
    _jsonl(tmp_path / "b.jsonl", _rows(2, 3))
    os.link(tmp_path / "b.jsonl", tmp_path / "hard.jsonl")
    args = ["a.jsonl", "./a.jsonl", "*.jsonl", str(tmp_path / "a.jsonl"), "-o", "o.parquet"]
    r = _extract(*args, *chunk)
    assert r.exit_code == 0, r.output
    assert _ids(tmp_path / "o.parquet") == [0, 1, 2, 3, 4]  # hard.jsonl is b.jsonl too
    assert "./a.jsonl (the same input as a.jsonl): given twice; read once" in r.stderr
    assert "hard.jsonl (the same input as b.jsonl)" in r.stderr


@pytest.mark.parametrize("chunk", CHUNKS, ids=CHUNK_IDS)
def test_a_json_output_is_one_json_document(tmp_path, chunk):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in _rows(3)) + "[1]\n")
    out, rejected = tmp_path / "o.json", tmp_path / "bad.json"
    args = [str(src), "-o", str(out), "--on-bad-row", "skip", "--rejected", str(rejected)]
    assert _extract(*args, "-q", *chunk).exit_code == 0
    doc = json.loads(out.read_text())
    assert isinstance(doc, list) and [r["i"] for r in doc] == [0, 1, 2]
    assert [r["location"] for r in json.loads(rejected.read_text())] == [f"{src}:4"]
    # Read back, a .json document gives the same rows.
    again = tmp_path / "again.json"
    assert _extract(str(out), "-o", str(again), "-q").exit_code == 0
    assert [r["i"] for r in json.loads(again.read_text())] == [0, 1, 2]
    # A rerun with no bad row removes the stale rejected file it wrote before.
    _jsonl(src, _rows(1))
    assert _extract(*args, "-q", *chunk).exit_code == 0
    assert json.loads(out.read_text())[0]["i"] == 0 and not rejected.exists()


# ---------------------------------------------------------------- inputs users have


def _compress(path: Path, data: bytes, codec: str) -> Path:
    if codec == "gzip":
        path.write_bytes(gzip.compress(data))
    else:
        with pa.CompressedOutputStream(str(path), codec) as out:
            out.write(data)
    return path


@pytest.mark.parametrize("chunk", CHUNKS, ids=CHUNK_IDS)
def test_compressed_json_is_read_by_its_name(tmp_path, chunk):
    lines = "".join(json.dumps(r) + "\n" for r in _rows(5)).encode()
    files = [
        _compress(tmp_path / "a.jsonl.gz", lines, "gzip"),
        _compress(tmp_path / "b.jsonl.zst", lines, "zstd"),
        _compress(tmp_path / "c.json.gz", json.dumps(_rows(2, 5)).encode(), "gzip"),
        _compress(tmp_path / "d.ndjson.bz2", lines, "bz2"),
    ]
    out = tmp_path / "o.parquet"
    r = _extract(*map(str, files), "-o", str(out), "-q", *chunk)
    assert r.exit_code == 0, r.output
    assert _ids(out) == [0, 1, 2, 3, 4] * 2 + [5, 6] + [0, 1, 2, 3, 4]
    # The same through a directory.
    r = _extract(str(tmp_path), "-o", str(tmp_path / "o2.jsonl"), "-q", *chunk)
    assert r.exit_code == 0 and len(_ids(tmp_path / "o2.jsonl")) == 17


def test_compressed_data_under_a_plain_name_or_damaged_is_one_clear_line(tmp_path):
    lines = "".join(json.dumps(r) + "\n" for r in _rows(3)).encode()
    out = str(tmp_path / "o.jsonl")
    for name, codec, needle in [
        ("gz.jsonl", "gzip", "gzip-compressed, not JSON text; name it {}.gz"),
        ("zst.json", "zstd", "zstd-compressed, not JSON text; name it {}.zst"),
    ]:
        src = _compress(tmp_path / name, lines, codec)
        for skip in ([], ["--on-bad-row", "skip"]):  # never rows of noise
            one_line(_extract(str(src), "-o", out, *skip), 1, needle.format(src))
    r = _extract("-", "-o", out, input=gzip.compress(lines))
    one_line(r, 1, "<stdin>: the data is gzip-compressed", "decompress it first")
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gzip.compress(lines)[:-12])
    one_line(_extract(str(cut), "-o", out), 1, f"{cut}: cannot decompress as gzip")
    plain = tmp_path / "plain.jsonl.zst"
    plain.write_bytes(lines)
    one_line(_extract(str(plain), "-o", out), 1, f"{plain}: cannot decompress as zstd")
    assert not Path(out).exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
@pytest.mark.parametrize("chunk", CHUNKS, ids=CHUNK_IDS)
def test_a_fifo_is_read_once_as_a_stream(tmp_path, chunk):
    fifo = tmp_path / "pipe"  # no suffix: told from its first line, like stdin
    os.mkfifo(fifo)
    data = json.dumps(_rows(5)).encode()  # a JSON array, through a pipe

    def feed() -> None:
        with open(fifo, "wb") as fh:  # blocks until the run opens it: once
            fh.write(data)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    out = tmp_path / "o.parquet"
    r = _extract(str(fifo), "-o", str(out), "-q", "--resume", "auto", *chunk)
    writer.join(timeout=30)
    assert r.exit_code == 0, r.output
    assert _ids(out) == [0, 1, 2, 3, 4]


def test_process_substitution_of_a_compressed_file(tmp_path):
    src = _compress(tmp_path / "in.jsonl.gz", b"".join(
        (json.dumps(r) + "\n").encode() for r in _rows(4)), "gzip")  # fmt: skip
    out = tmp_path / "o.jsonl"
    cmd = f'"{sys.executable}" -m codescaler_cli extract <(zcat "{src}") -o "{out}" -q'
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert _ids(out) == [0, 1, 2, 3]


def test_a_datasetdict_with_several_splits_needs_split(tmp_path):
    import datasets

    saved = tmp_path / "saved"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(_rows(3)),
            "test": datasets.Dataset.from_list(_rows(2, 10)),
        }
    ).save_to_disk(saved)
    out = tmp_path / "o.jsonl"
    one_line(_extract(str(saved), "-o", str(out)), 2, "splits train, test", "--split")
    one_line(_extract(str(saved), "-o", str(out), "--split", "dev"), 2, "no split 'dev'")
    assert not out.exists()
    for chunk in CHUNKS:
        r = _extract(str(saved), "--split", "test", "-o", str(out), "-q", *chunk)
        assert r.exit_code == 0 and _ids(out) == [10, 11]
    single = tmp_path / "single"
    datasets.DatasetDict({"validation": datasets.Dataset.from_list(_rows(2))}).save_to_disk(single)
    assert _extract(str(single), "-o", str(out), "-q").exit_code == 0 and _ids(out) == [0, 1]


@pytest.mark.parametrize("chunk", CHUNKS, ids=CHUNK_IDS)
def test_a_jsonl_is_line_delimited_whatever_its_first_line(tmp_path, chunk):
    src = tmp_path / "in.jsonl"
    src.write_text(
        json.dumps(_rows(2, 100)) + "\n" + "".join(json.dumps(r) + "\n" for r in _rows(3))
    )
    out = tmp_path / "o.parquet"
    r = _extract(str(src), "-o", str(out), "--on-bad-row", "skip", "-q", *chunk)
    assert r.exit_code == 0 and _ids(out) == [0, 1, 2]
    (bad,) = [json.loads(x) for x in (tmp_path / "o.rejected.jsonl").read_text().splitlines()]
    assert bad["location"] == f"{src}:1" and "one JSON object per line" in bad["reason"]
    one_line(_extract(str(src), "-o", str(out), *chunk), 1, f"{src}:1: expected a JSON object")
    # A .json keeps being told from its first line: a pretty-printed array is one document.
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(_rows(3), indent=2))
    r = _extract(str(pretty), "-o", str(out), "-q", *chunk)
    assert r.exit_code == 0 and _ids(out) == [0, 1, 2]


def test_a_json_array_is_read_in_bounded_memory(tmp_path):
    """A 12 MB array (minified: one line) streams through the reader: peak memory is a
    small part of the file, not the file."""
    import tracemalloc

    from codescaler_cli.io.inputs import resolve_inputs
    from codescaler_cli.io.readers import iter_chunks

    src = tmp_path / "big.json"
    row = {"question": "q", "response": "x" * 3000}
    with src.open("w") as fh:
        fh.write("[" + ",".join([json.dumps({**row, "i": i}) for i in range(4000)]) + "]")
    assert src.stat().st_size > 12e6
    tracemalloc.start()
    try:
        n = 0
        for chunk in iter_chunks(resolve_inputs([str(src)]), 50):
            n += len(chunk.records)
            del chunk
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n == 4000
    assert peak < 3e6, peak


def test_the_ray_spool_holds_one_chunk_at_a_time(tmp_path):
    """The Ray driver writes each chunk it reads (stdin here) to its spool as it comes: no
    earlier chunk is alive when the next is handed over, and the ranges give the rows."""
    from codescaler_cli.engines.base import Work
    from codescaler_cli.engines.ray.spool import spooled
    from codescaler_cli.io.inputs import resolve_inputs
    from codescaler_cli.io.source import chunk_refs

    stdin = io.BytesIO(b"".join((json.dumps(r) + "\n").encode() for r in _rows(9)))
    alive: list[weakref.ref] = []

    def work():
        for ref in chunk_refs(resolve_inputs(["-"]), 2, stdin=stdin, ranges=True):
            alive.append(weakref.ref(ref.chunk))
            yield Work(ref, None)

    got = []
    for w in spooled(work(), str(tmp_path)):
        gc.collect()
        assert sum(r() is not None for r in alive) <= 1
        assert w.ref.chunk is None and w.ref.piece is not None
        got.append(w)
    assert len(got) == 5
    rows = [r["i"] for w in got for r in w.ref.read().records]
    assert rows == list(range(9))
    assert got[2].ref.read().locations == ["<stdin>:5", "<stdin>:6"]


def _feed_fifo(fifo: Path, data: bytes) -> threading.Thread:
    def feed() -> None:
        with open(fifo, "wb") as fh:  # blocks until a reader opens it
            fh.write(data)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    return writer


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_a_run_over_a_pipe_never_resumes_and_starts_over_whole(tmp_path, monkeypatch):
    """A pipe cannot be fingerprinted: an interrupted run over one is not resumed (its
    rows could differ), and the rerun reads the pipe once, from its start."""
    from codescaler_cli.engines import local

    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    data = b"".join((json.dumps(r) + "\n").encode() for r in _rows(6))
    out = tmp_path / "o.parquet"
    real = local.prepare_chunk

    def interrupt(chunk, *a, **k):
        if chunk.index == 2:
            raise KeyboardInterrupt
        return real(chunk, *a, **k)

    monkeypatch.setattr(local, "prepare_chunk", interrupt)
    writer = _feed_fifo(fifo, data)
    assert _extract(str(fifo), "-o", str(out), "--chunk-size", "2").exit_code == 130
    writer.join(timeout=30)
    assert len(list(Path(f"{out}.partial").glob("part-*.parquet"))) == 2
    monkeypatch.setattr(local, "prepare_chunk", real)
    writer = _feed_fifo(fifo, data)
    r = _extract(str(fifo), "-o", str(out), "--chunk-size", "2")
    writer.join(timeout=30)
    assert r.exit_code == 0 and "resuming" not in r.stderr
    assert _ids(out) == [0, 1, 2, 3, 4, 5]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_streams_copied_for_a_second_reading_keep_their_names_and_layout(tmp_path):
    """What rerank and eval-pairs read twice: stdin and pipes copied to files, read as the
    streams would be (a JSON array on stdin; a compressed .jsonl pipe), named as they were."""
    from codescaler_cli.io.inputs import copy_streams, resolve_inputs
    from codescaler_cli.io.readers import iter_chunks

    fifo = tmp_path / "pipe.jsonl.gz"
    os.mkfifo(fifo)
    lines = b"".join((json.dumps(r) + "\n").encode() for r in _rows(2, 10))
    writer = _feed_fifo(fifo, gzip.compress(lines + b"[1]\n"))
    stdin = io.BytesIO(json.dumps(_rows(3)).encode())
    copies = tmp_path / "copies"
    copies.mkdir()
    specs = copy_streams(resolve_inputs(["-", str(fifo)]), stdin, str(copies))
    writer.join(timeout=30)
    assert [s.is_stream for s in specs] == [False, False]
    for _ in range(2):  # read as often as needed
        chunks = list(iter_chunks(specs, 2))
        assert [r["i"] for c in chunks for r in c.records] == [0, 1, 2, 10, 11]
        assert chunks[0].locations == ["<stdin>[0]", "<stdin>[1]"]
        assert [b.location for c in chunks for b in c.bad] == [f"{fifo}:3"]
