"""One streaming pass over a task's input before any scoring: the columns there are, which
rows were scored and by what (from each row's provenance), and the first bad group or label
value of every candidate column, so a wrong option fails before hours of model time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO, Any

from ..errors import InputError
from ..io.inputs import InputSpec
from ..io.readers import iter_chunks
from ..provenance import Provenance, kept_name, provenance_of, user_row
from ..rank import parse_label


@dataclass
class ScoredBy:
    """Rows scored by one scorer (Provenance.scorer())."""

    provenance: Provenance
    rows: int = 0
    files: dict[str, None] = field(default_factory=dict)


@dataclass
class Survey:
    rows: int = 0
    columns: dict[str, None] = field(default_factory=dict)  # user columns, as written out
    scored_by: dict[tuple[Any, ...], ScoredBy] = field(default_factory=dict)
    unscored: int = 0
    unscored_files: dict[str, None] = field(default_factory=dict)
    bad_group: dict[str, tuple[str, str]] = field(default_factory=dict)  # column -> (where, what)
    bad_label: dict[str, InputError] = field(default_factory=dict)
    labelled: dict[str, None] = field(default_factory=dict)  # columns with a non-null label

    def column(self, name: str | None) -> str | None:
        """A column the user names, as it is written out (their names may be escaped)."""
        if name is None or name in self.columns:
            return name
        return kept_name(name, None)

    def check_group(self, column: str) -> None:
        if column in self.bad_group:
            where, what = self.bad_group[column]
            raise InputError(f"{where}: group field {column!r} {what}")

    def check_label(self, column: str) -> None:
        if column in self.bad_label:
            raise self.bad_label[column]


def survey(
    specs: list[InputSpec],
    chunk_size: int,
    stdin: IO[bytes] | None,
    group_columns: list[str],
    label_columns: list[str],
) -> Survey:
    """Read every row once (chunk by chunk); unreadable rows are an error here."""
    s = Survey()
    for chunk in iter_chunks(specs, chunk_size, stdin=stdin):
        if chunk.bad:
            b = chunk.bad[0]
            raise InputError(f"{b.location}: {b.reason}")
        for rec, where in zip(chunk.records, chunk.locations, strict=True):
            s.rows += 1
            prov = provenance_of(rec)
            row = user_row(rec, prov)
            s.columns.update(dict.fromkeys(row))
            source = where.rsplit(":", 1)[0].split(" row ")[0]
            if prov is not None and prov.scored:
                by = s.scored_by.setdefault(prov.scorer(), ScoredBy(prov))
                by.rows += 1
                by.files[source] = None
            else:
                s.unscored += 1
                s.unscored_files[source] = None
            for name in group_columns:
                if name in row and name not in s.bad_group:
                    what = _bad_group(row[name])
                    if what:
                        s.bad_group[name] = (where, what)
            for name in label_columns:
                value = row.get(name)
                if value is None or name in s.bad_label:
                    continue
                try:
                    if parse_label(value, f"{where}: field {name!r}") is not None:
                        s.labelled[name] = None
                except InputError as exc:
                    s.bad_label[name] = exc
    if not s.rows:
        raise InputError(f"{specs[0].name}: input has no rows")
    return s


def _bad_group(value: Any) -> str | None:
    if value is None:
        return "is null; fill it or choose --group-field"
    if isinstance(value, (list, dict)):
        return (
            f"holds a {type(value).__name__}, not an id; choose a column of ids or text "
            "with --group-field"
        )
    return None
