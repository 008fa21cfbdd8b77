"""Exactness of every scoring path against the model card run on one candidate alone."""

from __future__ import annotations

import threading

import pytest
import torch

from codescaler_cli.config import ScoringOptions
from codescaler_cli.errors import ModelError
from codescaler_cli.exactness import FLOAT64
from codescaler_cli.scoring.plan import common_prefix_len
from codescaler_cli.scoring.scorer import Scorer
from support.reference import model_card_scores
from support.scoring import TOL, make_code, scoring_pairs  # tests/ is on sys.path

# (prefix_reuse, pack_groups): plain batches, one problem's prompt per pass, several per pass.
PATHS = [(False, None), (True, False), (True, True)]


def _score(rm, **opts):
    pairs = scoring_pairs()
    scorer = Scorer(rm, ScoringOptions(**opts))
    res = scorer.score_pairs([q for q, _ in pairs], [c for _, c in pairs])
    return res, scorer


def test_lengths_really_differ(rm):
    lengths = [len(ids) for ids in rm.encode([rm.render(q, c) for q, c in scoring_pairs()])]
    assert min(lengths) < 80 and max(lengths) > 1200


@pytest.mark.parametrize(("prefix_reuse", "pack"), PATHS)
@pytest.mark.parametrize("budget", [64, 4096])
def test_matches_single_candidate_reference(rm, reference, budget, prefix_reuse, pack):
    """fp32: each path's rounding stays within 1e-5 of the card's path on each candidate
    alone (float64 below proves every path's arithmetic on the whole option grid)."""
    res, scorer = _score(
        rm, max_tokens_per_batch=budget, prefix_reuse=prefix_reuse, pack_groups=pack, streams=3
    )
    assert all(s is not None for s in res.score)
    diff = max(abs(a - b) for a, b in zip(res.score, reference, strict=True))
    assert diff <= TOL
    if budget >= 4096:
        assert scorer.stats.batches < len(reference)  # batching really happened
    if prefix_reuse:
        assert scorer.stats.prefix_groups >= 1


@pytest.fixture(scope="module")
def rm64(tiny_model_dir):
    from codescaler_cli.config import ModelOptions
    from codescaler_cli.model.load import load_reward_model
    from codescaler_cli.model.reward_model import RewardModel

    rm = load_reward_model(ModelOptions(model=str(tiny_model_dir), device="cpu", dtype="float32"))
    return RewardModel(rm.tokenizer, rm.model.double(), name=rm.name, revision=None)


@pytest.fixture(scope="module")
def reference64(rm64):
    """The model card's path on each candidate alone (no padding), in float64."""
    return model_card_scores(rm64.model, rm64.tokenizer, scoring_pairs(), max_length=4096)


@pytest.mark.parametrize("budget", [64, 700, 10**6])
@pytest.mark.parametrize(("prefix_reuse", "pack"), PATHS)
@pytest.mark.parametrize(("trim", "mask"), [(True, False), (False, False), (True, True)])
@pytest.mark.parametrize("streams", [1, 2])
def test_every_path_is_exact_in_float64(
    rm64, reference64, budget, prefix_reuse, pack, trim, mask, streams
):
    """In float64 rounding vanishes: every path is the same arithmetic, not just close in fp32."""
    res, _ = _score(
        rm64,
        max_tokens_per_batch=budget,
        prefix_reuse=prefix_reuse,
        pack_groups=pack,
        trim_last_layer=trim,
        attention_mask=mask,
        streams=streams,
    )
    assert max(abs(a - b) for a, b in zip(res.score, reference64, strict=True)) <= FLOAT64


def test_attention_mask_is_unnecessary_with_right_padding(rm, reference):
    with_mask, _ = _score(rm, max_tokens_per_batch=10**6, attention_mask=True, prefix_reuse=False)
    without, _ = _score(rm, max_tokens_per_batch=10**6, attention_mask=False, prefix_reuse=False)
    for a, b, r in zip(with_mask.score, without.score, reference, strict=True):
        assert abs(a - b) <= TOL and abs(b - r) <= TOL


def test_dedup_scores_once_and_fans_out(rm, reference):
    res, _scorer = _score(rm, dedup=True, prefix_reuse=False)
    assert res.unique_scored == len(reference) - 1
    assert res.score[-1] == res.score[-2]
    nodup, _ = _score(rm, dedup=False, prefix_reuse=False)
    assert nodup.unique_scored == len(reference)
    assert abs(nodup.score[-1] - reference[-1]) <= TOL


def test_prefix_reuse_saves_tokens(rm):
    _, scorer = _score(rm, prefix_reuse=True)
    assert scorer.stats.prefix_tokens_saved > 0


def test_empty_code_is_not_scored(rm):
    scorer = Scorer(rm, ScoringOptions())
    res = scorer.score_pairs(["q", "q"], ["", "x = 1\n"])
    assert res.score[0] is None and res.n_tokens[0] is None
    assert res.score[1] is not None


