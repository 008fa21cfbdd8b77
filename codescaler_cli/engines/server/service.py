"""The server engine: the same model, scorer, extraction and shaping as ``codescaler score``,
behind the HTTP routes (app.py). Each route turns its request into candidates here, the
batcher scores them with everything else in flight, and the answers are shaped here.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...config import ExtractMode, ModelOptions, RowOptions, ScoringOptions, ServeOptions, Shaping
from ...extract import Extraction
from ...shaping import sigmoid
from ...stages import extract_responses, score_columns
from .batcher import Batcher, Candidate, Scored, Ticket
from .metrics import Metrics
from .parse import ParseError, conversation_of, messages_of, question_of, response_of

if TYPE_CHECKING:
    from ...model.reward_model import RewardModel


class RequestError(Exception):
    """A request this server refuses: ``status`` and a one-line message."""

    def __init__(self, status: int, message: str, kind: str = "BadRequestError") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


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
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self.failed = threading.Event()
        self.metrics = Metrics(lambda: self.batcher.queue_depth if self.batcher else 0)
        self.name = serve.served_model_name or model.model

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Load the model in the background: /health answers 503 until it is ready."""
        threading.Thread(target=self._load, name="codescaler-load", daemon=True).start()

    def _load(self) -> None:
        try:
            from ...scoring.build import build_scorer

            self.scorer = build_scorer(self.rm or self.model_options, self.scoring_options)
            self.rm = self.scorer.rm
            self.batcher = Batcher(self.scorer, self.options, self.metrics.batch)
            self.ready.set()
        except BaseException as exc:
            self.error = exc
            self.failed.set()

    def close(self) -> None:
        """Score what is queued, then stop."""
        if self.batcher is not None:
            self.batcher.close()

    # ------------------------------------------------------------ scoring

    def arrive(self, scoring: bool = True) -> Ticket:
        return Ticket(self.batcher if scoring else None)

    def _require_ready(self) -> None:
        if not self.ready.is_set():
            raise RequestError(
                503, "the model is still loading; retry shortly", "ServiceUnavailable"
            )

    async def score(self, items: list[Candidate], ticket: Ticket | None = None) -> list[Scored]:
        self._require_ready()
        from .batcher import Closed, QueueFull

        assert self.batcher is not None
        try:
            future = self.batcher.submit(items, ticket)
        except QueueFull:
            raise RequestError(
                503, f"over {self.options.max_queue} candidates are waiting; retry shortly",
                "ServiceUnavailable",
            ) from None  # fmt: skip
        except Closed:
            raise RequestError(503, "the server is shutting down", "ServiceUnavailable") from None
        try:
            return await asyncio.wait_for(
                asyncio.wrap_future(future), self.options.request_timeout_s
            )
        except asyncio.TimeoutError:
            future.cancel()
            raise RequestError(
                504, f"no answer within {self.options.request_timeout_s:g} s", "Timeout"
            ) from None

    async def score_pairs(
        self,
        questions: list[str],
        responses: list[str],
        extract: ExtractMode,
        shaping: Shaping,
        ticket: Ticket | None = None,
    ) -> Scoring:
        """Extract, score and shape as ``codescaler score`` does, row for row."""
        self._require_ready()
        limit = self.scorer.max_response_chars
        extractions = await asyncio.to_thread(extract_responses, responses, extract, limit)
        items = [Candidate(q, e.code) for q, e in zip(questions, extractions, strict=True)]
        scored = await self.score(items, ticket)
        return Scoring(extractions, score_columns(extractions, _pair_scores(scored), shaping))

    # ------------------------------------------------------------ routes

    async def rewards(self, body: dict[str, Any], ticket: Ticket | None = None) -> dict[str, Any]:
        """POST /v1/rewards (native)."""
        items = body.get("items")
        if not isinstance(items, list):
            raise RequestError(400, "'items' must be a list of {question, response} objects")
        self._check_count(len(items))
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise RequestError(400, f"items[{i}] must be an object")
            for key in ("question", "response"):
                _text(item.get(key), f"items[{i}].{key}")
        extract = _choice(ExtractMode, body.get("extract"), self.rows.extract, "extract")
        shaping = _choice(Shaping, body.get("shaping"), self.rows.shaping, "shaping")
        done = await self.score_pairs(
            [x["question"] for x in items], [x["response"] for x in items], extract, shaping, ticket
        )
        cols = done.columns
        results = [
            {
                "id": item.get("id"),
                "score": cols["score"][i],
                "reward": cols["reward"][i],
                "code": e.code,
                "code_valid": cols["code_valid"][i],
                "extract_method": e.method,
                "n_tokens": cols["n_tokens"][i],
                "truncated": cols["truncated"][i],
            }
            for i, (item, e) in enumerate(zip(items, done.extractions, strict=True))
        ]
        scored = [t for t in cols["n_tokens"] if t is not None]
        usage = {"candidates": len(items), "scored": sum(s is not None for s in cols["score"])}
        return {"results": results, "usage": {**usage, "tokens": sum(scored)}}

    async def get_reward(
        self, body: dict[str, Any], ticket: Ticket | None = None
    ) -> dict[str, Any]:
        """POST /get_reward (OpenRLHF's remote reward model)."""
        queries = body.get("query")
        if not isinstance(queries, list):
            raise RequestError(400, "'query' must be a list of strings")
        for i, query in enumerate(queries):
            _text(query, f"query[{i}]")
        prompts = body.get("prompts")
        if prompts is not None and (
            not isinstance(prompts, list) or len(prompts) != len(queries)
            or not all(isinstance(p, str) for p in prompts)
        ):  # fmt: skip
            raise RequestError(400, "'prompts' must be a list of strings, one per query")
        for i, prompt in enumerate(prompts or []):
            _text(prompt, f"prompts[{i}]")
        self._check_count(len(queries))
        pads = self._pad_tokens()
        questions, responses = [], []
        for i, query in enumerate(queries):
            try:
                if prompts is None:
                    q, r = conversation_of(query, pads)
                else:
                    q, r = question_of(prompts[i]), response_of(query, prompts[i], pads)
            except ParseError as exc:
                raise RequestError(400, f"query[{i}]: {exc}") from None
            questions.append(q)
            responses.append(r)
        done = await self.score_pairs(
            questions, responses, self.rows.extract, self.rows.shaping, ticket
        )
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

    async def classify(self, body: dict[str, Any], ticket: Ticket | None = None) -> dict[str, Any]:
        """POST /classify (vLLM's pooling API, as verl's reward loop calls it)."""
        inputs, messages = body.get("input"), body.get("messages")
        if (inputs is None) == (messages is None):
            raise RequestError(
                400, "give either 'input' (a string or list of strings) or 'messages'"
            )
        if messages is not None:
            texts = None
            conversations = [messages]
            for i, m in enumerate(messages if isinstance(messages, list) else []):
                if isinstance(m, dict) and m.get("content") is not None:
                    _text(m["content"], f"messages[{i}].content")
        else:
            texts = [inputs] if isinstance(inputs, str) else inputs
            if (
                not isinstance(texts, list)
                or not texts
                or not all(isinstance(t, str) for t in texts)
            ):
                raise RequestError(400, "'input' must be a string or a non-empty list of strings")
            conversations = None
        n = len(texts) if texts is not None else 1
        self._check_count(n)
        activation = _activation(body)
        mode = ExtractMode(self.options.classify_extract)
        if mode == ExtractMode.none:
            if texts is None:
                texts = [self._render(messages)]
            for i, text in enumerate(texts):
                if not text.strip():
                    raise RequestError(400, f"input[{i}] is empty")
            scored = await self.score([Candidate("", t, raw=True) for t in texts], ticket)
            for i, s in enumerate(scored):
                if s.score is None:
                    limit = self.scoring_options.max_length
                    raise RequestError(
                        400, f"input[{i}] has {s.n_tokens} tokens, more than --max-length {limit}"
                    )
            values = [s.score for s in scored]
            tokens = sum(s.n_tokens or 0 for s in scored)
        else:
            try:
                pairs = (
                    [messages_of(m) for m in conversations]
                    if conversations is not None
                    else [conversation_of(t, self._pad_tokens()) for t in texts or []]
                )
            except ParseError as exc:
                raise RequestError(400, str(exc)) from None
            done = await self.score_pairs(
                [q for q, _ in pairs], [r for _, r in pairs], mode, self.rows.shaping, ticket
            )
            values = done.columns["reward"]
            tokens = sum(t or 0 for t in done.columns["n_tokens"])
        label = (getattr(self.rm.model.config, "id2label", None) or {}).get(0, "LABEL_0")
        data = [
            {
                "index": i,
                "label": label,
                "probs": [sigmoid(v) if activation else float(v)],
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

    def _check_count(self, n: int) -> None:
        if n > self.options.max_items:
            raise RequestError(
                413, f"{n} candidates in one request; at most --max-items {self.options.max_items}",
                "RequestTooLarge",
            )  # fmt: skip

    def _pad_tokens(self) -> list[str]:
        tok = self.rm.tokenizer if self.rm is not None else None
        return [t for t in (getattr(tok, "pad_token", None), getattr(tok, "eos_token", None)) if t]

    def _render(self, messages: Any) -> str:
        try:
            messages_of(messages)  # the same checks as the other modes
            return self.rm.tokenizer.apply_chat_template(messages, tokenize=False)
        except ParseError as exc:
            raise RequestError(400, str(exc)) from None


def _text(value: Any, where: str) -> str:
    """A request's string, refused (400) when it is not one, or holds a lone surrogate
    (valid JSON, but no text: it would fail the whole batch in the tokenizer)."""
    if not isinstance(value, str):
        raise RequestError(400, f"{where} must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(
            400, f"{where} holds a lone surrogate (\\ud800-\\udfff), not text"
        ) from None
    return value


def _choice(kind: Any, value: Any, default: Any, name: str) -> Any:
    if value is None:
        return default
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(c.value for c in kind)
        raise RequestError(400, f"'{name}' must be one of {choices}, got {value!r}") from None


def _activation(body: dict[str, Any]) -> bool:
    """vLLM's ``use_activation`` (older clients: ``activation``, ``softmax``); default on."""
    for key in ("use_activation", "activation", "softmax"):
        value = body.get(key)
        if value is not None:
            if not isinstance(value, bool):
                raise RequestError(400, f"'{key}' must be true or false")
            return value
    return True


def _pair_scores(scored: list[Scored]) -> Any:
    from ...scoring.scorer import PairScores

    return PairScores(
        [s.score for s in scored],
        [s.n_tokens for s in scored],
        [s.truncated for s in scored],
        [s.too_long for s in scored],
    )
