"""Input rows as Arrow tables that give every value back exactly, next to the output columns.

A column whose values Arrow holds exactly is stored natively: strings, booleans, 64-bit
integers, floats, lists of such values, and objects that all have the same keys in the
same order. Anything else (an empty object ``{}``, an integer beyond 64 bits, a column
mixing integers and floats or objects with different keys) is stored as JSON text, one
JSON document per value, and the column is named in the schema metadata under
``codescaler.json_columns``. JSON Lines output decodes those columns, so a JSONL input
comes back value for value and type for type; Parquet keeps them as text.

Chunks are typed on their own; the final merge (io/checkpoint.py) gives a column that
differs between chunks the JSON-text form in every chunk, so no input can make the merge
impossible.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .provenance import (
    EXTRACT_COLUMNS,
    OUTPUT_COLUMNS,
    SCORE_COLUMNS,
    Provenance,
    kept_name,
    provenance_of,
    user_row,
)

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["EXTRACT_COLUMNS", "OUTPUT_COLUMNS", "SCORE_COLUMNS"]

JSON_COLUMNS_KEY = "codescaler.json_columns"
_INT64 = (-(2**63), 2**63)


def json_default(value: Any) -> Any:
    """JSON for values of Arrow types JSON lacks (bytes, dates)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def to_json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=json_default)


class _NotJson(Exception):
    """A value of another Python type than JSON's (rows read from Arrow sources)."""


def lossless_type(values: Sequence[Any]) -> pa.DataType | None:
    """The Arrow type that holds ``values`` exactly, or None (keep them as JSON text).

    Raises ``_NotJson`` for values that are not JSON types (left to Arrow's inference).
    """
    import pyarrow as pa

    present = [v for v in values if v is not None]
    if not present:
        return pa.null()
    kind = type(present[0])
    if any(type(v) is not kind for v in present):  # bool is not int, int is not float
        return None
    if kind is str:
        return pa.string()
    if kind is bool:
        return pa.bool_()
    if kind is int:
        lo, hi = _INT64
        return pa.int64() if all(lo <= v < hi for v in present) else None
    if kind is float:
        return pa.float64()
    if kind is list:
        child = lossless_type([x for v in present for x in v])
        return None if child is None else pa.list_(child)
    if kind is dict:
        keys = list(present[0])
        if not keys or any(list(v) != keys for v in present):  # {} cannot be a Parquet struct
            return None
        fields = []
        for k in keys:
            t = lossless_type([v[k] for v in present])
            if t is None:
                return None
            fields.append(pa.field(k, t))
        return pa.struct(fields)
    raise _NotJson(kind.__name__)


def _column(values: list[Any]) -> tuple[pa.Array, bool]:
    """(array, stored as JSON text) for one column's values."""
    import pyarrow as pa

    try:
        kind = lossless_type(values)
    except _NotJson:
        try:
            return pa.array(values), False  # dates, bytes, decimals...: Arrow's own types
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            kind = None
    if kind is not None:
        try:
            return pa.array(values, type=kind), False
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            pass
    return pa.array([to_json_text(v) for v in values], pa.string()), True


def records_to_table(records: list[dict[str, Any]], schema: pa.Schema | None = None) -> pa.Table:
    """Arrow table of the input rows, every value kept exactly (module docstring).

    ``schema``: the rows' own Arrow schema (Parquet and dataset inputs), used as is.
    """
    import pyarrow as pa

    if schema is not None:
        try:
            table = pa.Table.from_pylist(records, schema=schema.remove_metadata())
            return with_json_columns(table, json_columns(schema))  # e.g. an earlier output's
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
    names: dict[str, None] = {}
    for rec in records:
        names.update(dict.fromkeys(rec))
    arrays, as_json = [], []
    for name in names:
        array, is_json = _column([rec.get(name) for rec in records])
        arrays.append(array)
        if is_json:
            as_json.append(name)
    table = pa.Table.from_arrays(arrays, names=list(names)) if names else pa.table({})
    return with_json_columns(table, as_json)


def json_columns(schema: pa.Schema) -> list[str]:
    """The columns of ``schema`` stored as JSON text."""
    raw = (schema.metadata or {}).get(JSON_COLUMNS_KEY.encode())
    return json.loads(raw) if raw else []


def with_json_columns(table: pa.Table, names: Iterable[str]) -> pa.Table:
    """``table`` with ``names`` recorded as its JSON-text columns (replacing any record)."""
    meta = {
        k: v for k, v in (table.schema.metadata or {}).items() if k != JSON_COLUMNS_KEY.encode()
    }
    names = [n for n in names if n in table.column_names]
    if names:
        meta[JSON_COLUMNS_KEY.encode()] = json.dumps(names).encode()
    return table.replace_schema_metadata(meta or None)


