"""The final layer run at the scored token only: same scores as the full final layer."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from codescaler_cli.model.last_layer import LastLayer
from codescaler_cli.model.reward_model import RewardModel
from codescaler_cli.scoring.plan import common_prefix_len
from support.scoring import ARCHS, arch_reward_model, tol


def _seqs(rm: RewardModel, question: str, n: int) -> list[list[int]]:
    codes = [
        "def f(x):\n"
        + "".join(f"    x = x * {k} + {i}\n" for i in range(3 * k + 1))
        + "    return x\n"
        for k in range(n)
    ]
    return rm.encode([rm.render(question, c) for c in codes])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("arch", ARCHS)
def test_trimmed_final_layer_gives_the_same_scores(tok, arch, dtype):
    rm = arch_reward_model(arch, tok, dtype)
    assert rm.can_trim_last_layer
    seqs = _seqs(rm, "Sum the even numbers of a list.\n" * 3, 6)
    assert len({len(s) for s in seqs}) == len(seqs)  # right padding really happens
    for mask in (False, True):
        full = rm.score_ids(seqs, attention_mask=mask, trim=False)
        trimmed = rm.score_ids(seqs, attention_mask=mask, trim=True)
        assert max(full) - min(full) > 0.05  # the candidates really score differently
        assert max(abs(a - b) for a, b in zip(full, trimmed, strict=True)) <= tol(dtype)
    alone = [rm.score_ids([s], trim=True)[0] for s in seqs]
    assert max(abs(a - b) for a, b in zip(full, alone, strict=True)) <= tol(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("arch", ARCHS)
def test_trimmed_final_layer_with_cached_prompts(tok, arch, dtype):
    rm = arch_reward_model(arch, tok, dtype)
    # Two problems whose prompts differ in length: packed passes mask the shorter one's pad.
    groups = [_seqs(rm, "Reverse a string.", 4), _seqs(rm, "Merge two sorted lists.\n" * 4, 4)]
    prefixes, rows, whole = [], [], []
    for g, seqs in enumerate(groups):
        p = common_prefix_len(seqs)
        assert p >= 8
        prefixes.append(seqs[0][:p])
        rows += [(g, s[p:]) for s in seqs]
        whole += seqs
    reference = rm.score_ids(whole, trim=False)
    full_states = rm.prefix_states(prefixes, trim=False)
    trimmed_states = rm.prefix_states(prefixes, trim=True)
    for (k1, v1), (k2, v2) in zip(full_states.kv, trimmed_states.kv, strict=True):
        assert torch.allclose(k1, k2, atol=tol(dtype)) and torch.allclose(v1, v2, atol=tol(dtype))
    for states in (full_states, trimmed_states):
        packed = rm.score_suffixes(states, rows, trim=True)
        one_group = rm.score_suffixes(states, rows[4:], trim=True)
        untrimmed = rm.score_suffixes(states, rows, trim=False)
        for got in (packed, one_group, untrimmed):
            want = reference[-len(got) :]
            assert max(abs(a - b) for a, b in zip(got, want, strict=True)) <= tol(dtype)


def test_unsupported_final_layers_take_the_full_pass(tok):
    sliding = arch_reward_model(
        "qwen3",
        tok,
        use_sliding_window=True,
        sliding_window=16,
        max_window_layers=0,
        layer_types=["sliding_attention", "sliding_attention"],
    )
    assert LastLayer.find(sliding._base) is None and not sliding.can_trim_last_layer
    seqs = _seqs(sliding, "Count vowels.", 3)
    assert sliding.score_ids(seqs, trim=True) == sliding.score_ids(seqs, trim=False)

    compiled = arch_reward_model("qwen3", tok)
    compiled.compile()  # lazy: nothing compiles until a call
    assert compiled._last is not None and not compiled.can_trim_last_layer


def test_the_early_stop_leaves_no_hook_behind(tok):
    rm = arch_reward_model("qwen3", tok)
    layer = rm._base.layers[-1]
    rm.score_ids(_seqs(rm, "Count vowels.", 2))
    assert not layer._forward_pre_hooks
    with pytest.raises(IndexError):  # a failure before the final layer is re-raised as is
        rm.score_ids([[len(tok) + 10_000]])
    assert not layer._forward_pre_hooks


def test_the_early_stop_stops_only_its_own_thread(tok):
    """A trimmed pass in one thread never stops a full pass running in another."""
    rm = arch_reward_model("qwen3", tok)
    seqs = _seqs(rm, "Count vowels.", 3)
    trimmed, full = rm.score_ids(seqs, trim=True), rm.score_ids(seqs, trim=False)
    # Slow the first layer down, so both passes are inside the stack at once.
    slow = rm._base.layers[0].register_forward_hook(lambda *_: time.sleep(0.01))
    start = threading.Barrier(2)
    results: dict[str, list] = {"trim": [], "full": [], "errors": []}

    def work(trim: bool) -> None:
        start.wait()
        for _ in range(5):
            try:
                results["trim" if trim else "full"].append(rm.score_ids(seqs, trim=trim))
            except Exception as exc:  # recorded: the assertion below names it
                results["errors"].append(repr(exc))

    threads = [threading.Thread(target=work, args=(t,)) for t in (True, False)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        slow.remove()
    assert results["errors"] == []
    for got in results["trim"]:
        assert max(abs(a - b) for a, b in zip(got, trimmed, strict=True)) <= 1e-6
    for got in results["full"]:
        assert max(abs(a - b) for a, b in zip(got, full, strict=True)) <= 1e-6
    assert not rm._base.layers[-1]._forward_pre_hooks
