"""The CLI's error contract, asserted: the exit code, one line on stderr, no traceback."""

from __future__ import annotations

from typing import Any


def one_line(result: Any, code: int, *needles: str) -> str:
    """``result`` (a CliRunner result) exited ``code`` with one ``codescaler: error:`` line
    holding every needle; returns that line."""
    assert result.exit_code == code, result.output
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("codescaler: error: "), err
    for needle in needles:
        assert needle in err, err
    return err
