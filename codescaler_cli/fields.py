"""Which columns hold what: one detector for every role (question, response, pair sides,
group, label), explicitly named or found by common names (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import UsageError

QUESTION_FIELDS = ("question", "prompt", "problem", "question_content", "instruction", "query")
RESPONSE_FIELDS = ("response", "completion", "output", "code", "answer", "generation", "solution")
PAIR_QUESTION_FIELDS = ("question_content", "question", "prompt", "problem")
CHOSEN_FIELDS = ("code_pos", "chosen", "positive", "response_chosen", "chosen_response")
REJECTED_FIELDS = ("code_neg", "rejected", "negative", "response_rejected", "rejected_response")
GROUP_FIELDS = ("problem_id", "task_id", "question_id", "prompt_id", "problem_idx")
LABEL_FIELDS = ("passed", "correct", "label", "is_correct", "pass")
# Field detection looks at the columns of this many readable rows of an input.
FIELDS_PROBE_ROWS = 1000


@dataclass(frozen=True)
class Fields:
    question: str
    response: str


def pick_field(
    columns: Sequence[str],
    explicit: str | None,
    names: Sequence[str],
    role: str,
    flag: str,
    source: str | None = None,
    required: bool = True,
) -> str | None:
    """``explicit`` if it is a column, else the first of ``names`` present; else an error
    naming the flag (or None when not ``required``)."""
    cols = list(columns)
    where = f"{source}: " if source else ""
    available = ", ".join(cols) or "(none)"
    if explicit:
        if explicit not in cols:
            raise UsageError(
                f"{where}{role} field {explicit!r} not found; available columns: {available}"
            )
        return explicit
    found = next((n for n in names if n in cols), None)
    if found is None and required:
        raise UsageError(
            f"{where}no {role} column found (looked for {', '.join(names)}); available "
            f"columns: {available}; choose one with {flag}"
        )
    return found


def detect_fields(
    columns: Sequence[str], question: str | None, response: str | None, source: str
) -> Fields:
    """The question and response columns of one input."""
    q = pick_field(columns, question, QUESTION_FIELDS, "question", "--question-field", source)
    names = [n for n in RESPONSE_FIELDS if n != q]
    r = pick_field(columns, response, names, "response", "--response-field", source)
    assert q is not None and r is not None
    if q == r:
        raise UsageError(f"{source}: question and response fields are both {q!r}")
    return Fields(q, r)


def record_columns(records: Sequence[dict[str, Any]], limit: int = FIELDS_PROBE_ROWS) -> list[str]:
    """Column names in first-seen order over the first ``limit`` rows."""
    keys: dict[str, None] = {}
    for rec in records[:limit]:
        keys.update(dict.fromkeys(rec))
    return list(keys)


class InputFields:
    """Fields detected once per input, from the first of its chunks with readable rows.

    Inputs may differ (a directory mixing files that name their columns differently); an
    explicitly named field must exist in every input.
    """

    def __init__(self, question: str | None, response: str | None) -> None:
        self.question = question
        self.response = response
        self.by_input: dict[str, Fields] = {}

    def fields_for(self, ref: Any) -> Fields | None:
        """The fields of ``ref``'s input (None while none of its rows could be read)."""
        name = ref.spec.name
        if name not in self.by_input:
            columns = ref.columns()
            if columns is None:
                return None
            self.by_input[name] = detect_fields(columns, self.question, self.response, name)
        return self.by_input[name]

    def named(self) -> tuple[str, str]:
        """The question and response fields used, for the output's metadata."""
        qs = dict.fromkeys(f.question for f in self.by_input.values())
        rs = dict.fromkeys(f.response for f in self.by_input.values())
        return ",".join(qs), ",".join(rs)
