"""Input rows as Arrow tables, next to the output columns."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

EXTRACT_COLUMNS = ("code", "code_valid", "extract_method", "n_code_blocks")
SCORE_COLUMNS = ("score", "reward", "n_tokens", "truncated")
OUTPUT_COLUMNS = EXTRACT_COLUMNS + SCORE_COLUMNS


def records_to_table(records: list[dict[str, Any]], schema: pa.Schema | None = None) -> pa.Table:
    """Arrow table of the input rows; columns whose JSON types vary by row become JSON text
    (nothing is dropped) instead of failing the run."""
    import pyarrow as pa

    if schema is not None:
        try:
            return pa.Table.from_pylist(records, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
    try:
        return pa.Table.from_pylist(records)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    names: list[str] = []
    for rec in records:
        for k in rec:
            if k not in names:
                names.append(k)
    cols = {}
    for name in names:
        values = [rec.get(name) for rec in records]
        try:
            cols[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            cols[name] = pa.array(
                [
                    v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False)
                    for v in values
                ],
                type=pa.string(),
            )
    return pa.table(cols) if cols else pa.table({})


def input_table(records: list[dict[str, Any]], replace_outputs: bool) -> pa.Table:
    """Input columns that collide with output columns are kept as ``input_<name>``,
    unless the rows are a previous codescaler output being re-scored."""
    table = records_to_table(records)
    names = table.column_names
    collisions = [c for c in names if c in OUTPUT_COLUMNS]
    if not collisions:
        return table
    if replace_outputs:
        return table.drop_columns(collisions)
    return table.rename_columns([f"input_{c}" if c in OUTPUT_COLUMNS else c for c in names])


def looks_scored(columns: Sequence[str]) -> bool:
    """Rows that already carry codescaler's scores."""
    return all(c in columns for c in ("score", "reward", "code_valid"))
