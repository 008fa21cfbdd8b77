"""Extract the program a reward model should score from a raw LLM response.

What the reward model sees decides the score, so this package is deliberately
strict, fast and auditable. ``extract_code(response, mode)`` is a pure function
returning an :class:`Extraction` (code, validity, how it was found, how many
fenced blocks were seen, and short flags explaining anything unusual).

Modes
-----
``auto`` (default)
    Drops reasoning (``<think>...</think>``), parses Markdown fences the
    CommonMark way and chooses among Python/untagged blocks by content, not
    position. Without fences it uses the whole response if it parses, else the
    largest run of cleanly parsing top-level statements (found from one parse).
``paper``
    The authors' training extractor, rule for rule: regex fences, exactly one
    block, stripped, must pass :func:`ast.parse`; otherwise no code.
``last``
    The authors' evaluation extractor: the last regex fence, stripped, no checks.
``none``
    The response itself, for inputs that are already code.

``auto`` and ``last`` first turn CRLF / lone CR into LF (flag ``crlf``): line
endings are a storage artifact, and their code always uses ``\\n``. ``paper`` and
``none`` see the response as it is: ``paper`` returns exactly what the authors'
function returns on any input (their regex needs ``\\n`` after a fence, so a CRLF
response has no code in ``paper`` mode), and ``none`` is verbatim. ``last`` touches
nothing else, so on LF text it returns exactly what the authors' function returns.

Validity (``valid``) means the code is non-empty and tree-sitter parses it with
no ERROR / MISSING node; in ``paper`` mode it means exactly ``ast.parse``
success (the authors' check).

Time is linear in the response size in every mode: the text is scanned a constant
number of times, and ``auto`` parses each distinct block once, within a budget
(``analysis.MAX_PARSES`` texts; re-reads for fences in strings within half the
response), so a response of thousands of broken fences costs at most what about 1.5
tree-sitter passes over it cost. Modules: ``text`` (line endings, reasoning, fence
lines), ``fences`` (blocks), ``analysis`` (what code holds; the budget), ``choose``
(the winner), ``unfenced``, ``authors`` (``paper``/``last``), ``parser``.
"""

from __future__ import annotations

from .analysis import Budget
from .authors import last, paper
from .choose import from_fences
from .fences import scan_fences
from .parser import is_valid_python
from .result import EXTRACT_MODES, Extraction
from .text import normalise_newlines, strip_reasoning
from .unfenced import unfenced

__all__ = ["EXTRACT_MODES", "Extraction", "extract_code", "is_valid_python"]


def _auto(text: str, flags: list[str]) -> Extraction:
    if text.startswith("\ufeff"):
        text = text[1:]
    text = strip_reasoning(text, flags)
    if "```" in text or "~~~" in text:
        blocks = scan_fences(text, flags, budget := Budget(len(text)))
        if blocks.n_blocks:
            return from_fences(blocks, flags, budget)
    return unfenced(text, flags)


def _verbatim(text: str, flags: list[str]) -> Extraction:
    if not text.strip():
        return Extraction("", False, "none", 0, tuple(flags))
    return Extraction(text, is_valid_python(text), "verbatim", 0, tuple(flags))


_MODES = {"auto": _auto, "paper": paper, "last": last, "none": _verbatim}
# Modes that read line endings as LF; paper and none take the response as it is.
_NORMALISED = ("auto", "last")


def extract_code(response: str, mode: str = "auto") -> Extraction:
    """Extract the code to score from a raw model response.

    Never raises for a ``str`` (raises ``ValueError`` for an unknown ``mode``).

    In ``auto`` mode, fenced blocks tagged with another language (javascript,
    bash, text, json, output, ...) are never returned as Python. Among
    Python-tagged and untagged blocks the winner is, in order: a valid block
    that defines functions/classes, a valid complete program, a *broken*
    solution (returned with ``valid=False`` so it can be audited and scores as
    invalid), then usage/test blocks (asserts, ``print(f(3))``, anything calling
    a function only another block defines), then sample output; ties go to the
    largest, then the later block. Blocks are never concatenated. If the best
    Python candidate is only usage or output while other-language blocks exist,
    the result is no code (``non_python_only``). Prose-only responses give
    ``code == ""`` with method ``none``.
    """
    handler = _MODES.get(mode)
    if handler is None:
        raise ValueError(
            f"unknown extract mode {mode!r}; expected one of {', '.join(EXTRACT_MODES)}"
        )
    flags: list[str] = []
    if mode in _NORMALISED:
        response = normalise_newlines(response, flags)
    return handler(response, flags)
