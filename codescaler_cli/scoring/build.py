"""The one way every path (CLI, Python API, Ray workers, the server) gets a scorer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import CacheOptions, ModelOptions, ScoringOptions

if TYPE_CHECKING:
    from ..cache.store import Notify, ScoreStore
    from ..model.reward_model import RewardModel
    from .scorer import Scorer


def build_scorer(
    model: ModelOptions | RewardModel,
    scoring: ScoringOptions | None = None,
    cache: CacheOptions | ScoreStore | None = None,
    *,
    notify: Notify | None = None,
) -> Scorer:
    """A :class:`Scorer` over ``model``: from its options, or one already loaded.

    With a ``cache`` (options, or a store already open) rows are looked up before any
    work and the model loads in steps, each on first need (model/lazy.py): a run whose
    rows all hit loads no tokenizer, no weights and no torch. Without one, the model
    loads here, every check up front. ``notify``: where the cache's one-line notices go
    (a damaged, read-only or full store); default: a :class:`CacheWarning`.
    """
    from ..cache import ModelCache, ScoreStore, open_store
    from ..model.lazy import LazyRewardModel
    from .scorer import Scorer

    scoring = scoring or ScoringOptions()
    scoring.validate()
    store = cache if isinstance(cache, ScoreStore) else open_store(cache, notify)
    if not isinstance(model, ModelOptions):
        rm = LazyRewardModel.of(model)
    else:
        model.validate()
        rm = LazyRewardModel(model)
        if store is None:
            rm.load()
    model_cache = ModelCache(store, rm, scoring.max_length) if store is not None else None
    if model_cache is not None and model_cache.namespace() is None:
        # Not identifiable before loading (a Hub model not downloaded yet): the tokenizer
        # loads now, so a bad model name fails here as without a cache.
        rm.text()
    return Scorer(rm, scoring, model_cache)
