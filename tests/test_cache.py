"""The persistent score cache: hits are the stored scores bit for bit and the candidate's own
score; anything that can change a score misses; a damaged, read-only, full, killed or shared
store never costs a run or a right score; an all-hit run loads no weights and no torch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from codescaler_cli.cache import digest
from codescaler_cli.cache.keys import Entry, check
from codescaler_cli.cache.store import FILE_NAME, ScoreStore
from codescaler_cli.config import CacheOptions, ModelOptions, ScoringOptions
from codescaler_cli.scoring.build import build_scorer
from codescaler_cli.scoring.scorer import Scorer
from support.scoring import TOL, scoring_pairs

REPO = Path(__file__).resolve().parents[1]
PAIRS = scoring_pairs()
QS = [q for q, _ in PAIRS]
CS = [c for _, c in PAIRS]


def scorer(model_dir, cache_dir, notes: list[str] | None = None, dtype="float32", **scoring):
    return build_scorer(
        ModelOptions(model=str(model_dir), device="cpu", dtype=dtype),
        ScoringOptions(**scoring),
        CacheOptions(cache_dir=str(cache_dir)),
        notify=notes.append if notes is not None else None,
    )


def close_enough(got, want) -> bool:
    return all(abs(g - w) <= TOL * max(1.0, abs(w)) for g, w in zip(got, want, strict=True))


def bits(values) -> list[bytes]:
    return [struct.pack("<d", v) for v in values]


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


# ---------------------------------------------------------------- hits are right


def test_hits_are_the_stored_scores_bit_for_bit_and_the_candidates_own(
    tiny_model_dir, tmp_path, reference
):
    cold = scorer(tiny_model_dir, tmp_path)
    first = cold.score_pairs(QS, CS)
    assert first.cached_rows == 0 and cold.cache.stored == first.unique_scored

    warm = scorer(tiny_model_dir, tmp_path)
    again = warm.score_pairs(QS, CS)
    assert again.cached_rows == len(PAIRS)
    # Nothing loaded: no weights, not even the tokenizer.
    assert warm.rm.loaded is None and not warm.rm.text_loaded and warm.rm.forward_calls == 0
    stored = warm.cache.get(warm.cache.pair_keys(QS, CS))
    assert bits(again.score) == bits(e.score for e in stored) == bits(first.score)
    assert again.n_tokens == first.n_tokens and again.truncated == first.truncated
    assert close_enough(again.score, reference)


def test_only_misses_are_planned_and_rows_keep_their_order(tiny_model_dir, tmp_path, rm):
    seen = list(range(0, len(PAIRS), 2))
    scorer(tiny_model_dir, tmp_path).score_pairs([QS[i] for i in seen], [CS[i] for i in seen])
    partial = scorer(tiny_model_dir, tmp_path)
    res = partial.score_pairs(QS, CS)
    # The misses alone, without a cache: the same passes, so the same work.
    new = sorted(
        {
            (QS[i], CS[i])
            for i in range(len(PAIRS))
            if (QS[i], CS[i]) not in {(QS[j], CS[j]) for j in seen}
        }
    )
    alone = Scorer(rm, ScoringOptions())
    alone.score_pairs([q for q, _ in new], [c for _, c in new])
    assert partial.stats.real_tokens == alone.stats.real_tokens > 0
    assert partial.stats.batches == alone.stats.batches
    whole = Scorer(rm, ScoringOptions()).score_pairs(QS, CS)  # no cache: the same rows
    assert close_enough(res.score, whole.score)
    assert res.n_tokens == whole.n_tokens and res.truncated == whole.truncated
    assert res.cached == [(q, c) not in set(new) for q, c in PAIRS]


def test_an_all_hit_run_imports_no_torch(tiny_model_dir, tmp_path):
    stored = scorer(tiny_model_dir, tmp_path).score_pairs(QS, CS).score
    code = (
        "import json, sys\n"
        f"sys.path[:0] = [{str(REPO)!r}, {str(REPO / 'tests')!r}]\n"
        "from support.scoring import scoring_pairs\n"
        "from codescaler_cli.config import CacheOptions, ModelOptions\n"
        "from codescaler_cli.scoring.build import build_scorer\n"
        f"s = build_scorer(ModelOptions(model={str(tiny_model_dir)!r}, device='auto'),"
        f" None, CacheOptions(cache_dir={str(tmp_path)!r}))\n"
        "pairs = scoring_pairs()\n"
        "limit = s.max_response_chars\n"
        "res = s.run(s.prepare([q for q, _ in pairs], [c for _, c in pairs]))\n"
        "print(json.dumps([res.score, res.cached_rows, sorted(m for m in sys.modules"
        " if m.split('.')[0] in ('torch', 'transformers', 'tokenizers'))]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    scores, cached, heavy = json.loads(proc.stdout)
    assert bits(scores) == bits(stored) and cached == len(PAIRS) and heavy == []


# ---------------------------------------------------------------- misses, never stale hits


def test_whatever_can_change_a_score_misses(model_copy, tmp_path, monkeypatch):
    monkeypatch.setattr(digest, "RACY_NS", 0)  # remember digests at once: test the stat check
    cache = tmp_path / "cache"
    qs, cs = QS[:4], CS[:4]
    first = scorer(model_copy, cache).score_pairs(qs, cs).score

    def hits(model=model_copy, **kw) -> int:
        return sum(e is not None for e in scorer(model, cache, **kw).lookup(qs, cs)[1])

    assert hits() == 4  # the control: same files, same options
    weights = model_copy / "model.safetensors"
    os.utime(weights)  # touched, same content: hashed again, the same digest
    assert hits() == 4
    assert hits(dtype="bfloat16") == 0
    assert hits(max_length=2048) == 0
    for name in ("chat_template.jinja", "tokenizer.json"):
        original = (model_copy / name).read_bytes()
        (model_copy / name).write_bytes(original + b"\n")
        assert hits() == 0, name
        (model_copy / name).write_bytes(original)
    assert hits() == 4  # content-addressed: the original files hit again
    # A fine-tune in place: other weights, same path, size and inode.
    size, inode = weights.stat().st_size, weights.stat().st_ino
    with open(weights, "r+b") as fh:
        fh.seek(-256, os.SEEK_END)
        data = fh.read(256)
        fh.seek(-256, os.SEEK_END)
        fh.write(struct.pack("<64f", *(v * 1.5 + 0.25 for v in struct.unpack("<64f", data))))
    assert (weights.stat().st_size, weights.stat().st_ino) == (size, inode)
    assert hits() == 0
    tuned = scorer(model_copy, cache).score_pairs(qs, cs).score
    assert tuned != first
    from codescaler_cli.model.load import load_reward_model

    fresh = Scorer(load_reward_model(ModelOptions(model=str(model_copy), device="cpu")))
    assert close_enough(tuned, fresh.score_pairs(qs, cs).score)


# ---------------------------------------------------------------- damage, read-only, full


def _populate(model_dir, cache_dir, extra: int = 0) -> list[float]:
    s = scorer(model_dir, cache_dir)
    scores = s.score_pairs(QS, CS).score
    if extra:  # more pages, so a cut file loses some
        ns = s.cache._namespace_id()
        s.cache.store.put(ns, [(os.urandom(16), Entry(1.0, 10, False)) for _ in range(extra)])
    s.cache.store.close()
    return scores


@pytest.mark.parametrize("damage", ["header", "truncated", "row"])
def test_a_damaged_store_costs_one_warning_and_no_wrong_score(
    tiny_model_dir, tmp_path, damage, reference
):
    stored = _populate(tiny_model_dir, tmp_path, extra=20_000 if damage == "truncated" else 0)
    path = tmp_path / FILE_NAME
    data = path.read_bytes()
    with open(path, "r+b") as fh:
        if damage == "header":
            fh.write(b"this is not a database" * 4)
        elif damage == "truncated":
            fh.truncate(len(data) * 3 // 10)
        else:  # one bit of one stored score
            at = data.find(struct.pack(">d", stored[3])) + 7
            fh.seek(at)
            fh.write(bytes([data[at] ^ 1]))
    notes: list[str] = []
    s = scorer(tiny_model_dir, tmp_path, notes)
    res = s.score_pairs(QS, CS)
    assert len(notes) == 1, notes
    assert close_enough(res.score, reference)
    if damage == "row":  # only the damaged entry is scored again
        assert res.cached == [c != CS[3] for c in CS]
    again = scorer(tiny_model_dir, tmp_path).score_pairs(QS, CS)
    assert again.cached_rows == len(PAIRS) and bits(again.score) == bits(res.score)


def _without_root(cmd: list[str]) -> list[str]:
    """Root ignores file permissions: run the child without that power."""
    if os.geteuid() != 0:
        return cmd
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be tested")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *cmd]


def test_a_read_only_store_is_looked_up_and_not_written(tiny_model_dir, tmp_path):
    cache = tmp_path / "cache"
    stored = _populate(tiny_model_dir, cache)
    keys = scorer(tiny_model_dir, cache).cache.pair_keys(QS, CS)
    (cache / FILE_NAME).chmod(0o444)
    cache.chmod(0o555)
    code = (
        "import json, os, sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from codescaler_cli.cache.keys import Entry\n"
        "from codescaler_cli.cache.store import ScoreStore\n"
        "notes = []\n"
        f"s = ScoreStore({str(cache)!r}, 1 << 30, notes.append)\n"
        f"keys = [bytes.fromhex(k) for k in {[k.hex() for k in keys]!r}]\n"
        "found = [e and e.score for e in s.get(keys)]\n"
        "s.put(1, [(os.urandom(16), Entry(1.0, 3, False))])\n"
        "s.put(1, [(os.urandom(16), Entry(2.0, 3, False))])\n"
        "print(json.dumps([found, notes, s.writable]))\n"
    )
    try:
        proc = subprocess.run(
            _without_root([sys.executable, "-c", code]), capture_output=True, text=True
        )
    finally:
        cache.chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    found, notes, writable = json.loads(proc.stdout)
    assert found == stored and not writable
    assert len(notes) == 1 and "read-only" in notes[0]


def test_a_full_disk_stores_nothing_and_the_run_goes_on(tiny_model_dir, tmp_path, reference):
    notes: list[str] = []
    s = scorer(tiny_model_dir, tmp_path, notes)
    s.cache.namespace()
    s.cache._namespace_id()
    conn = s.cache.store._connection()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLITE_FULL, as on a full disk
    with pytest.raises(sqlite3.OperationalError, match="full"):
        for _ in range(10_000):  # fill the pages there are
            conn.execute("INSERT INTO scores VALUES (?, 1, 0.5, 1, 0, 0, 0)", (os.urandom(16),))
    res = s.score_pairs(QS, CS)
    assert close_enough(res.score, reference)
    assert len(notes) == 1 and "full" in notes[0] and s.cache.stored == 0


def test_a_cache_dir_that_cannot_exist_turns_the_cache_off(tiny_model_dir, tmp_path, reference):
    (tmp_path / "file").write_text("")
    notes: list[str] = []
    s = scorer(tiny_model_dir, tmp_path / "file" / "cache", notes)
    assert close_enough(s.score_pairs(QS, CS).score, reference)
    assert len(notes) == 1 and "off" in notes[0]


# ---------------------------------------------------------------- processes at once

_WRITER = """
import os, sys, time
sys.path.insert(0, {repo!r})
from codescaler_cli.cache.keys import Entry
from codescaler_cli.cache.store import ScoreStore
start, stop, batch, go = {start}, {stop}, {batch}, {go!r}
s = ScoreStore({cache!r}, 1 << 30, lambda m: sys.exit("notice: " + m))
if go:  # ready: wait for the other writer
    open(go + ".{start}", "w").close()
    while not os.path.exists(go):
        time.sleep(0.01)
