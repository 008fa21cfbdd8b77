"""Python API for notebooks and RL loops: score and rerank records in memory.

A thin layer over the same run and tasks as the command line: the records go to a
temporary Parquet file (every key of every row, with its type), through the loop or the
task, and come back. Rows, columns, types, provenance and checks are those of the CLI,
and so is the persistent score cache (on unless ``no_cache=True``; docs/cache.md): an RL
loop that sees a completion again gets its stored score without a forward pass.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import (
    CacheOptions,
    ExtractMode,
    ModelOptions,
    OnBadRow,
    RankBy,
    RerankOptions,
    RowOptions,
    RunOptions,
    ScoringOptions,
    Shaping,
    default_model,
)
from .errors import CodescalerError, InputError, UsageError
from .io.inputs import InputSpec
from .model.reward_model import RewardModel

if TYPE_CHECKING:
    import pyarrow as pa

    from .model.lazy import LazyRewardModel

_MODELS: dict[ModelOptions, RewardModel] = {}
# Models used with the score cache, loaded on first need (a call whose rows all hit loads
# nothing), then kept for the process like _MODELS.
_LAZY: dict[ModelOptions, LazyRewardModel] = {}


def load_model(
    model: str | None = None,
    *,
    revision: str | None = ModelOptions.revision,
    device: str = ModelOptions.device,
    dtype: str = ModelOptions.dtype,
    trust_remote_code: bool = ModelOptions.trust_remote_code,
    allow_pickle_weights: bool = ModelOptions.allow_pickle_weights,
    cache: bool = True,
) -> RewardModel:
    """Load (once per process, unless ``cache=False``) a reward model for scoring."""
    from .model.load import load_reward_model

    opts = ModelOptions(
        model=model or default_model(),
        revision=revision,
        device=device,
        dtype=dtype,  # type: ignore[arg-type]
        trust_remote_code=trust_remote_code,
        allow_pickle_weights=allow_pickle_weights,
    )
    opts.validate()
    if cache and opts in _MODELS:
        return _MODELS[opts]
    lazy = _LAZY.get(opts)
    rm = lazy.loaded if lazy is not None and cache else None
    rm = rm or load_reward_model(opts)
    if cache:
        _MODELS[opts] = rm
    return rm


@dataclass(frozen=True)
class Rejected:
    """An input row that was not scored (``on_bad_row="skip"``): its index and why."""

    index: int
    reason: str


class ScoredRows(list):
    """The scored rows (a list of dicts), and ``rejected``: the rows left out."""

    rejected: list[Rejected]


def score_records(
    records: Iterable[dict[str, Any]] | pa.Table,
    model: str | RewardModel | None = None,
    *,
    question_field: str | None = RowOptions.question_field,
    response_field: str | None = RowOptions.response_field,
    extract: str = RowOptions.extract,
    shaping: str = RowOptions.shaping,
    max_length: int = ScoringOptions.max_length,
    max_tokens_per_batch: int | None = ScoringOptions.max_tokens_per_batch,
    dedup: bool = ScoringOptions.dedup,
    prefix_reuse: bool = ScoringOptions.prefix_reuse,
    streams: int | None = ScoringOptions.streams,
    revision: str | None = ModelOptions.revision,
    device: str = ModelOptions.device,
    dtype: str = ModelOptions.dtype,
    on_bad_row: str = RunOptions.on_bad_row,
    cache_dir: str | None = CacheOptions.cache_dir,
    no_cache: bool = not CacheOptions.enabled,
) -> list[dict[str, Any]] | pa.Table:
    """Score candidates; returns the input rows with the ``score`` output columns added.

    ``records`` is a list of dicts (a list of dicts comes back) or a ``pyarrow.Table``
    (a table comes back). ``model`` is a hub id, a local directory, or a model from
    :func:`load_model`. Rows and scores are exactly those of ``codescaler score``.

    A bad row raises :class:`~codescaler_cli.errors.InputError` naming ``record N``; with
    ``on_bad_row="skip"`` it is left out and listed, with its index and reason, in the
    result's ``rejected`` (a list) or in the table's ``codescaler.rejected`` metadata.

    Scores are looked up in the persistent score cache first (``cache_dir``, default as
    for the CLI) and new ones stored; ``no_cache=True`` neither looks up nor stores.
    """
    import pyarrow as pa

    rows_opts = RowOptions(
        question_field=question_field,
        response_field=response_field,
        extract=ExtractMode(extract),
        shaping=Shaping(shaping),
    )
    scoring = ScoringOptions(
        max_length=max_length,
        max_tokens_per_batch=max_tokens_per_batch,
        dedup=dedup,
        prefix_reuse=prefix_reuse,
        streams=streams,
    )
    model_opts = ModelOptions(
        model=model if isinstance(model, str) else default_model(),
        revision=revision,
        device=device,
        dtype=dtype,  # type: ignore[arg-type]
    )
    cache = _cache_options(cache_dir, no_cache)
    as_table = isinstance(records, pa.Table)
    with tempfile.TemporaryDirectory(prefix="codescaler-api-") as tmp:
        spec = _as_input(records, tmp)
        if spec is None:
            return records if as_table else ScoredRows()
        out = os.path.join(tmp, "scored.parquet")
        opts = RunOptions(
            out, rows_opts, model_opts, scoring, on_bad_row=OnBadRow(on_bad_row), cache=cache
        )
        opts.validate()
        rm: RewardModel | LazyRewardModel | None = model if isinstance(model, RewardModel) else None
        if rm is None and cache.enabled:
            rm = _MODELS.get(model_opts) or _lazy_model(model_opts)
        elif rm is None:
            rm = load_model(model, revision=revision, device=device, dtype=dtype)
        from .engines.local import LocalEngine
        from .engines.loop import run

        summary = _in_records(spec.path, lambda: run([spec], opts, LocalEngine(opts, rm)))
        rejected = _rejected(summary.rejected_path, spec.path)
        return _result(out, as_table, rejected)


def _cache_options(cache_dir: str | None, no_cache: bool) -> CacheOptions:
    if no_cache and cache_dir is not None:
        raise UsageError("no_cache=True and cache_dir cannot be used together")
    return CacheOptions(enabled=not no_cache, cache_dir=cache_dir)


def _lazy_model(opts: ModelOptions) -> LazyRewardModel:
    """The process's model of ``opts``, loaded on first need (kept like load_model's)."""
    from .model.lazy import LazyRewardModel

    if opts not in _LAZY:
        opts.validate()
        _LAZY[opts] = LazyRewardModel(opts)
    return _LAZY[opts]


def _as_input(records: Iterable[dict[str, Any]] | pa.Table, tmp: str) -> InputSpec | None:
    """The records as a file in ``tmp`` (None: no records): a table as Parquet (its own
    types), dicts as JSON Lines (every key of every row, read back value for value)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(records, pa.Table):
        if records.num_rows == 0:
            return None
        path = os.path.join(tmp, "records.parquet")
        pq.write_table(records, path)
        return InputSpec("parquet", path)
    from .io.writers import dumps_row

    path = os.path.join(tmp, "records.jsonl")
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for row in records:
            if not isinstance(row, dict):
                raise InputError(f"record {n}: expected a dict, got {type(row).__name__}")
            fh.write(dumps_row(row) + "\n")
            n += 1
    return InputSpec("jsonl", path) if n else None


