"""Candidates for the scoring tests: best-of-N groups, duplicates, lengths from 1 to 1,000+
tokens. Shared by test_scoring.py, test_streams.py and conftest.py's reference fixture; tiny
models of several architectures for test_last_layer.py and test_answer_attention.py."""

from __future__ import annotations

from codescaler_cli import exactness

TOL = exactness.FLOAT32
ARCHS = ["qwen3", "qwen2", "llama", "mistral"]


def tol(dtype) -> float:
    """float64 checks the algebra (scores agree to double rounding); float32 the 1e-5 standard."""
    return exactness.bound(dtype)


QUESTIONS = [
    "Write a function add(a, b) that returns a + b.",
    "Given a list of integers, return the sum of the even ones.\n" * 12,
    "Implement a stack with push/pop/peek in O(1).",
]


def make_code(n_lines: int, tag: int) -> str:
    body = "\n".join(f"    total += {i} * x  # step {i}" for i in range(n_lines))
    return f"def f{tag}(x):\n    total = 0\n{body}\n    return total\n"


def scoring_pairs() -> list[tuple[str, str]]:
    pairs = []
    for k, n in enumerate([0, 1, 3, 8, 20, 45, 100]):
        q = QUESTIONS[k % len(QUESTIONS)]
        pairs.append((q, make_code(n, k)))
    # best-of-N group sharing a question, plus an exact duplicate
    pairs += [(QUESTIONS[1], make_code(n, 100 + n)) for n in (2, 5, 9, 30)]
    # a group whose answers have equal lengths: they share one answer pass
    pairs += [(QUESTIONS[2], make_code(12, 200 + k)) for k in range(5)]
    pairs.append(pairs[-1])
    return pairs


def arch_reward_model(arch: str, tok, dtype=None, attn: str = "sdpa", **extra):
    """A random 2-layer reward model of ``arch`` (see ARCHS) in memory, on CPU."""
    import torch
    import transformers as tf

    from codescaler_cli.model.reward_model import RewardModel

    config_cls, model_cls = {
        "qwen3": (tf.Qwen3Config, tf.Qwen3ForSequenceClassification),
        "qwen2": (tf.Qwen2Config, tf.Qwen2ForSequenceClassification),
        "llama": (tf.LlamaConfig, tf.LlamaForSequenceClassification),
        "mistral": (tf.MistralConfig, tf.MistralForSequenceClassification),
    }[arch]
    config = config_cls(
        vocab_size=-(-len(tok) // 64) * 64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        initializer_range=0.1,
        pad_token_id=tok.pad_token_id,
        num_labels=1,
        **extra,
    )
    if arch == "mistral":
        config.sliding_window = None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = model_cls._from_config(config, attn_implementation=attn)
    with torch.no_grad():  # scores of a few units, like a trained head
        model.score.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    return RewardModel(tok, model.to(dtype or torch.float32).eval(), name=arch, revision=None)
