"""Which rows codescaler wrote, said explicitly in every row (pure).

Every output row carries a ``codescaler`` column: an object naming the format, the
version, the task, the model that scored it (name, revision, commit, dtype, max length),
the extraction and shaping, the question/response fields and the columns codescaler
added to it. Parquet outputs also carry the same facts for the whole file in the schema
metadata (``codescaler.*``), but only the row's own object decides how a row is read
back, so files of several runs, concatenated JSON Lines and partly scored files are read
row by row, whatever the chunk size.

A row is codescaler's when its ``codescaler`` value is such an object (format
``codescaler/1``). Its listed columns are codescaler's and are replaced when it is
processed again; every other column is the user's. A user's column that is named like a
column codescaler writes (``score``, ``rank``, ``codescaler``...) or like one of those
with ``input_`` prefixes (``input_score``) is kept with one more ``input_`` prefix: a
rule of the name alone, so every row and every chunk renames the same way, and no two
user columns can meet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

PROVENANCE_COLUMN = "codescaler"
FORMAT = "codescaler/1"

EXTRACT_COLUMNS = ("code", "code_valid", "extract_method", "n_code_blocks")
SCORE_COLUMNS = ("score", "reward", "n_tokens", "truncated")
OUTPUT_COLUMNS = EXTRACT_COLUMNS + SCORE_COLUMNS
RANK_COLUMNS = ("rank", "group_size")
PAIR_COLUMNS = (
    "chosen_score",
    "rejected_score",
    "chosen_reward",
    "rejected_reward",
    "chosen_valid",
    "rejected_valid",
    "correct",
)
# Every name any codescaler task writes: a user column so named is renamed, in every task.
RESERVED = frozenset((*OUTPUT_COLUMNS, *RANK_COLUMNS, *PAIR_COLUMNS, PROVENANCE_COLUMN))
INPUT_PREFIX = "input_"


@dataclass(frozen=True)
class Provenance:
    """How one row was made. Model fields are None for extraction-only rows."""

    format: str = FORMAT
    version: str = ""
    task: str = "score"
    model: str | None = None
    revision: str | None = None
    commit: str | None = None
    dtype: str | None = None
    max_length: int | None = None
    extract: str = "auto"
    shaping: str = "softplus"
    question_field: str | None = None
    response_field: str | None = None
    columns: tuple[str, ...] = ()

    @property
    def scored(self) -> bool:
        return self.model is not None and "score" in self.columns

    def scorer(self) -> tuple[Any, ...]:
        """What makes two rows' scores and rewards comparable (equal: same numbers)."""
        return (
            self.model,
            self.revision or None,
            self.commit or None,
            self.dtype,
            self.max_length,
            self.extract,
            self.shaping,
        )

    def describe(self) -> str:
        """The scorer in words, for messages."""
        if not self.scored:
            return "not scored"
        rev = f"@{self.revision}" if self.revision else ""
        return (
            f"{self.model}{rev} ({self.dtype}, max length {self.max_length}, "
            f"extract {self.extract}, shaping {self.shaping})"
        )

    def as_value(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["columns"] = list(self.columns)
        return out

    def with_columns(self, task: str, added: Iterable[str]) -> Provenance:
        """The provenance after ``task`` added ``added`` to the row."""
        cols = dict.fromkeys((*self.columns, *added))
        return replace(self, task=task, columns=tuple(cols))


_FIELDS = {f.name for f in fields(Provenance)}


def parse(value: Any) -> Provenance | None:
    """The row's provenance, or None when ``value`` is not codescaler's object."""
    if isinstance(value, str) and value.startswith("{"):  # stored as JSON text
        import json

        try:
            value = json.loads(value)
        except ValueError:
            return None
    if not isinstance(value, Mapping) or value.get("format") != FORMAT:
        return None
    if not set(value) <= _FIELDS:
        return None
    cols = value.get("columns")
    if not isinstance(cols, (list, tuple)) or not all(isinstance(c, str) for c in cols):
        return None
    try:
        kwargs = {k: v for k, v in value.items() if k != "columns"}
        prov = Provenance(**kwargs, columns=tuple(cols))
    except TypeError:
        return None
    ml = prov.max_length
    if ml is not None and (isinstance(ml, bool) or not isinstance(ml, int)):
        return None
    return prov


def provenance_of(row: Mapping[str, Any]) -> Provenance | None:
    return parse(row.get(PROVENANCE_COLUMN))


def escaped(name: str) -> str:
    """A user's column name as codescaler writes it (see the module docstring)."""
    base = name
    while base.startswith(INPUT_PREFIX):
        base = base[len(INPUT_PREFIX) :]
    return INPUT_PREFIX + name if base in RESERVED else name


def kept_name(name: str, prov: Provenance | None) -> str | None:
    """How a column of a row is written again: None for codescaler's own (listed in the
    row's provenance); a user's name escaped (in a codescaler row the user's names were
    escaped when it was written: only a reserved name added since is escaped now)."""
    if prov is None:
        return escaped(name)
    if name == PROVENANCE_COLUMN or name in prov.columns:
        return None
    return INPUT_PREFIX + name if name in RESERVED else name


def user_row(row: Mapping[str, Any], prov: Provenance | None) -> dict[str, Any]:
    """The user's part of a row (``prov``: its provenance), named as codescaler writes it."""
    out = {}
    for k, v in row.items():
        name = kept_name(k, prov)
        if name is not None:
            out[name] = v
    return out


def provenance_type() -> pa.DataType:
    """The Arrow type of the provenance column (the same in every output)."""
    import pyarrow as pa

    kinds = {"max_length": pa.int64(), "columns": pa.list_(pa.string())}
    return pa.struct([pa.field(f.name, kinds.get(f.name, pa.string())) for f in fields(Provenance)])


def provenance_array(values: list[Provenance]) -> pa.Array:
    import pyarrow as pa

    return pa.array([p.as_value() for p in values], provenance_type())