def decoded_rows(rows: Iterable[dict[str, Any]], names: Sequence[str]) -> Iterable[dict[str, Any]]:
    """Rows with their JSON-text columns turned back into the values they hold."""
    if not names:
        yield from rows
        return
    for row in rows:
        for name in names:
            if row.get(name) is not None:
                row[name] = json.loads(row[name])
        yield row


def unify_parts(schemas: list[pa.Schema]) -> pa.Schema:
    """One schema for every part: columns in first-seen order; a column whose type differs
    between parts (beyond nulls: an all-null column, an empty list) becomes JSON text in
    all of them, so no value changes (an object never gains another chunk's keys)."""
    import pyarrow as pa

    types: dict[str, list[pa.DataType]] = {}
    as_json: set[str] = set()
    for s in schemas:
        as_json.update(json_columns(s))
        for f in s:
            types.setdefault(f.name, []).append(f.type)
    fields = []
    for name, kinds in types.items():
        if name not in as_json:
            kind = kinds[0]
            for other in kinds[1:]:
                kind = _with_nulls_filled(kind, other)
                if kind is None:
                    break
            if kind is not None:
                fields.append(pa.field(name, kind))
                continue
            as_json.add(name)
        fields.append(pa.field(name, pa.string()))
    meta = {JSON_COLUMNS_KEY: json.dumps([n for n in types if n in as_json])} if as_json else None
    return pa.schema(fields, metadata=meta)


def _with_nulls_filled(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The type holding both ``a`` and ``b`` exactly, when they differ only where one has
    nothing but nulls (an all-null column, an empty list); None otherwise."""
    import pyarrow as pa

    if a == b or pa.types.is_null(b):
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_list(a) and pa.types.is_list(b):
        item = _with_nulls_filled(a.value_type, b.value_type)
        return None if item is None else pa.list_(pa.field(a.value_field.name, item))
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        if [f.name for f in a] != [f.name for f in b]:  # other keys: not one object shape
            return None
        fields = []
        for fa, fb in zip(a, b, strict=True):
            kind = _with_nulls_filled(fa.type, fb.type)
            if kind is None:
                return None
            fields.append(pa.field(fa.name, kind))
        return pa.struct(fields)
    return None


def conform(table: pa.Table, schema: pa.Schema, part_json: Iterable[str] | None = None) -> pa.Table:
    """A part in the unified schema: columns reordered, missing ones null, and the values of
    columns that are JSON text there (but native in this part) as JSON text. ``part_json``:
    the part's own JSON-text columns (default: from its metadata)."""
    import pyarrow as pa

    target_json = set(json_columns(schema))
    part_json = set(json_columns(table.schema) if part_json is None else part_json)
    cols = []
    for f in schema:
        if f.name not in table.column_names:
            cols.append(pa.nulls(table.num_rows, f.type))
            continue
        col = table.column(f.name)
        if f.name in target_json and f.name not in part_json:
            col = pa.array([to_json_text(v) for v in col.to_pylist()], pa.string())
        elif col.type != f.type:
            col = col.cast(f.type)  # an all-null column, or list<null> and the like
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=schema)


def input_table(
    records: list[dict[str, Any]],
    schema: pa.Schema | None = None,
    replaces: Callable[[Provenance], bool] | None = None,
) -> tuple[pa.Table, list[Provenance | None]]:
    """The user's part of each row (provenance.py: codescaler's own columns left out of its
    rows, the user's names escaped in the others) and each row's provenance.

    ``replaces``: which codescaler rows the task writes every listed column of again
    (default: all). Any other codescaler row is kept whole, as the user's data (every
    name escaped), so no value it holds is dropped."""
    provs = [provenance_of(r) for r in records]
    if replaces is not None:
        provs = [p if p is not None and replaces(p) else None for p in provs]
    rows = [user_row(r, p) for r, p in zip(records, provs, strict=True)]
    return records_to_table(rows, _user_schema(schema, provs, records)), provs


def _user_schema(
    schema: pa.Schema | None, provs: list[Provenance | None], records: list[dict[str, Any]]
) -> pa.Schema | None:
    """``schema`` renamed as :func:`input_table` renames its rows (None: rows of two kinds,
    or codescaler rows that list different columns; types are then inferred exactly)."""
    import pyarrow as pa

    if schema is None or not records:
        return schema
    kinds = {tuple(p.columns) if p is not None else None for p in provs}
    if len(kinds) != 1:
        return None
    prov = provs[0]
    renamed = {n: kept_name(n, prov) for n in schema.names}
    fields = [pa.field(new, schema.field(n).type) for n, new in renamed.items() if new]
    json_cols = [renamed[n] for n in json_columns(schema) if renamed.get(n)]
    meta = {JSON_COLUMNS_KEY: json.dumps(json_cols)} if json_cols else None
    return pa.schema(fields, metadata=meta)
