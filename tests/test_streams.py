"""Forward passes in several streams (threads): same scores, errors and interrupts handled."""

from __future__ import annotations

import signal
import threading
import time
import weakref
from contextlib import contextmanager

import pytest
import torch

from codescaler_cli.config import ScoringOptions
from codescaler_cli.scoring.scorer import Scorer
from support.scoring import QUESTIONS, TOL, make_code, scoring_pairs  # tests/ on sys.path


@contextmanager
def _torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def torch_threads():
    """Two torch threads for the test (default streams need 2+), restored afterwards."""
    with _torch_threads(2) as n:
        yield n


def _score(scorer, pairs, progress=None):
    return scorer.score_pairs([q for q, _ in pairs], [c for _, c in pairs], progress)


def _run(rm, progress=None, **opts):
    scorer = Scorer(rm, ScoringOptions(max_tokens_per_batch=300, **opts))
    return _score(scorer, scoring_pairs(), progress), scorer


def _spy(rm, monkeypatch, name, before=None, after=None):
    """Wrap ``rm.<name>``: ``before(*args)`` runs ahead of each call, ``after(out)`` on
    its result."""
    real = getattr(rm, name)

    def wrapper(*args, **kw):
        if before is not None:
            before(*args)
        out = real(*args, **kw)
        if after is not None:
            after(out)
        return out

    monkeypatch.setattr(rm, name, wrapper)


def _record_threads(rm, monkeypatch, delay=0.0):
    """Record which thread ran each of the model's passes (optionally slowed down)."""
    seen: list[str] = []
    lock = threading.Lock()

    def note(*_):
        with lock:
            seen.append(threading.current_thread().name)
        time.sleep(delay)

    _spy(rm, monkeypatch, "score_ids", note)
    _spy(rm, monkeypatch, "score_suffixes", note)
    return seen


def _first_call(action):
    """A ``before`` hook that runs ``action`` on the first call only, then sleeps 50 ms on
    every call (slow passes cannot all finish before the first one's effect lands)."""
    calls = {"n": 0}
    lock = threading.Lock()

    def hook(*_):
        with lock:
            calls["n"] += 1
            first = calls["n"] == 1
        if first:
            action()
        time.sleep(0.05)

    return hook, calls


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
    with _torch_threads(1):
        seen = _record_threads(rm, monkeypatch)
        _run(rm)
    assert set(seen) == {threading.current_thread().name}


def test_streams_share_torch_threads_and_restore_them(rm, monkeypatch, torch_threads):
    inside: list[int] = []
    _spy(rm, monkeypatch, "score_ids", lambda *_: inside.append(torch.get_num_threads()))
    _run(rm, prefix_reuse=False, streams=2)
    assert inside and set(inside) == {1}  # 2 threads / 2 streams
    assert torch.get_num_threads() == 2


def test_no_more_streams_than_passes(rm, monkeypatch):
    """--streams 4 with two passes to run: two streams, each with half the threads."""
    inside: list[tuple[str, int]] = []

    def note(*_):
        inside.append((threading.current_thread().name, torch.get_num_threads()))
        time.sleep(0.02)

    _spy(rm, monkeypatch, "score_ids", note)
    pairs = [(QUESTIONS[0], make_code(1, 1)), (QUESTIONS[1], make_code(60, 2))]
    with _torch_threads(4):
        _score(Scorer(rm, ScoringOptions(prefix_reuse=False, streams=4)), pairs)
    assert len(inside) == 2  # too different in length to share a pass
    assert {n for _, n in inside} == {2} and len({t for t, _ in inside}) == 2


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
    def fail():
        raise RuntimeError("shape mismatch")

    hook, calls = _first_call(fail)
    _spy(rm, monkeypatch, "score_ids", hook)
    scorer = Scorer(rm, ScoringOptions(max_tokens_per_batch=64, prefix_reuse=False, streams=2))
    pairs = scoring_pairs()
    planned = len(pairs)  # a 64-token budget leaves one candidate per pass
    with pytest.raises(RuntimeError, match="shape mismatch"):
        _score(scorer, pairs)
    assert calls["n"] < planned // 2  # queued passes were cancelled
    assert torch.get_num_threads() == 2


