"""Python API for notebooks and RL loops: score and rerank records in memory."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .config import (
    DEFAULT_MAX_LENGTH,
    ExtractMode,
    ModelOptions,
    OnBadRow,
    RankBy,
    RowOptions,
    ScoringOptions,
    Shaping,
    default_model,
)
from .fields import GROUP_FIELDS, QUESTION_FIELDS, detect_fields, pick_field, record_columns
from .io.readers import Chunk
from .model.reward_model import RewardModel
from .rank import rank_table
from .scoring.build import build_scorer
from .stages import process_chunk
from .tables import looks_scored

if TYPE_CHECKING:
    import pyarrow as pa

_MODELS: dict[ModelOptions, RewardModel] = {}


def load_model(
    model: str | None = None,
    *,
    revision: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    allow_pickle_weights: bool = False,
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
    rm = load_reward_model(opts)
    if cache:
        _MODELS[opts] = rm
    return rm


def score_records(
    records: Iterable[dict[str, Any]] | pa.Table,
    model: str | RewardModel | None = None,
    *,
    question_field: str | None = None,
    response_field: str | None = None,
    extract: str = "auto",
    shaping: str = "softplus",
    max_length: int = DEFAULT_MAX_LENGTH,
    max_tokens_per_batch: int | None = None,
    dedup: bool = True,
    prefix_reuse: bool = True,
    streams: int | None = None,
    revision: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    on_bad_row: str = "error",
) -> list[dict[str, Any]] | pa.Table:
    """Score candidates; returns the input rows with the ``score`` output columns added.

    ``records`` is a list of dicts (a list of dicts comes back) or a ``pyarrow.Table``
    (a table comes back). ``model`` is a hub id, a local directory, or a model from
    :func:`load_model`. Scores are exactly those of ``codescaler score``. On a CPU the
    passes run in ``streams`` threads (default: 2 when torch has 2+ threads), each with a
    share of torch's threads; torch's thread count is restored when the call returns.
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
    scoring.validate()
    bad_rows = OnBadRow(on_bad_row)
    as_table = isinstance(records, pa.Table)
    rows = records.to_pylist() if as_table else list(records)
    if not rows:
        return records if as_table else []
    rm = (
        model
        if isinstance(model, RewardModel)
        else load_model(model, revision=revision, device=device, dtype=dtype)
    )
    chunk = Chunk(0, rows, [f"record {i}" for i in range(len(rows))])
    fields = detect_fields(record_columns(rows), question_field, response_field, "records")
    result = process_chunk(chunk, fields, rows_opts, build_scorer(rm, scoring), bad_rows)
    return result.table if as_table else result.table.to_pylist()


def rerank(
    records: Sequence[dict[str, Any]] | pa.Table,
    *,
    top_k: int = 1,
    by: str = "reward",
    group_field: str | None = None,
    question_field: str | None = None,
    model: Any = None,
    rescore: bool = False,
    **score_kwargs: Any,
) -> list[dict[str, Any]] | pa.Table:
    """Keep the best ``top_k`` candidates per problem (0 keeps all, ranked).

    Rows that already carry ``score``/``reward``/``code_valid`` (output of ``score``) are
    ranked as they are, without loading a model, unless ``rescore`` is set.
    """
    import pyarrow as pa

    as_table = isinstance(records, pa.Table)
    table = records if as_table else pa.Table.from_pylist(list(records))
    if table.num_rows == 0:
        return records
    if rescore or not looks_scored(table.column_names):
        table = score_records(table, model, question_field=question_field, **score_kwargs)
    cols = table.column_names
    gcol = pick_field(cols, group_field, GROUP_FIELDS, "group", "--group-field", None, False)
    if gcol is None:  # no id column: the question text names the group
        gcol = pick_field(cols, question_field, QUESTION_FIELDS, "question", "question_field")
    out, _ = rank_table(table, gcol, top_k, RankBy(by))
    return out if as_table else out.to_pylist()