def test_over_long_question_is_shortened_never_the_code(rm, tiny_model_dir):
    question = "Describe the input format in detail. " * 200
    code = make_code(10, 7)
    scorer = Scorer(rm, ScoringOptions(max_length=256))
    res = scorer.score_pairs([question], [code])
    assert res.truncated == [True] and not res.too_long[0]
    assert res.n_tokens[0] <= 256
    # The scored sequence still ends with the whole code and the template's closing tokens.
    enc = scorer.encode_pairs([question], [code])[0]
    text = rm.tokenizer.decode(enc.ids)
    assert text.endswith(code + "<|im_end|>\n")
    # And the score is the model's score of exactly that shortened conversation.
    shortened_q = text.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
    assert question.startswith(shortened_q)
    ref = model_card_scores(str(tiny_model_dir), pairs=[(shortened_q, code)], batch=False)[0]
    assert abs(res.score[0] - ref) <= TOL


def test_code_longer_than_max_length_is_flagged_not_cut(rm):
    scorer = Scorer(rm, ScoringOptions(max_length=64))
    res = scorer.score_pairs(["q"], [make_code(40, 1)])
    assert res.too_long == [True] and res.truncated == [True]
    assert res.score == [None]
    assert res.n_tokens[0] > 64


def _oom_when_wider_than(rm, monkeypatch, limit):
    real_ids, real_suffixes = rm.score_ids, rm.score_suffixes
    calls = {"oom": 0}
    lock = threading.Lock()  # passes may run in several streams

    def check(seqs, extra=0):
        if len(seqs) > 1 and (max(len(s) for s in seqs) + extra) * len(seqs) > limit:
            with lock:
                calls["oom"] += 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def fake_ids(seqs, **kw):
        check(seqs)
        return real_ids(seqs, **kw)

    def fake_suffixes(states, rows, **kw):
        check([s for _, s in rows], max(states.lengths))
        return real_suffixes(states, rows, **kw)

    monkeypatch.setattr(rm, "score_ids", fake_ids)
    monkeypatch.setattr(rm, "score_suffixes", fake_suffixes)
    return calls


@pytest.mark.parametrize(("prefix_reuse", "pack"), PATHS)
def test_out_of_memory_halves_batches_and_keeps_scores(
    rm, reference, monkeypatch, prefix_reuse, pack
):
    """Two streams share the budget while it is halved."""
    streams = 2
    calls = _oom_when_wider_than(rm, monkeypatch, 1000)
    res, scorer = _score(
        rm,
        max_tokens_per_batch=20_000,
        prefix_reuse=prefix_reuse,
        pack_groups=pack,
        streams=streams,
    )
    assert calls["oom"] > 0 and scorer.stats.oom_retries == calls["oom"]
    assert scorer.budget < 20_000
    diff = max(abs(a - b) for a, b in zip(res.score, reference, strict=True))
    assert diff <= TOL


def test_out_of_memory_on_one_sequence_is_a_clear_error(rm, monkeypatch):
    def boom(seqs, **kw):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(rm, "score_ids", boom)
    scorer = Scorer(rm, ScoringOptions(prefix_reuse=False))
    with pytest.raises(ModelError, match="out of memory on a single sequence"):
        scorer.score_pairs(["q"], ["x = 1\n"])


def test_other_errors_are_not_swallowed(rm, monkeypatch):
    def boom(seqs, **kw):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(rm, "score_ids", boom)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        Scorer(rm, ScoringOptions(prefix_reuse=False)).score_pairs(["q"], ["x = 1\n"])


def test_packed_groups_with_different_prompt_lengths(rm, tiny_model_dir):
    """Several problems in one pass: shorter prompts are padded and masked."""
    questions = [
        "Short task.",
        "A much longer task statement. " * 15,
        "Medium task, some words. " * 4,
    ]
    # Equal-length answers, so the padding cap keeps all nine rows in one pass.
    pairs = [(q, make_code(4, 10 * k + n)) for k, q in enumerate(questions) for n in (1, 4, 9)]
    ref = model_card_scores(str(tiny_model_dir), pairs=pairs, batch=False, max_length=4096)
    scorer = Scorer(rm, ScoringOptions(pack_groups=True, max_tokens_per_batch=10**6))
    res = scorer.score_pairs([q for q, _ in pairs], [c for _, c in pairs])
    assert scorer.stats.prefix_groups == 3
    assert scorer.stats.batches == 1  # all three problems in one suffix pass
    assert max(abs(a - b) for a, b in zip(res.score, ref, strict=True)) <= TOL


def test_common_prefix_len():
    assert common_prefix_len([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_len([[5], [6]]) == 0
    assert common_prefix_len([[1, 2, 3]]) == 3
