"""The one way every path (CLI, Python API, Ray workers, the server) gets a scorer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import CacheOptions, ModelOptions, ScoringOptions

if TYPE_CHECKING:
    from ..cache.store import Notify, ScoreStore
    from ..model.lazy import LazyRewardModel
    from ..model.reward_model import RewardModel
    from ..progress import Progress
    from .scorer import Scorer


def build_scorer(
    model: ModelOptions | RewardModel | LazyRewardModel,
    scoring: ScoringOptions | None = None,
    cache: CacheOptions | ScoreStore | None = None,
    *,
    notify: Notify | None = None,
    progress: Progress | None = None,
) -> Scorer:
    """A :class:`Scorer` over ``model``: from its options, or one already built or loaded.

    With a ``cache`` (options, or a store already open) rows are looked up before any
    work and the model loads in steps, each on first need (model/lazy.py): a run whose
    rows all hit loads no tokenizer, no weights and no torch. Without one, the model
    loads here, every check up front. ``notify``: where the cache's one-line notices go
    (a damaged, read-only or full store); default: ``progress.message`` if given, else a
    :class:`CacheWarning`. ``progress``: shown each loading step (stage, stage_done).
    """
    from ..cache import ModelCache, ScoreStore, open_store
    from ..model.lazy import LazyRewardModel
    from .scorer import Scorer

    scoring = scoring or ScoringOptions()
    scoring.validate()
    if notify is None and progress is not None:
        notify = progress.message
    store = cache if isinstance(cache, ScoreStore) else open_store(cache, notify)
    if isinstance(model, LazyRewardModel):
        rm = model
    elif isinstance(model, ModelOptions):
        model.validate()
        rm = LazyRewardModel(model)
    else:
        rm = LazyRewardModel.of(model)
    if progress is not None:
        rm.on_load, rm.on_loaded = progress.stage, progress.stage_done
    if store is None:
        rm.load()
    model_cache = ModelCache(store, rm, scoring.max_length) if store is not None else None
    if model_cache is not None and model_cache.namespace() is None:
        # Not identifiable before loading (a Hub model not downloaded yet): the tokenizer
        # loads now, so a bad model name fails here as without a cache.
        rm.text()
    return Scorer(rm, scoring, model_cache)