ns = s.namespace_id(b"n" * 16, dict(model="m", model_digest="d", dtype="float32",
                    device="cpu", max_length=8), "{{}}")
for first in range(start, stop, batch):
    rows = [(i.to_bytes(16, "little"), Entry(i / 7, i % 4096, i % 3 == 0))
            for i in range(first, first + batch)]
    if s.put(ns, rows) != batch:
        sys.exit("not stored")
    if first == start:
        open({signal!r}, "w").close()
"""


def _writer(
    cache: Path, start: int, stop: int, batch: int, signal_path: Path, go: str = ""
) -> subprocess.Popen:
    code = _WRITER.format(
        repo=str(REPO),
        start=start,
        stop=stop,
        batch=batch,
        cache=str(cache),
        signal=str(signal_path),
        go=go,
    )
    return subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)


def _stored_rows(cache: Path) -> list[tuple]:
    conn = sqlite3.connect(cache / FILE_NAME)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return conn.execute("SELECT key, score, n_tokens, truncated, crc FROM scores").fetchall()
    finally:
        conn.close()


def _whole(rows: list[tuple]) -> None:
    """Every row is the one its writer meant, and passes its check."""
    for key, score, n_tokens, truncated, crc in rows:
        i = int.from_bytes(key, "little")
        entry = Entry(score, n_tokens, bool(truncated))
        assert entry == Entry(i / 7, i % 4096, i % 3 == 0) and crc == check(key, entry)


def test_kill_9_while_writing_leaves_no_half_entry(tmp_path):
    batch = 500
    started = tmp_path / "started"
    proc = _writer(tmp_path, 0, 10_000_000, batch, started)
    deadline = time.monotonic() + 60
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # well into later transactions
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    rows = _stored_rows(tmp_path)
    assert len(rows) > batch and len(rows) % batch == 0  # whole transactions only
    _whole(rows)
    store = ScoreStore(tmp_path, 1 << 30, lambda m: pytest.fail(m))  # opens cleanly
    assert store.get([rows[0][0]])[0] is not None


def test_two_writers_at_once_both_finish(tmp_path):
    go = str(tmp_path / "go")
    a = _writer(tmp_path, 0, 10_000, 50, tmp_path / "a", go)
    b = _writer(tmp_path, 5_000, 15_000, 50, tmp_path / "b", go)  # half the same keys
    deadline = time.monotonic() + 60
    while not all(os.path.exists(f"{go}.{n}") for n in (0, 5000)):
        for proc in (a, b):
            assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the writers did not start within 60 s"
        time.sleep(0.01)
    Path(go).touch()  # both write from now on
    for proc in (a, b):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    rows = _stored_rows(tmp_path)
    assert len(rows) == 15_000
    _whole(rows)


# ---------------------------------------------------------------- bounded size


def test_the_store_stays_bounded_and_drops_the_least_recently_used(tmp_path):
    store = ScoreStore(tmp_path, 1 << 20, lambda m: pytest.fail(m))
    ns = store.namespace_id(
        b"n" * 16,
        dict(model="m", model_digest="d", dtype="float32", device="cpu", max_length=8),
        "{}",
    )
    old = [os.urandom(16) for _ in range(4000)]
    kept = old[:100]
    store.put(ns, [(k, Entry(0.5, 1, False)) for k in old])
    conn = store._connection()
    for _ in range(10):
        conn.execute("UPDATE scores SET used = used - 5000")  # time passes ...
        assert all(store.get(kept))  # ... these are read again (their time refreshed) ...
        store.put(ns, [(os.urandom(16), Entry(1.5, 2, True)) for _ in range(4000)])  # ... more
    size = conn.execute("PRAGMA page_count").fetchone()[0] * 4096
    free = conn.execute("PRAGMA freelist_count").fetchone()[0] * 4096
    assert size - free <= 1 << 20
    assert all(store.get(kept))
    assert sum(e is not None for e in store.get(old[100:])) < 100


# ---------------------------------------------------------------- codescaler cache


def test_cache_command_info_prune_clear(tiny_model_dir, tmp_path):
    from codescaler_cli.cli.app import app

    runner = CliRunner()
    _populate(tiny_model_dir, tmp_path)
    out = runner.invoke(app, ["cache", "info", "--cache-dir", str(tmp_path), "--json"])
    assert out.exit_code == 0, out.output
    found = json.loads(out.stdout)
    assert found["entries"] == len(set(PAIRS)) and found["models"][0]["model"] == str(
        tiny_model_dir
    )
    assert runner.invoke(app, ["cache", "prune", "--max-size", "lots"]).exit_code == 2
    out = runner.invoke(app, ["cache", "prune", "--max-size", "1M", "--cache-dir", str(tmp_path)])
    assert out.exit_code == 0
    out = runner.invoke(app, ["cache", "clear", "--model", "other", "--cache-dir", str(tmp_path)])
    assert out.exit_code == 0 and "no scores of other" in out.stderr
    out = runner.invoke(
        app, ["cache", "clear", "--model", str(tiny_model_dir), "--cache-dir", str(tmp_path)]
    )
    assert out.exit_code == 0 and f"removed {len(set(PAIRS))} scores" in out.stderr
    (tmp_path / FILE_NAME).write_bytes(b"not a database at all" * 100)
    out = runner.invoke(app, ["cache", "info", "--cache-dir", str(tmp_path)])
    assert out.exit_code == 1 and "damaged" in out.stderr and "\n" not in out.stderr.strip()
    assert runner.invoke(app, ["cache", "clear", "--cache-dir", str(tmp_path)]).exit_code == 0
    assert not (tmp_path / FILE_NAME).exists()
