"""What extraction returns, and the modes it has."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ExtractMode

EXTRACT_MODES: tuple[str, ...] = tuple(m.value for m in ExtractMode)


@dataclass(frozen=True, slots=True)
class Extraction:
    """Result of :func:`~codescaler_cli.extract.extract_code`.

    ``code`` is ``""`` when no code was found; ``method`` is one of
    ``fence:python``, ``fence:untagged``, ``fence:<tag>`` (``paper``/``last``
    only), ``unfenced``, ``span``, ``verbatim`` or ``none``. ``n_blocks`` counts
    fenced blocks of every language (after reasoning was removed in ``auto``;
    regex matches in ``paper``/``last``; 0 in ``none``). ``flags`` are short
    machine-readable notes such as ``think_removed`` or ``unclosed_fence``.
    """

    code: str
    valid: bool
    method: str
    n_blocks: int
    flags: tuple[str, ...] = ()