def test_ctrl_c_stops_the_streams_and_restores_threads(rm, reference, monkeypatch, torch_threads):
    """SIGINT while the main thread waits on the streams: each running stream finishes its
    current pass and stops, queued passes are dropped, the interrupt reaches the caller."""
    hook, calls = _first_call(
        lambda: signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
    )
    _spy(rm, monkeypatch, "score_suffixes", hook)
    scorer = Scorer(rm, ScoringOptions(max_tokens_per_batch=64))  # 2 threads: 2 streams
    pairs = scoring_pairs()
    with pytest.raises(KeyboardInterrupt):
        _score(scorer, pairs)
    assert 1 <= calls["n"] <= 3  # about one pass per stream, not the 10 planned
    assert torch.get_num_threads() == 2
    assert not [t for t in threading.enumerate() if t.name.startswith("codescaler-stream")]
    # The same scorer scores everything afterwards, in one stream too (the stop is not sticky).
    torch.set_num_threads(1)
    res = _score(scorer, pairs)
    assert max(abs(a - b) for a, b in zip(res.score, reference, strict=True)) <= TOL


def test_one_problems_answer_passes_are_shared_by_the_streams(
    rm, tiny_model_dir, monkeypatch, torch_threads
):
    """Best-of-N for a single problem: its prompt runs once in the calling thread (it is
    the only job), then its answer passes run in both streams, with each candidate's score."""
    from support.reference import model_card_scores

    pairs = [(QUESTIONS[1], make_code(n, 300 + n)) for n in (2, 4, 6, 9, 12, 15, 20, 26)]
    alone = model_card_scores(str(tiny_model_dir), pairs=pairs, batch=False, max_length=4096)
    seen = _record_threads(rm, monkeypatch, delay=0.02)
    prompts: list[str] = []
    _spy(
        rm, monkeypatch, "prefix_states", lambda *_: prompts.append(threading.current_thread().name)
    )
    res = _score(Scorer(rm, ScoringOptions(max_tokens_per_batch=600)), pairs)
    assert prompts == [threading.current_thread().name]
    assert len(seen) >= 3 and {name.split("_")[0] for name in seen} == {"codescaler-stream"}
    assert len(set(seen)) == 2
    assert max(abs(a - b) for a, b in zip(res.score, alone, strict=True)) <= TOL


@pytest.mark.parametrize("streams", [1, 2])
def test_prompt_states_are_freed_before_the_next_prompt_runs(rm, monkeypatch, streams):
    """Answer passes run before any new prompt: at most one prompt's cached states per
    stream are alive at a time, so memory follows the budget, not the number of problems."""
    alive: list[weakref.ref] = []
    most = {"n": 0}
    lock = threading.Lock()

    def count(*_):
        with lock:
            most["n"] = max(most["n"], sum(r() is not None for r in alive) + 1)

    def keep(out):
        with lock:
            alive.append(weakref.ref(out))

    _spy(rm, monkeypatch, "prefix_states", count, keep)
    pairs = [
        (QUESTIONS[k % 3] + f" (variant {k})", make_code(n, k))
        for k in range(6)
        for n in (3, 8, 14)
    ]
    _score(Scorer(rm, ScoringOptions(max_tokens_per_batch=200, streams=streams)), pairs)
    assert len(alive) == 6  # one prompt pass per problem
    assert most["n"] <= streams


def test_largest_jobs_start_first(rm, monkeypatch):
    """Jobs start largest first (by tokens), so the streams finish on short passes: a
    short-prompt problem with long answers runs before a long-prompt one with short answers."""
    prompts: list[int] = []
    _spy(rm, monkeypatch, "prefix_states", lambda prefixes: prompts.append(len(prefixes[0])))
    small = [(QUESTIONS[1], make_code(1, k)) for k in (1, 2)]
    large = [(QUESTIONS[0], make_code(40, k)) for k in (3, 4, 5, 6)]
    _score(Scorer(rm, ScoringOptions(max_tokens_per_batch=4096, streams=1)), small + large)
    assert len(prompts) == 2 and prompts[0] < prompts[1]


def test_invalid_streams_is_refused(rm):
    from codescaler_cli.errors import UsageError

    with pytest.raises(UsageError, match="--streams must be at least 1"):
        Scorer(rm, ScoringOptions(streams=0))
