"""Clients of ``codescaler serve``: sync and async, and a verl reward function.

    from codescaler_cli.client import RewardClient

    with RewardClient("http://127.0.0.1:8000") as client:
        rewards = [r["reward"] for r in client.score([(question, response), ...])]

verl (``reward.custom_reward_function.path`` pointing at this file's module,
``name: compute_score``): the server's address comes from ``$CODESCALER_URL``
(default ``http://127.0.0.1:8000``) or the ``url`` reward kwarg, the key from
``$CODESCALER_API_KEY`` or ``api_key``, and the question from ``extra_info[question_key]``
(``question_key`` defaults to ``"question"``). Needs ``httpx`` (the serve extra).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"
Item = tuple[str, str] | dict[str, Any]


class ServerError(RuntimeError):
    """The server refused or failed a request; ``status`` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"codescaler server: {status}: {message}")
        self.status = status


def _payload(items: Iterable[Item], extract: str | None, shaping: str | None) -> dict[str, Any]:
    rows = []
    for item in items:
        if isinstance(item, dict):
            rows.append(item)
        else:
            question, response = item
            rows.append({"question": question, "response": response})
    body: dict[str, Any] = {"items": rows}
    if extract is not None:
        body["extract"] = extract
    if shaping is not None:
        body["shaping"] = shaping
    return body


def _results(response: Any) -> list[dict[str, Any]]:
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except Exception:
            message = response.text[:300]
        raise ServerError(response.status_code, message)
    return response.json()["results"]


def _headers(api_key: str | None) -> dict[str, str]:
    key = api_key or os.environ.get("CODESCALER_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


class RewardClient:
    """``POST /v1/rewards``: each result has ``score``, ``reward``, ``code``,
    ``code_valid``, ``extract_method``, ``n_tokens``, ``truncated`` (and the item's ``id``)."""

    def __init__(
        self, url: str | None = None, *, api_key: str | None = None, timeout: float = 600.0
    ) -> None:
        import httpx

        base = (url or os.environ.get("CODESCALER_URL") or DEFAULT_URL).rstrip("/")
        self._http = httpx.Client(base_url=base, headers=_headers(api_key), timeout=timeout)

    def score(
        self, items: Iterable[Item], *, extract: str | None = None, shaping: str | None = None
    ) -> list[dict[str, Any]]:
        """``items``: (question, response) pairs or ``{"question", "response", "id"}`` dicts."""
        return _results(self._http.post("/v1/rewards", json=_payload(items, extract, shaping)))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


class AsyncRewardClient:
    """The same as :class:`RewardClient`, for asyncio code (``await client.score(...)``)."""

    def __init__(
        self, url: str | None = None, *, api_key: str | None = None, timeout: float = 600.0
    ) -> None:
        import httpx

        base = (url or os.environ.get("CODESCALER_URL") or DEFAULT_URL).rstrip("/")
        self._http = httpx.AsyncClient(base_url=base, headers=_headers(api_key), timeout=timeout)

    async def score(
        self, items: Iterable[Item], *, extract: str | None = None, shaping: str | None = None
    ) -> list[dict[str, Any]]:
        body = _payload(items, extract, shaping)
        return _results(await self._http.post("/v1/rewards", json=body))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncRewardClient:
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.aclose()


# ---------------------------------------------------------------- verl reward functions

_CLIENTS: dict[tuple[str | None, str | None], RewardClient] = {}


def _client(url: str | None, api_key: str | None) -> RewardClient:
    if (url, api_key) not in _CLIENTS:  # one connection pool per worker process
        _CLIENTS[(url, api_key)] = RewardClient(url, api_key=api_key)
    return _CLIENTS[(url, api_key)]


def _question(extra_info: Any, key: str) -> str:
    question = extra_info.get(key) if isinstance(extra_info, dict) else None
    if not isinstance(question, str):
        raise ValueError(
            f"codescaler reward: extra_info has no string {key!r} (the problem statement); "
            "add it to the dataset's extra_info or set the question_key reward kwarg"
        )
    return question


def _as_reward(result: dict[str, Any]) -> dict[str, Any]:
    # The same keys for every sample: verl takes the first sample's keys for the batch.
    return {
        "score": result["reward"],
        "raw_score": result["score"] if result["score"] is not None else 0.0,
        "code_valid": float(result["code_valid"]),
    }


def compute_score(
    data_source: Any,
    solution_str: str,
    ground_truth: Any,
    extra_info: Any = None,
    *,
    url: str | None = None,
    api_key: str | None = None,
    question_key: str = "question",
    **_: Any,
) -> dict[str, Any]:
    """verl's per-sample reward: ``{"score": the paper's reward, "raw_score", "code_valid"}``."""
    question = _question(extra_info, question_key)
    result = _client(url, api_key).score([(question, solution_str)])[0]
    return _as_reward(result)


def compute_score_batch(
    data_sources: Sequence[Any],
    solution_strs: Sequence[str],
    ground_truths: Sequence[Any],
    extra_infos: Sequence[Any],
    *,
    url: str | None = None,
    api_key: str | None = None,
    question_key: str = "question",
    **_: Any,
) -> list[dict[str, Any]]:
    """verl's batched reward manager: one request for the whole batch."""
    pairs = [
        (_question(info, question_key), s)
        for info, s in zip(extra_infos, solution_strs, strict=True)
    ]
    return [_as_reward(r) for r in _client(url, api_key).score(pairs)]
