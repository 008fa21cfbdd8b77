"""The server's batcher: work follows the client (a fake scorer; no model, no HTTP)."""

from __future__ import annotations

import threading
import time

import pytest

from codescaler_cli.config import ServeOptions
from codescaler_cli.scoring.oom import ScoreStats
from codescaler_cli.scoring.scorer import PairScores
from codescaler_cli.serve.batcher import Batcher, Candidate, Closed


class FakeScorer:
    """Scores a candidate as float(code); records what each run scored; ``gate`` holds runs;
    reports progress (where the batcher may stop a run) after every candidate."""

    budget = 1  # tokens per pass: a piece is PIECE_PASSES tokens (a few candidates)

    def __init__(self, delay: float = 0.0) -> None:
        self.stats = ScoreStats()
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.runs: list[list[str]] = []
        self.scored: list[str] = []

    def prepare(self, questions, codes):
        return type("P", (), {"owner": list(range(len(codes))), "encoded": list(codes)})()

    def run(self, prepared, progress=None):
        self.runs.append(prepared.encoded)
        self.started.set()
        self.gate.wait(30)
        for code in prepared.encoded:
            time.sleep(self.delay)
            self.scored.append(code)
            if progress is not None:
                progress(1, 1)
        n = len(prepared.encoded)
        return PairScores(
            [float(c) for c in prepared.encoded], [1] * n, [False] * n, [False] * n, n
        )


def _items(codes, question="q" * 20):
    return [Candidate(question, str(c)) for c in codes]


@pytest.fixture
def make():
    made = []

    def build(scorer, **options):
        abandoned = []
        batcher = Batcher(
            scorer, ServeOptions(batch_window_ms=0, **options), None,
            lambda n, scored: abandoned.append((n, scored)),
        )  # fmt: skip
        made.append(batcher)
        return batcher, abandoned

    yield build
    for batcher in made:
        batcher.close(timeout=5)


def test_a_request_whose_client_left_is_dropped_before_scoring(make):
    scorer = FakeScorer()
    batcher, abandoned = make(scorer)
    scorer.gate.clear()
    first = batcher.submit(_items([1]))  # runs, held at the gate
    assert scorer.started.wait(10)
    gone = batcher.submit(_items([2, 3, 4]))  # queued behind it
    batcher.cancel(gone)
    scorer.gate.set()
    assert [s.score for s in first.result(10)] == [1.0]
    assert gone.cancelled() and abandoned == [(3, False)]
    assert scorer.scored == ["1"] and batcher.queue_depth == 0


def test_a_large_request_is_scored_in_pieces_taking_turns_with_small_ones(make):
    scorer = FakeScorer()
    batcher, _ = make(scorer)
    scorer.gate.clear()
    first = batcher.submit(_items([0]))
    assert scorer.started.wait(10)
    large = batcher.submit(_items(range(100, 120)))  # many pieces
    small = batcher.submit(_items([7]))
    scorer.gate.set()
    assert [s.score for s in large.result(10)] == [float(c) for c in range(100, 120)]
    assert small.result(10)[0].score == 7.0 and first.done()
    pieces = [run for run in scorer.runs if run[0].startswith("1")]
    assert len(pieces) > 2 and all(len(p) <= 4 for p in pieces)
    # The small request did not wait behind the whole large one.
    assert scorer.runs.index(["7"]) < scorer.runs.index(pieces[-1])


def test_the_rest_of_a_large_request_is_dropped_when_its_client_leaves(make):
    scorer = FakeScorer(delay=0.01)
    batcher, abandoned = make(scorer)
    large = batcher.submit(_items(range(100, 140)))
    while len(scorer.runs) < 2:  # its second piece is running
        time.sleep(0.005)
    batcher.cancel(large)
    time.sleep(0.3)  # the running piece stops after its current pass
    handed_out = sum(len(run) for run in scorer.runs)
    assert handed_out <= 3 * 4 and len(scorer.scored) < handed_out  # stopped mid-piece
    assert (40 - handed_out, False) in abandoned and not large.done()


def test_a_running_batch_stops_only_when_everyone_in_it_has_gone(make):
    scorer = FakeScorer(delay=0.02)
    batcher, abandoned = make(scorer, batch_tokens=10**6)
    scorer.gate.clear()
    blocker = batcher.submit(_items([0]))
    assert scorer.started.wait(10)
    # Two small requests, batched together behind the blocker.
    keep = batcher.submit(_items([1, 2, 3], question=""))
    leave = batcher.submit(_items([4, 5, 6], question=""))
    scorer.gate.set()
    while len(scorer.runs) < 2:
        time.sleep(0.005)
    batcher.cancel(leave)  # the batch goes on for the other request...
    assert [s.score for s in keep.result(10)] == [1.0, 2.0, 3.0] and blocker.done()
    assert (3, True) in abandoned  # ...and discards the gone one's results
    alone = batcher.submit(_items(range(10, 40), question=""))
    while len(scorer.runs) < 3:
        time.sleep(0.005)
    batcher.cancel(alone)  # alone in its batch: stops after the current pass
    time.sleep(0.3)
    assert len(scorer.scored) < 7 + 30 and not alone.done()


def test_past_the_shutdown_deadline_what_waits_is_refused(make):
    scorer = FakeScorer()
    batcher, _ = make(scorer)
    scorer.gate.clear()
    running = batcher.submit(_items([1]))
    assert scorer.started.wait(10)
    waiting = batcher.submit(_items([2]))
    batcher.deadline = time.monotonic()  # what a stop signal sets (here: the grace is over)
    scorer.gate.set()
    with pytest.raises(Closed):
        waiting.result(10)
    with pytest.raises(Closed):
        running.result(10)  # stopped between its passes
    with pytest.raises(Closed):
        batcher.submit(_items([3]))


def test_a_large_request_given_as_it_is_extracted_is_scored_in_order(make):
    scorer = FakeScorer()
    batcher, abandoned = make(scorer)
    items = _items(range(100, 130))
    streamed = batcher.submit(items[:5], total=30, estimate=10**6)
    time.sleep(0.05)  # the first items are scored; the worker then waits for more
    assert batcher.ahead(streamed) == 0 and not streamed.done()
    assert batcher.extend(streamed, items[5:20]) and batcher.extend(streamed, items[20:])
    assert [s.score for s in streamed.result(10)] == [float(c) for c in range(100, 130)]
    # Gone before all of it came: what never came counts as dropped, and no more is taken.
    gone = batcher.submit(items[:3], total=30, estimate=10**6)
    time.sleep(0.05)
    batcher.cancel(gone)
    assert not batcher.extend(gone, items[3:]) and (27, False) in abandoned
