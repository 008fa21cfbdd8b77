"""Python API for notebooks and RL loops: score records in memory."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .io import Chunk
from .model import DEFAULT_MAX_LENGTH, ModelOptions, RewardModel, default_model, load_reward_model
from .pipeline import PipelineOptions, first_fields, process_chunk
from .scoring import Scorer, ScoringOptions

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
    opts = ModelOptions(
        model=model or default_model(),
        revision=revision,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        allow_pickle_weights=allow_pickle_weights,
    )
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

    as_table = isinstance(records, pa.Table)
    rows = records.to_pylist() if as_table else list(records)
    if not rows:
        return records if as_table else []
    rm = (
        model
        if isinstance(model, RewardModel)
        else load_model(model, revision=revision, device=device, dtype=dtype)
    )
    popts = PipelineOptions(
        question_field=question_field,
        response_field=response_field,
        extract_mode=extract,
        shaping=shaping,
        max_length=max_length,
    )
    chunk = Chunk(0, rows, [f"record {i}" for i in range(len(rows))])
    fields = first_fields(chunk, popts, "records")
    scorer = Scorer(
        rm,
        ScoringOptions(
            max_length=max_length,
            max_tokens_per_batch=max_tokens_per_batch,
            dedup=dedup,
            prefix_reuse=prefix_reuse,
            streams=streams,
        ),
    )
    result = process_chunk(chunk, fields, popts, scorer, on_bad_row=on_bad_row)
    return result.table if as_table else result.table.to_pylist()
