"""Strict request bodies (pure): JSON as the standard defines it, each field checked before
any work, every refusal one line for a 4xx."""

from __future__ import annotations

import json
from typing import Any

INT64 = (-(2**63), 2**63 - 1)
MAX_INT_DIGITS = 20  # longer integer literals are never turned into ints (no CPU spent on them)


class RequestError(Exception):
    """A request this server refuses: ``status`` and a one-line message."""

    def __init__(self, status: int, message: str, kind: str = "BadRequestError") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


class ClientGone(Exception):
    """The client disconnected before its answer: nothing more is done for it."""


class BigInt:
    """An integer literal too long to be any id (kept as text, never converted)."""

    def __init__(self, digits: str) -> None:
        self.digits = digits


class _Duplicate(Exception):
    pass


class _Constant(Exception):
    pass


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _Duplicate(key)
        seen[key] = value
    return seen


def _constant(name: str) -> Any:
    raise _Constant(name)


def _int(digits: str) -> int | BigInt:
    return int(digits) if len(digits) <= MAX_INT_DIGITS else BigInt(digits)


def decode_json(raw: bytes) -> dict[str, Any]:
    """The request's JSON object. Refused (400): invalid JSON, NaN/Infinity (not JSON),
    a key repeated in one object (which value was meant is unknown), a non-object body."""
    try:
        data = json.loads(raw, object_pairs_hook=_object, parse_constant=_constant, parse_int=_int)
    except _Duplicate as exc:
        raise RequestError(400, f"duplicate key {exc.args[0]!r} in the body") from None
    except _Constant as exc:
        raise RequestError(400, f"the body is not valid JSON ({exc.args[0]} is not JSON)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"the body is not valid JSON ({exc})") from None
    except RecursionError:
        raise RequestError(400, "the body is nested too deeply") from None
    if not isinstance(data, dict):
        raise RequestError(400, "the body must be a JSON object")
    return data


def text(value: Any, where: str) -> str:
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


def item_id(value: Any, where: str) -> str | int | None:
    """An id echoed back: absent/null, a string, or a JSON integer within 64 bits (signed),
    so any client and any column type holds it exactly."""
    if value is None:
        return None
    if isinstance(value, str):
        return text(value, where)
    if isinstance(value, BigInt) or (
        isinstance(value, int) and not isinstance(value, bool) and not INT64[0] <= value <= INT64[1]
    ):
        raise RequestError(400, f"{where} must be an integer within 64 bits (signed)")
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(400, f"{where} must be a string or an integer")
    return value


def choice(kind: Any, value: Any, default: Any, name: str) -> Any:
    if value is None:
        return default
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(c.value for c in kind)
        shown = repr(value)[:60]
        raise RequestError(400, f"'{name}' must be one of {choices}, got {shown}") from None


def activation(body: dict[str, Any]) -> bool:
    """vLLM's ``use_activation`` (older clients: ``activation``, ``softmax``); default on."""
    for key in ("use_activation", "activation", "softmax"):
        value = body.get(key)
        if value is not None:
            if not isinstance(value, bool):
                raise RequestError(400, f"'{key}' must be true or false")
            return value
    return True