def _in_records(path: str, call: Any) -> Any:
    """``call()``, with its messages naming ``record N`` instead of the temporary file."""
    try:
        return call()
    except CodescalerError as exc:
        text = _LOCATION.sub(lambda m: f"record {_index(m.group(0))}", str(exc).replace(path, "@"))
        raise (InputError if isinstance(exc, InputError) else type(exc))(text) from None


_LOCATION = re.compile(r"@(:\d+| row \d+)")


def _index(location: str) -> int:
    """The record index of a location in the temporary input (``:N`` lines are 1-based)."""
    number = int(re.findall(r"\d+", location)[-1])
    return number - 1 if ":" in location else number


def _rejected(path: str | None, source: str) -> list[Rejected]:
    import json

    if not path or not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            out.append(Rejected(_index(row["location"].replace(source, "@")), row["reason"]))
    return out


def _result(path: str, as_table: bool, rejected: list[Rejected] | None) -> Any:
    import json

    import pyarrow.parquet as pq

    from .io.writers import table_rows

    table = pq.read_table(path)
    if as_table:
        if rejected is None:
            return table
        meta = {**(table.schema.metadata or {})}
        meta[b"codescaler.rejected"] = json.dumps([vars(r) for r in rejected]).encode()
        return table.replace_schema_metadata(meta)
    rows = ScoredRows(table_rows(table))
    rows.rejected = rejected or []
    return rows


def rerank(
    records: Sequence[dict[str, Any]] | pa.Table,
    model: str | RewardModel | None = None,
    *,
    top_k: int = RerankOptions.top_k,
    by: str = RerankOptions.by,
    group_field: str | None = RerankOptions.group_field,
    label_field: str | None = RerankOptions.label_field,
    question_field: str | None = RowOptions.question_field,
    response_field: str | None = RowOptions.response_field,
    rescore: bool = RerankOptions.rescore,
    group_as_text: bool = RerankOptions.group_as_text,
    extract: str = RowOptions.extract,
    shaping: str = RowOptions.shaping,
    max_length: int = ScoringOptions.max_length,
    device: str = ModelOptions.device,
    dtype: str = ModelOptions.dtype,
    cache_dir: str | None = CacheOptions.cache_dir,
    no_cache: bool = not CacheOptions.enabled,
) -> list[dict[str, Any]] | pa.Table:
    """Keep the best ``top_k`` candidates per problem (0 keeps all, ranked), as
    ``codescaler rerank`` does: rows scored earlier (their provenance says so) keep their
    scores and need no model; others are scored (with ``model`` when given, else with the
    model that scored the rest), through the score cache as in :func:`score_records`."""
    import pyarrow as pa

    from .tasks.rerank import run_rerank

    as_table = isinstance(records, pa.Table)
    with tempfile.TemporaryDirectory(prefix="codescaler-api-") as tmp:
        spec = _as_input(records, tmp)
        if spec is None:
            return records if as_table else []
        out = os.path.join(tmp, "ranked.parquet")
        rows = RowOptions(
            question_field=question_field,
            response_field=response_field,
            extract=ExtractMode(extract),
            shaping=Shaping(shaping),
        )
        name = model.name if isinstance(model, RewardModel) else model
        model_opts = ModelOptions(model=name or default_model(), device=device, dtype=dtype)  # type: ignore[arg-type]
        opts = RunOptions(
            out,
            rows,
            model_opts,
            ScoringOptions(max_length=max_length),
            cache=_cache_options(cache_dir, no_cache),
        )
        engine = None
        if isinstance(model, RewardModel):
            from .engines.local import LocalEngine

            def engine(o: RunOptions) -> Any:
                return LocalEngine(o, model)

        _in_records(
            spec.path,
            lambda: run_rerank(
                [spec],
                opts,
                top_k=top_k,
                by=RankBy(by),
                group_field=group_field,
                label_field=label_field,
                rescore=rescore,
                group_as_text=group_as_text,
                model_named=model is not None,
                engine=engine,
            ),
        )
        return _result(out, as_table, None)
