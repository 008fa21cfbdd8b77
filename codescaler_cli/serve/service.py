"""The server's scoring service: the same model, scorer, extraction and shaping as
``codescaler score``, behind the HTTP routes (app.py). Each route turns its request into
candidates here, the batcher scores them with everything else in flight, and the answers
are shaped here. A request whose client leaves stops where it is: between extraction
chunks, in the queue, or (with nobody else in its batch) between forward passes.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import ExtractMode, ModelOptions, RowOptions, ScoringOptions, ServeOptions, Shaping
from ..extract import Extraction
from ..shaping import sigmoid
from ..stages import extract_responses, score_columns
from .batcher import Batcher, Candidate, Closed, QueueFull, Scored, Ticket
from .body import RequestError, activation, choice, item_id, text
from .metrics import Metrics
from .parse import (
    Layout,
    ParseError,
    layout_of,
    messages_of,
    read_conversations,
    read_queries,
)
from .prep import Client, Prep

if TYPE_CHECKING:
    from ..model.reward_model import RewardModel

EXTRACT_CHUNK = 32  # responses extracted between checks that the client is still there


@dataclass
class Scoring:
    """One request's candidates after scoring, with what the routes report."""

    extractions: list[Extraction]
    columns: dict[str, list[Any]]  # code_valid, score, reward, n_tokens, truncated


