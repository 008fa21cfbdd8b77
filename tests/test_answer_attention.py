"""CPU answer passes leave out the key blocks no query of a run sees: same scores."""

from __future__ import annotations

import itertools

import pytest
import torch

from codescaler_cli.config import ScoringOptions
from codescaler_cli.model.answer_attention import KEY_BLOCK, NAME, query_runs
from codescaler_cli.scoring.plan import common_prefix_len
from codescaler_cli.scoring.scorer import Scorer
from support.scoring import ARCHS, TOL, arch_reward_model, make_code, tol

# A prompt of ~420 tokens and answers of ~20 to ~720: the candidates end in the first,
# second and third key blocks.
QUESTION = "Sum the even numbers of a list, then print it.\n" * 25
LINES = (1, 5, 15, 40)


def _max_diff(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def _group(rm, question: str = QUESTION, tag: int = 0) -> tuple[list[list[int]], int]:
    seqs = rm.encode([rm.render(question, make_code(n, tag + n)) for n in LINES])
    return seqs, common_prefix_len(seqs)


@pytest.fixture
def sdpa_calls(monkeypatch) -> list[tuple[int, int]]:
    """(queries, keys) of every SDPA call, in order."""
    calls: list[tuple[int, int]] = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(query, key, *args, **kwargs):
        calls.append((query.shape[2], key.shape[2]))
        return real(query, key, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    return calls


def test_query_runs_give_each_query_every_key_it_may_see():
    assert query_runs(362, 358, 720) == [(0, 150, 512), (150, 358, 720)]
    assert query_runs(0, 300, 300) == [(0, 300, 300)]
    assert query_runs(648, 314, 962) == [(0, 314, 962)]  # the prompt fills the first block
    for start, n in [(362, 358), (0, 1), (511, 1), (511, 2), (512, 600), (100, 1500), (1030, 5)]:
        runs = query_runs(start, n, start + n)
        assert runs[0][0] == 0 and runs[-1][1] == n
        # Contiguous: each query in exactly one run.
        assert all(before[1] == after[0] for before, after in itertools.pairwise(runs))
        for first, end, keys in runs:
            assert first < end
            # The run's last query (at key position start + end - 1) sees every key it may.
            assert start + end <= keys <= start + n
            # Cut only where one of the kernel's key blocks ends, and one block per run.
            assert keys == start + n or keys % KEY_BLOCK == 0
            assert (start + first) // KEY_BLOCK == (start + end - 1) // KEY_BLOCK


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("arch", ARCHS)
def test_answers_across_key_blocks_score_as_alone(tok, arch, dtype, sdpa_calls):
    rm = arch_reward_model(arch, tok, dtype)
    assert rm.model.config._attn_implementation == NAME
    seqs, p = _group(rm)
    assert p < KEY_BLOCK < len(seqs[1]) and len(seqs[0]) < KEY_BLOCK < 2 * KEY_BLOCK < len(seqs[3])
    alone = [rm.score_ids([s], trim=False)[0] for s in seqs]
    assert max(alone) - min(alone) > 0.05  # the candidates really score differently
    states = rm.prefix_states([seqs[0][:p]])
    rows = [(0, s[p:]) for s in seqs]
    for trim in (True, False):
        for skip in (True, False):
            sdpa_calls.clear()
            one_each = [
                rm.score_suffixes(states, [r], trim=trim, skip_blocks=skip)[0] for r in rows
            ]
            together = rm.score_suffixes(states, rows, trim=trim, skip_blocks=skip)
            assert _max_diff(one_each, alone) <= tol(dtype)
            assert _max_diff(together, alone) <= tol(dtype)
            # The longest answer's queries before key 512 read one block, those up to 1024 two.
            assert ((KEY_BLOCK - p, KEY_BLOCK) in sdpa_calls) == skip
            assert ((KEY_BLOCK, 2 * KEY_BLOCK) in sdpa_calls) == skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_packed_prompts_of_two_lengths(tok, dtype, sdpa_calls):
    """Rows of two problems in one pass: the shorter prompt's pad slots are masked, and
    the cut follows the padded prompt width."""
    rm = arch_reward_model("qwen3", tok, dtype)
    groups = [_group(rm), _group(rm, "Reverse the words of a sentence.\n" * 15, tag=50)]
    prefixes = [seqs[0][:p] for seqs, p in groups]
    assert len(prefixes[1]) < len(prefixes[0])
    rows = [(g, s[p:]) for g, (seqs, p) in enumerate(groups) for s in seqs]
    alone = [rm.score_ids([s], trim=False)[0] for seqs, _ in groups for s in seqs]
    states = rm.prefix_states(prefixes)
    pmax = len(prefixes[0])
    for trim in (True, False):
        sdpa_calls.clear()
        got = rm.score_suffixes(states, rows, trim=trim)
        assert _max_diff(got, alone) <= tol(dtype)
        assert (KEY_BLOCK - pmax, KEY_BLOCK) in sdpa_calls


def test_scorer_option_and_other_models(rm, tok, sdpa_calls):
    """Through the loader and the Scorer: on by default, off by option; models that do not
    run SDPA on CPU keep their own attention."""
    assert rm.model.config._attn_implementation == NAME
    seqs, p = _group(rm)
    codes = [make_code(n, n) for n in LINES]
    alone = [rm.score_ids([s], trim=False)[0] for s in seqs]
    for skip in (True, False):
        sdpa_calls.clear()
        scorer = Scorer(rm, ScoringOptions(skip_hidden_blocks=skip))
        got = scorer.score_pairs([QUESTION] * len(codes), codes).score
        assert scorer.stats.prefix_groups == 1
        assert _max_diff(got, alone) <= TOL
        assert ((KEY_BLOCK - p, KEY_BLOCK) in sdpa_calls) == skip

    eager = arch_reward_model("qwen3", tok, attn="eager")
    assert eager.model.config._attn_implementation == "eager" and not eager._answer_attention
    states = eager.prefix_states([seqs[0][:p]])
    got = eager.score_suffixes(states, [(0, s[p:]) for s in seqs])
    assert _max_diff(got, [eager.score_ids([s], trim=False)[0] for s in seqs]) <= TOL


@pytest.mark.parametrize(
    "types", [("full_attention", "sliding_attention"), ("sliding_attention", "full_attention")]
)
@pytest.mark.parametrize("window", [600, 32])
def test_sliding_window_layers(tok, types, window, sdpa_calls):
    """Layers of two kinds get two masks: each is cut by its own. A window shorter than the
    prompt: the cached prompt keeps every position, the answers' masks apply the window."""
    rm = arch_reward_model(
        "qwen3",
        tok,
        use_sliding_window=True,
        sliding_window=window,
        max_window_layers=1,
        layer_types=list(types),
    )
    assert rm._answer_attention
    codes = [make_code(n, n) for n in LINES]
    seqs, p = _group(rm)
    alone = [rm.score_ids([s], trim=False)[0] for s in seqs]
    assert max(alone) - min(alone) > 0.05
    for skip in (True, False):
        sdpa_calls.clear()
        scorer = Scorer(rm, ScoringOptions(skip_hidden_blocks=skip))
        assert _max_diff(scorer.score_pairs([QUESTION] * len(codes), codes).score, alone) <= TOL
        assert scorer.stats.prefix_groups == 1
        assert ((KEY_BLOCK - p, KEY_BLOCK) in sdpa_calls) == skip


def test_models_that_refuse_the_wrapper_get_no_keyword(tok, monkeypatch):
    """A model whose attention does not dispatch through transformers keeps its own (it
    only logs a warning): install says so, and answer passes send it nothing extra."""
    import transformers as tf

    monkeypatch.setattr(
        tf.Qwen3ForSequenceClassification, "set_attn_implementation", lambda *_: None
    )
    rm = arch_reward_model("qwen3", tok)
    assert rm.model.config._attn_implementation == "sdpa" and not rm._answer_attention
    seen: list[dict] = []
    real = rm._base.forward
    monkeypatch.setattr(rm._base, "forward", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    seqs, p = _group(rm)
    got = rm.score_suffixes(rm.prefix_states([seqs[0][:p]]), [(0, s[p:]) for s in seqs])
    assert _max_diff(got, [rm.score_ids([s], trim=False)[0] for s in seqs]) <= TOL
    assert seen and not any(key.startswith("codescaler") for kw in seen for key in kw)
