"""The routes' request handling: each turns its request into (question, response) pairs
(or raw texts), has the service score them, and answers in its client's format."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from ..config import ExtractMode, Shaping
from ..shaping import sigmoid
from .batcher import Candidate, Ticket
from .body import RequestError, activation, choice, item_id, text
from .parse import ParseError, messages_of, read_conversations, read_queries
from .prep import Client

if TYPE_CHECKING:
    from .service import Service


async def rewards(
    service: Service,
    body: dict[str, Any],
    ticket: Ticket | None = None,
    client: Client | None = None,
) -> dict[str, Any]:
    """POST /v1/rewards (native)."""
    service.require_ready()
    items = body.get("items")
    if not isinstance(items, list):
        raise RequestError(400, "'items' must be a list of {question, response} objects")
    _check_count(service, len(items))
    ids = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise RequestError(400, f"items[{i}] must be an object")
        for key in ("question", "response"):
            text(item.get(key), f"items[{i}].{key}")
        ids.append(item_id(item.get("id"), f"items[{i}].id"))
    extract = choice(ExtractMode, body.get("extract"), service.rows.extract, "extract")
    shaping = choice(Shaping, body.get("shaping"), service.rows.shaping, "shaping")
    questions = [x["question"] for x in items]
    done = await service.score_pairs(
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
    service: Service,
    body: dict[str, Any],
    ticket: Ticket | None = None,
    client: Client | None = None,
) -> dict[str, Any]:
    """POST /get_reward (OpenRLHF's remote reward model)."""
    service.require_ready()
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
    _check_count(service, len(queries))
    try:
        pairs = await service.prep.call(read_queries, queries, prompts, _pad_tokens(service))
    except ParseError as exc:
        raise RequestError(400, str(exc)) from None
    done = await service.score_pairs(
        [q for q, _ in pairs], [r for _, r in pairs], service.rows.extract, service.rows.shaping,
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
    service: Service,
    body: dict[str, Any],
    ticket: Ticket | None = None,
    client: Client | None = None,
) -> dict[str, Any]:
    """POST /classify (vLLM's pooling API, as verl's reward loop calls it)."""
    service.require_ready()
    inputs, messages = body.get("input"), body.get("messages")
    if (inputs is None) == (messages is None):
        raise RequestError(400, "give either 'input' (a string or list of strings) or 'messages'")
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
    _check_count(service, len(texts) if texts is not None else 1)
    use_activation = activation(body)
    mode = ExtractMode(service.options.classify_extract)
    if mode == ExtractMode.none:
        texts = texts if texts is not None else [_render(service, messages)]
        for i, t in enumerate(texts):
            if not t.strip():
                raise RequestError(400, f"input[{i}] is empty")
        scored = await service.score([Candidate("", t, raw=True) for t in texts], ticket, client)
        for i, s in enumerate(scored):
            if s.score is None:
                limit = service.scoring_options.max_length
                raise RequestError(
                    400, f"input[{i}] has {s.n_tokens} tokens, more than --max-length {limit}"
                )
        values = [s.score for s in scored]
        tokens = sum(s.n_tokens or 0 for s in scored)
    else:
        pairs = await _conversations(service, texts, messages)
        done = await service.score_pairs(
            [q for q, _ in pairs], [r for _, r in pairs], mode, service.rows.shaping,
            ticket, client,
        )  # fmt: skip
        values = done.columns["reward"]
        tokens = sum(t or 0 for t in done.columns["n_tokens"])
    label = (getattr(service.rm.model.config, "id2label", None) or {}).get(0, "LABEL_0")
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
        "model": service.name,
        "data": data,
        "usage": {
            "prompt_tokens": tokens,
            "total_tokens": tokens,
            "completion_tokens": 0,
            "prompt_tokens_details": None,
        },
    }


async def _conversations(
    service: Service, texts: list[str] | None, messages: Any
) -> list[tuple[str, str]]:
    try:
        if texts is None:
            return [messages_of(messages)]
    except ParseError as exc:
        raise RequestError(400, str(exc)) from None
    if service.layout is None:
        raise RequestError(
            400, "this model's chat template cannot be read back from text; send messages"
        )
    try:
        return await service.prep.call(
            read_conversations, texts, service.layout, _pad_tokens(service)
        )
    except ParseError as exc:
        raise RequestError(400, str(exc)) from None


def _check_count(service: Service, n: int) -> None:
    if n > service.options.max_items:
        raise RequestError(
            413, f"{n} candidates in one request; at most --max-items {service.options.max_items}",
            "RequestTooLarge",
        )  # fmt: skip


def _pad_tokens(service: Service) -> list[str]:
    tok = service.rm.tokenizer if service.rm is not None else None
    pad = getattr(tok, "pad_token", None)
    return [pad] if isinstance(pad, str) and pad else []


def _render(service: Service, messages: Any) -> str:
    try:
        messages_of(messages)  # the same checks as the other modes
        return service.rm.tokenizer.apply_chat_template(messages, tokenize=False)
    except ParseError as exc:
        raise RequestError(400, str(exc)) from None
