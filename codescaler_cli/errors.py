"""Exceptions the CLI maps to one-line messages and exit codes."""

from __future__ import annotations


class CodescalerError(Exception):
    """Base class: a problem the user can fix; the message is one line."""

    exit_code = 1


class UsageError(CodescalerError):
    """Bad option values or combinations (exit 2, like click's usage errors)."""

    exit_code = 2


class InputError(CodescalerError):
    """An input file or row that cannot be read as candidates."""


class OutputError(CodescalerError):
    """The output cannot be written where asked."""


class ModelError(CodescalerError):
    """The reward model cannot be loaded or is not a usable one-label reward model."""


class MissingDependencyError(CodescalerError):
    """An optional extra (e.g. Ray) is needed for the requested option."""

    exit_code = 2


class BadRowError(InputError):
    """One row has a missing or wrongly typed field."""

    def __init__(self, location: str, reason: str) -> None:
        super().__init__(f"{location}: {reason}")
        self.location = location
        self.reason = reason


def describe_error(exc: BaseException, limit: int = 300) -> str:
    """One line for any exception: our own errors by their message (already written for
    users), others as ``Type: first line of the message`` (the type alone when it has none)."""
    lines = str(exc).strip().splitlines()
    text = lines[0].strip() if lines else ""
    if not isinstance(exc, CodescalerError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text[:limit]
