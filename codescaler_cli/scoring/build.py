"""The one way every path (CLI, Python API, Ray workers, the server) gets a scorer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import ModelOptions, ScoringOptions

if TYPE_CHECKING:
    from ..model.reward_model import RewardModel
    from .scorer import Scorer


def build_scorer(
    model: ModelOptions | RewardModel, scoring: ScoringOptions | None = None
) -> Scorer:
    """A :class:`Scorer` over ``model``: loaded from its options, or one already loaded."""
    from .scorer import Scorer

    if isinstance(model, ModelOptions):
        from ..model.load import load_reward_model

        model = load_reward_model(model)
    return Scorer(model, scoring)
