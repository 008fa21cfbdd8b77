"""A loaded reward model: render conversations and run the exact forward passes.

The score is what the model card computes: the conversation
``[user: question, assistant: code]`` rendered with the tokenizer's own chat template,
tokenized with the tokenizer's defaults, and the single logit at the last real token.
Batches are right-padded: with a causal model the last real token never attends to a
pad position, so no attention mask is needed for an exact score (tested).
"""

from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def render(tokenizer: Any, question: str, code: str) -> str:
    """The conversation as the model card renders it, with the tokenizer's own template."""
    conv = [{"role": "user", "content": question}, {"role": "assistant", "content": code}]
    return tokenizer.apply_chat_template(conv, tokenize=False)


def encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    # Same call as the model card (tokenizer defaults), minus truncation: over-long
    # inputs are shortened on purpose by the caller, never cut from the right.
    return tokenizer(texts)["input_ids"]


@dataclass
class PrefixStates:
    """Cached key/value states of a batch of shared prompts (right-padded)."""

    kv: list[tuple[Any, Any]]
    lengths: list[int]
    lengths_t: Any  # the same lengths as a tensor


class RewardModel:
    """A loaded reward model with the exact scoring path and counters for audits."""

    def __init__(self, tokenizer: Any, model: Any, *, name: str, revision: str | None) -> None:

        self.tokenizer = tokenizer
        self.model = model
        self.name = name
        self.revision = revision
        self.commit = getattr(model.config, "_commit_hash", None)
        self.device: torch.device = next(model.parameters()).device
        self.dtype: torch.dtype = next(model.parameters()).dtype
        self.pad_id: int = int(model.config.pad_token_id)
        self.forward_calls = 0
        self.forward_tokens = 0
        self._counter_lock = threading.Lock()  # passes may run in several threads
        self._base = getattr(model, getattr(model, "base_model_prefix", "model"), None)
        self._head = getattr(model, "score", None)
        params = inspect.signature(self._base.forward).parameters if self._base is not None else {}
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._last = None
        self._answer_attention = False
        if self._base is not None and self._head is not None:
            from . import answer_attention
            from .last_layer import LastLayer

            self._last = LastLayer.find(self._base)
            self._answer_attention = answer_attention.install(model)

    # ------------------------------------------------------------ text -> ids

    def render(self, question: str, code: str) -> str:
        return render(self.tokenizer, question, code)

    def encode(self, texts: list[str]) -> list[list[int]]:
        return encode(self.tokenizer, texts)

    # ------------------------------------------------------------ forward passes

    def _pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        import numpy as np
        import torch

        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        width = int(lengths.max())
        arr = np.full((len(seqs), width), self.pad_id, dtype=np.int64)
        for i, s in enumerate(seqs):
            arr[i, : len(s)] = s
        ids = torch.from_numpy(arr)
        lens = torch.from_numpy(lengths)
        if self.device.type == "cuda":
            ids = ids.pin_memory().to(self.device, non_blocking=True)
            lens = lens.pin_memory().to(self.device, non_blocking=True)
        else:
            ids, lens = ids.to(self.device), lens.to(self.device)
        return ids, lens

    def compile(self) -> None:
        """torch.compile the decoder stack (the first batches of each shape compile)."""
        # Dynamic shapes: batches differ in size and length, and must not recompile each time.
        self._base.compile(dynamic=True)

    @property
    def compiled(self) -> bool:
        return getattr(self._base, "_compiled_call_impl", None) is not None

    @property
    def can_trim_last_layer(self) -> bool:
        """Whether the final layer can run at the scored token only (see last_layer.py).
        Not under torch.compile: the early stop is a Python exception, a graph break."""
        return self._last is not None and not self.compiled

    def _count(self, ids: torch.Tensor) -> None:
        with self._counter_lock:
            self.forward_calls += 1
            self.forward_tokens += int(ids.numel())

    def score_ids(
        self, seqs: list[list[int]], *, attention_mask: bool = False, trim: bool = True
    ) -> list[float]:
        """Score right-padded sequences; the logit is read at each sequence's last token."""
        import torch

        ids, lens = self._pad(seqs)
        self._count(ids)
        with torch.inference_mode():
            mask = None
            if attention_mask:
                mask = (
                    torch.arange(ids.shape[1], device=ids.device)[None, :] < lens[:, None]
                ).long()
            if self._base is None or self._head is None:
                out = self.model(input_ids=ids, attention_mask=mask)
                return out.logits[:, 0].double().cpu().tolist()
            if trim and self.can_trim_last_layer:
                return self._score_trimmed(
                    lambda: self._base(input_ids=ids, attention_mask=mask, use_cache=False), lens
                )
            hidden = self._base(
                input_ids=ids, attention_mask=mask, use_cache=False
            ).last_hidden_state
            final = hidden[torch.arange(ids.shape[0], device=ids.device), lens - 1]
            return self._head(final)[:, 0].double().cpu().tolist()

    def prefix_states(self, prefixes: list[list[int]], *, trim: bool = True) -> PrefixStates:
        """Key/value states of shared prompts, computed once per problem (batched, right-padded:
        a real position never attends to a pad slot, so its states are exact)."""
        import torch
        from transformers import DynamicCache

        ids, lens = self._pad(prefixes)
        self._count(ids)
        # Every layer keeps every prompt position, sliding-window layers too (a cache built
        # from the config would keep only their window): the answer passes read the cache
        # without a config, and their masks apply the windows.
        cache = DynamicCache()

        def forward():
            return self._base(input_ids=ids, use_cache=True, **{self._cache_kw: cache})

        with torch.inference_mode():
            if trim and self.can_trim_last_layer:
                # The final layer of a prompt is only ever read as keys and values.
                last = self._last
                hidden, kw = last.run_to_input(forward)
                _, k, v = last.keys_values(hidden, kw["position_embeddings"])
                n = len(self._base.layers)
                kv = [(layer.keys, layer.values) for layer in cache.layers[: n - 1]] + [(k, v)]
            else:
                forward()
                kv = [(layer.keys, layer.values) for layer in cache.layers]
        return PrefixStates(kv, [len(p) for p in prefixes], lens)

    def score_suffixes(
        self,
        states: PrefixStates,
        rows: list[tuple[int, list[int]]],
        *,
        trim: bool = True,
        skip_blocks: bool = True,
    ) -> list[float]:
        """Score ``prefix[g] + suffix`` for each ``(g, suffix)`` row against cached prefix states.

        Exact for causal models: the prefix states do not depend on what follows; a suffix
        token sees its own prefix (padding slots of shorter prefixes are masked) and the
        real suffix tokens before it; positions continue from the row's own prefix length.
        ``skip_blocks``: on CPU, leave out the key blocks no query of a run sees
        (answer_attention.py).
        """
        import torch
        from transformers import DynamicCache

        from .answer_attention import ANSWER_PASS, AnswerPass

        ids, lens = self._pad([s for _, s in rows])
        b, width = ids.shape
        dev = ids.device
        groups = torch.tensor([g for g, _ in rows], dtype=torch.long, device=dev)
        plen = states.lengths_t.to(dev)[groups]
        self._count(ids)
        with torch.inference_mode():
            single = len(set(g for g, _ in rows)) == 1
            if single:
                g0 = rows[0][0]
                kv = [
                    (k[g0 : g0 + 1].expand(b, -1, -1, -1), v[g0 : g0 + 1].expand(b, -1, -1, -1))
                    for k, v in states.kv
                ]
            else:
                kv = [(k.index_select(0, groups), v.index_select(0, groups)) for k, v in states.kv]
            pmax = kv[0][0].shape[2]
            # Each row sees its own prompt slots (all of them when none is padded) ...
            seen = plen[:, None] > torch.arange(pmax, device=dev)[None, :]
            mask = None
            if not (single and states.lengths[rows[0][0]] == pmax):
                # ... and every answer slot (causality hides the later ones).
                mask = torch.cat([seen, seen.new_ones(b, width)], dim=1)
            pos = plen[:, None] + torch.arange(width, device=dev)[None, :]
            trimmed = trim and self.can_trim_last_layer
            # A trimmed pass stops before the final layer: its cached prompt is read directly.
            cache = DynamicCache(kv[:-1] if trimmed else kv)
            extra = {self._cache_kw: cache}
            if skip_blocks and self._answer_attention and not self.compiled:
                extra[ANSWER_PASS] = AnswerPass(start=pmax)

            def forward():
                return self._base(
                    input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **extra
                )

            if trimmed:
                return self._score_trimmed(forward, lens, kv[-1], seen)
            out = forward()
            final = out.last_hidden_state[torch.arange(b, device=dev), lens - 1]
            return self._head(final)[:, 0].double().cpu().tolist()

    def _score_trimmed(
        self,
        forward: Any,
        lens: torch.Tensor,
        prompt_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        prompt_seen: torch.Tensor | None = None,
    ) -> list[float]:
        """Run ``forward`` (a call of the decoder stack) up to its final layer, then finish
        that layer at each row's last token. ``prompt_kv``: the final layer's cached prompt
        keys/values, ``prompt_seen``: which of their slots each row may see."""
        import torch

        last = self._last
        hidden, kw = last.run_to_input(forward)
        pe = kw["position_embeddings"]
        normed, keys, values = last.keys_values(hidden, pe)
        # The scored token sees its own tokens, not the padding after them.
        key_mask = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lens[:, None]
        if prompt_kv is not None:
            keys = torch.cat([prompt_kv[0], keys], dim=2)
            values = torch.cat([prompt_kv[1], values], dim=2)
            key_mask = torch.cat([prompt_seen, key_mask], dim=1)
        final = last.pooled(hidden, normed, lens - 1, pe, keys, values, key_mask)
        return self._head(final)[:, 0].double().cpu().tolist()

    @property
    def supports_prefix_reuse(self) -> bool:
        return self._base is not None and self._head is not None