class Service:
    def __init__(
        self,
        model: ModelOptions,
        scoring: ScoringOptions,
        rows: RowOptions,
        serve: ServeOptions,
        reward_model: RewardModel | None = None,
    ) -> None:
        self.model_options = model
        self.scoring_options = scoring
        self.rows = rows
        self.options = serve
        self.rm = reward_model
        self.scorer: Any = None
        self.batcher: Batcher | None = None
        self.layout: Layout | None = None  # the reward model's template, for /classify text
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self.failed = threading.Event()
        self.metrics = Metrics(lambda: self.batcher.queue_depth if self.batcher else 0)
        self.prep = Prep()
        self.name = serve.served_model_name or model.model

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Load the model in the background: /health answers 503 until it is ready."""
        threading.Thread(target=self._load, name="codescaler-load", daemon=True).start()

    def _load(self) -> None:
        try:
            from ..scoring.build import build_scorer

            self.scorer = build_scorer(self.rm or self.model_options, self.scoring_options)
            self.rm = self.scorer.rm
            tok = self.rm.tokenizer
            try:
                self.layout = layout_of(lambda m: tok.apply_chat_template(m, tokenize=False))
            except Exception:  # no usable template: /classify text asks for messages instead
                self.layout = None
            self.batcher = Batcher(
                self.scorer, self.options, self.metrics.batch, self.metrics.abandon
            )
            self.ready.set()
        except BaseException as exc:
            self.error = exc
            self.failed.set()

    def begin_shutdown(self, grace: float) -> None:
        """A stop signal: from now, at most ``grace`` seconds of scoring."""
        if self.batcher is not None:
            self.batcher.stop_within(grace)

    def close(self) -> None:
        """Score what is queued, within the shutdown grace period, then stop."""
        if self.batcher is not None:
            self.batcher.close(self.options.shutdown_timeout_s)

    # ------------------------------------------------------------ scoring

    def arrive(self, scoring: bool = True) -> Ticket:
        return Ticket(self.batcher if scoring else None)

    def _require_ready(self) -> None:
        if not self.ready.is_set():
            raise RequestError(
                503, "the model is still loading; retry shortly", "ServiceUnavailable"
            )

    async def score(
        self, items: list[Candidate], ticket: Ticket | None = None, client: Client | None = None
    ) -> list[Scored]:
        self._require_ready()
        assert self.batcher is not None
        client = client or Client()
        client.check()
        try:
            future = self.batcher.submit(items, ticket)
        except QueueFull:
            raise RequestError(
                503, f"over {self.options.max_queue} candidates are waiting; retry shortly",
                "ServiceUnavailable",
            ) from None  # fmt: skip
        except Closed:
            raise RequestError(503, "the server is shutting down", "ServiceUnavailable") from None
        waiter = asyncio.wrap_future(future)
        try:
            done, _ = await asyncio.wait(
                {waiter, client.left} if client.left else {waiter},
                timeout=self.options.request_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        except asyncio.CancelledError:  # shutdown past its grace period
            self.batcher.cancel(future)
            raise
        if waiter in done:
            try:
                return waiter.result()
            except Closed:
                raise RequestError(
                    503, "the server is shutting down", "ServiceUnavailable"
                ) from None
        self.batcher.cancel(future)
        waiter.cancel()
        client.check()
        raise RequestError(504, f"no answer within {self.options.request_timeout_s:g} s", "Timeout")

    async def score_pairs(
        self,
        questions: list[str],
        responses: list[str],
        extract: ExtractMode,
        shaping: Shaping,
        ticket: Ticket | None = None,
        client: Client | None = None,
    ) -> Scoring:
        """Extract, score and shape as ``codescaler score`` does, row for row."""
        self._require_ready()
        client = client or Client()
        limit = self.scorer.max_response_chars
        extractions: list[Extraction] = []
        for i in range(0, len(responses), EXTRACT_CHUNK):
            client.check()
            part = responses[i : i + EXTRACT_CHUNK]
            extractions += await self.prep.call(extract_responses, part, extract, limit)
        items = [Candidate(q, e.code) for q, e in zip(questions, extractions, strict=True)]
        scored = await self.score(items, ticket, client)
        return Scoring(extractions, score_columns(extractions, _pair_scores(scored), shaping))

    # ------------------------------------------------------------ routes

    async def rewards(
        self, body: dict[str, Any], ticket: Ticket | None = None, client: Client | None = None
    ) -> dict[str, Any]:
        """POST /v1/rewards (native)."""
        items = body.get("items")
        if not isinstance(items, list):
            raise RequestError(400, "'items' must be a list of {question, response} objects")
        self._check_count(len(items))
        ids = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise RequestError(400, f"items[{i}] must be an object")
            for key in ("question", "response"):
                text(item.get(key), f"items[{i}].{key}")
            ids.append(item_id(item.get("id"), f"items[{i}].id"))
        extract = choice(ExtractMode, body.get("extract"), self.rows.extract, "extract")
        shaping = choice(Shaping, body.get("shaping"), self.rows.shaping, "shaping")
        questions = [x["question"] for x in items]
        done = await self.score_pairs(
            questions, [x["response"] for x in items], extract, shaping, ticket, client
        )
        cols = done.columns
        results = [
            {
                "id": ids[i],
                "score": cols["score"][i],
                "reward": cols["reward"][i],
                "code": e.code,
                "code_valid": cols["code_valid"][i],
                "extract_method": e.method,
                "n_tokens": cols["n_tokens"][i],
                "truncated": cols["truncated"][i],
            }
            for i, e in enumerate(done.extractions)
        ]
        scored = [t for t in cols["n_tokens"] if t is not None]
        usage = {"candidates": len(items), "scored": sum(s is not None for s in cols["score"])}
        return {"results": results, "usage": {**usage, "tokens": sum(scored)}}

    async def get_reward(
        self, body: dict[str, Any], ticket: Ticket | None = None, client: Client | None = None
    ) -> dict[str, Any]:
        """POST /get_reward (OpenRLHF's remote reward model)."""
        queries, prompts = body.get("query"), body.get("prompts")
        if not isinstance(queries, list):
            raise RequestError(400, "'query' must be a list of strings")
        for i, query in enumerate(queries):
            text(query, f"query[{i}]")
        if prompts is None:
            raise RequestError(
                400, "'prompts' is required: each query's prompt, so that the response is "
                "read as the query minus it",
            )  # fmt: skip
        if not isinstance(prompts, list) or len(prompts) != len(queries):
            raise RequestError(400, "'prompts' must be a list of strings, one per query")
        for i, prompt in enumerate(prompts):
            text(prompt, f"prompts[{i}]")
        self._check_count(len(queries))
        try:
            pairs = await self.prep.call(read_queries, queries, prompts, self._pad_tokens())
        except ParseError as exc:
            raise RequestError(400, str(exc)) from None
        done = await self.score_pairs(
            [q for q, _ in pairs], [r for _, r in pairs], self.rows.extract, self.rows.shaping,
            ticket, client,
        )  # fmt: skip
        cols = done.columns
        flags = {k: [float(bool(v)) for v in cols[k]] for k in ("code_valid", "truncated")}
        return {
            "rewards": cols["reward"],
            # The raw logit where one was computed; the reward (0.0) where no code was scored.
            "scores": [
                r if s is None else s for s, r in zip(cols["score"], cols["reward"], strict=True)
            ],
            "extra_logs": {**flags, "n_tokens": [float(n or 0) for n in cols["n_tokens"]]},
            "extract_method": [e.method for e in done.extractions],  # strings: not in extra_logs
        }

    async def classify(
        self, body: dict[str, Any], ticket: Ticket | None = None, client: Client | None = None
    ) -> dict[str, Any]:
        """POST /classify (vLLM's pooling API, as verl's reward loop calls it)."""
        inputs, messages = body.get("input"), body.get("messages")
        if (inputs is None) == (messages is None):
            raise RequestError(
                400, "give either 'input' (a string or list of strings) or 'messages'"
            )
        texts: list[str] | None = None
        if messages is not None:
            for i, m in enumerate(messages if isinstance(messages, list) else []):
                if isinstance(m, dict) and m.get("content") is not None:
                    text(m["content"], f"messages[{i}].content")
        else:
            texts = [inputs] if isinstance(inputs, str) else inputs
            if not isinstance(texts, list) or not texts:
                raise RequestError(400, "'input' must be a string or a non-empty list of strings")
            for i, t in enumerate(texts):
                text(t, f"input[{i}]")
        self._check_count(len(texts) if texts is not None else 1)
        use_activation = activation(body)
        mode = ExtractMode(self.options.classify_extract)
        if mode == ExtractMode.none:
            texts = texts if texts is not None else [self._render(messages)]
            for i, t in enumerate(texts):
                if not t.strip():
                    raise RequestError(400, f"input[{i}] is empty")
            scored = await self.score([Candidate("", t, raw=True) for t in texts], ticket, client)
            for i, s in enumerate(scored):
                if s.score is None:
                    limit = self.scoring_options.max_length
                    raise RequestError(
                        400, f"input[{i}] has {s.n_tokens} tokens, more than --max-length {limit}"
                    )
            values = [s.score for s in scored]
            tokens = sum(s.n_tokens or 0 for s in scored)
        else:
            pairs = await self._conversations(texts, messages)
            done = await self.score_pairs(
                [q for q, _ in pairs], [r for _, r in pairs], mode, self.rows.shaping,
                ticket, client,
            )  # fmt: skip
            values = done.columns["reward"]
            tokens = sum(t or 0 for t in done.columns["n_tokens"])
        label = (getattr(self.rm.model.config, "id2label", None) or {}).get(0, "LABEL_0")
        data = [
            {
                "index": i,
                "label": label,
                "probs": [sigmoid(v) if use_activation else float(v)],
                "num_classes": 1,
            }
            for i, v in enumerate(values)
        ]
        return {
            "id": f"classify-{uuid.uuid4().hex[:16]}",
            "object": "list",
            "created": int(time.time()),
            "model": self.name,
            "data": data,
            "usage": {
                "prompt_tokens": tokens,
                "total_tokens": tokens,
                "completion_tokens": 0,
                "prompt_tokens_details": None,
            },
        }

    def models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": self.name,
                    "object": "model",
                    "created": int(time.time()),
                    "owned_by": "codescaler",
                    "max_model_len": self.scoring_options.max_length,
                }
            ],
        }

    # ------------------------------------------------------------ helpers

    async def _conversations(self, texts: list[str] | None, messages: Any) -> list[tuple[str, str]]:
        try:
            if texts is None:
                return [messages_of(messages)]
        except ParseError as exc:
            raise RequestError(400, str(exc)) from None
        if self.layout is None:
            raise RequestError(
                400, "this model's chat template cannot be read back from text; send messages"
            )
        try:
            return await self.prep.call(read_conversations, texts, self.layout, self._pad_tokens())
        except ParseError as exc:
            raise RequestError(400, str(exc)) from None

    def _check_count(self, n: int) -> None:
        if n > self.options.max_items:
            raise RequestError(
                413, f"{n} candidates in one request; at most --max-items {self.options.max_items}",
                "RequestTooLarge",
            )  # fmt: skip

    def _pad_tokens(self) -> list[str]:
        tok = self.rm.tokenizer if self.rm is not None else None
        pad = getattr(tok, "pad_token", None)
        return [pad] if isinstance(pad, str) and pad else []

    def _render(self, messages: Any) -> str:
        try:
            messages_of(messages)  # the same checks as the other modes
            return self.rm.tokenizer.apply_chat_template(messages, tokenize=False)
        except ParseError as exc:
            raise RequestError(400, str(exc)) from None


def _pair_scores(scored: list[Scored]) -> Any:
    from ..scoring.scorer import PairScores

    return PairScores(
        [s.score for s in scored],
        [s.n_tokens for s in scored],
        [s.truncated for s in scored],
        [s.too_long for s in scored],
    )
