"""Forward passes in several streams (threads): same scores, errors and interrupts handled."""

from __future__ import annotations

import signal
import threading
import time

import pytest
import torch
from fixtures_scoring import TOL, scoring_pairs  # tests/ is on sys.path under pytest

from codescaler_cli.scoring import Scorer, ScoringOptions


@pytest.fixture
def torch_threads():
    """Two torch threads for the test (default streams need 2+), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(before)


def _run(rm, progress=None, **opts):
    pairs = scoring_pairs()
    scorer = Scorer(rm, ScoringOptions(max_tokens_per_batch=300, **opts))
    res = scorer.score_pairs([q for q, _ in pairs], [c for _, c in pairs], progress)
    return res, scorer


def _record_threads(rm, monkeypatch, delay=0.0):
    """Wrap the model's passes to record which thread ran each (optionally slowed down)."""
    seen: list[str] = []
    lock = threading.Lock()
    real_ids, real_suffixes = rm.score_ids, rm.score_suffixes

    def note():
        with lock:
            seen.append(threading.current_thread().name)
        time.sleep(delay)

    def ids(seqs, **kw):
        note()
        return real_ids(seqs, **kw)

    def suffixes(states, rows, **kw):
        note()
        return real_suffixes(states, rows, **kw)

    monkeypatch.setattr(rm, "score_ids", ids)
    monkeypatch.setattr(rm, "score_suffixes", suffixes)
    return seen


@pytest.mark.parametrize("prefix_reuse", [False, True])
def test_default_on_cpu_is_two_streams_with_the_same_scores(
    rm, reference, monkeypatch, torch_threads, prefix_reuse
):
    seen = _record_threads(rm, monkeypatch, delay=0.02)
    res, scorer = _run(rm, prefix_reuse=prefix_reuse)
    assert len({name for name in seen}) == 2
    assert all(name.startswith("codescaler-stream") for name in seen)
    assert max(abs(a - b) for a, b in zip(res.score, reference, strict=True)) <= TOL
    # The plan does not depend on the streams: same passes, tokens and padding.
    _, one = _run(rm, prefix_reuse=prefix_reuse, streams=1)
    assert (scorer.stats.batches, scorer.stats.real_tokens, scorer.stats.padded_tokens) == (
        one.stats.batches,
        one.stats.real_tokens,
        one.stats.padded_tokens,
    )


def test_one_torch_thread_means_one_stream(rm, monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seen = _record_threads(rm, monkeypatch)
        _run(rm)
    finally:
        torch.set_num_threads(before)
    assert set(seen) == {threading.current_thread().name}


def test_streams_share_torch_threads_and_restore_them(rm, monkeypatch, torch_threads):
    inside: list[int] = []
    real = rm.score_ids

    def ids(seqs, **kw):
        inside.append(torch.get_num_threads())
        return real(seqs, **kw)

    monkeypatch.setattr(rm, "score_ids", ids)
    _run(rm, prefix_reuse=False, streams=2)
    assert inside and set(inside) == {1}  # 2 threads / 2 streams
    assert torch.get_num_threads() == 2


def test_progress_counts_every_candidate_once(rm, torch_threads):
    totals = []
    for streams in (1, 3):
        done = {"candidates": 0, "tokens": 0}

        def progress(k, t, done=done):
            done["candidates"] += k
            done["tokens"] += t

        res, _ = _run(rm, progress=progress, streams=streams)
        assert done["candidates"] == res.unique_scored
        totals.append(done["tokens"])
    assert totals[0] == totals[1] > 0


def test_first_error_stops_the_other_streams_and_is_raised(rm, monkeypatch, torch_threads):
    calls = {"n": 0}
    lock = threading.Lock()
    real = rm.score_ids

    def ids(seqs, **kw):
        with lock:
            calls["n"] += 1
            first = calls["n"] == 1
        if first:
            raise RuntimeError("shape mismatch")
        time.sleep(0.05)  # the rest are slow: they cannot all finish before the error lands
        return real(seqs, **kw)

    monkeypatch.setattr(rm, "score_ids", ids)
    scorer = Scorer(rm, ScoringOptions(max_tokens_per_batch=64, prefix_reuse=False, streams=2))
    pairs = scoring_pairs()
    planned = len(pairs)  # a 64-token budget leaves one candidate per pass
    with pytest.raises(RuntimeError, match="shape mismatch"):
        scorer.score_pairs([q for q, _ in pairs], [c for _, c in pairs])
    assert calls["n"] < planned // 2  # queued passes were cancelled
    assert torch.get_num_threads() == 2


def test_ctrl_c_stops_the_streams_and_restores_threads(rm, reference, monkeypatch, torch_threads):
    """SIGINT while the main thread waits on the streams: each running stream finishes its
    current pass and stops, queued passes are dropped, the interrupt reaches the caller."""
    real = rm.score_suffixes
    calls = {"n": 0}
    lock = threading.Lock()

    def suffixes(states, rows, **kw):
        with lock:
            calls["n"] += 1
            first = calls["n"] == 1
        if first:
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        time.sleep(0.05)
        return real(states, rows, **kw)

    monkeypatch.setattr(rm, "score_suffixes", suffixes)
    scorer = Scorer(rm, ScoringOptions(max_tokens_per_batch=64))  # 2 threads: 2 streams
    pairs = scoring_pairs()
    with pytest.raises(KeyboardInterrupt):
        scorer.score_pairs([q for q, _ in pairs], [c for _, c in pairs])
    assert 1 <= calls["n"] <= 3  # about one pass per stream, not the 10 planned
    assert torch.get_num_threads() == 2
    assert not [t for t in threading.enumerate() if t.name.startswith("codescaler-stream")]
    # The same scorer scores everything afterwards, in one stream too (the stop is not sticky).
    torch.set_num_threads(1)
    res = scorer.score_pairs([q for q, _ in pairs], [c for _, c in pairs])
    assert max(abs(a - b) for a, b in zip(res.score, reference, strict=True)) <= TOL


def test_invalid_streams_is_refused(rm):
    with pytest.raises(ValueError, match="streams must be at least 1"):
        Scorer(rm, ScoringOptions(streams=0))
