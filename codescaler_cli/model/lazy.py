"""A reward model that loads in steps, each on first need: nothing, then the tokenizer, then
the weights. A run answered from the score cache needs neither (nor torch); one whose
misses all fit needs the tokenizer only to tokenize them, and the weights at the first
forward pass.

It stands in for a :class:`RewardModel` everywhere: what is known without loading (name,
device, dtype, counters) is answered at once, the tokenizer's methods load the tokenizer,
and anything else loads the weights.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..config import ModelOptions
from .load import ModelText, Target, load_text, load_weights, model_commit, resolve_target

if TYPE_CHECKING:
    from .reward_model import RewardModel


class LazyRewardModel:
    """A :class:`RewardModel` loaded on first need (thread-safe)."""

    def __init__(self, options: ModelOptions, target: Target | None = None) -> None:
        self.options = options
        self.name = options.model
        self.revision = options.revision
        self.target = target or resolve_target(options)
        self.on_load: Callable[[str], None] | None = None  # told before a slow load ...
        self.on_loaded: Callable[[], None] | None = None  # ... and after it
        self._text: ModelText | None = None
        self._rm: RewardModel | None = None
        self._commit: str | None = None
        self._lock = threading.RLock()

    @classmethod
    def of(cls, rm: RewardModel) -> LazyRewardModel:
        """An already loaded model."""
        from .load import dtype_name

        attn = getattr(rm.model.config, "_attn_implementation", None) or "sdpa"
        target = Target(str(rm.device), dtype_name(rm.dtype), str(attn), rm.compiled)
        self = cls(ModelOptions(model=rm.name, revision=rm.revision), target)
        self._rm = rm
        return self

    # ------------------------------------------------------------ loading

    @property
    def loaded(self) -> RewardModel | None:
        """The weights, if they are loaded (loads nothing)."""
        return self._rm

    @property
    def text_loaded(self) -> bool:
        return self._text is not None or self._rm is not None

    def text(self) -> ModelText | RewardModel:
        """The tokenizer (loaded if needed)."""
        if self._rm is not None:
            return self._rm
        with self._lock:
            if self._text is None:
                if self.on_load:
                    self.on_load(f"loading tokenizer of {self.name}")
                self._text = load_text(self.options)
                if self.on_loaded:
                    self.on_loaded()
            return self._text

    def load(self) -> RewardModel:
        """The weights (loaded if needed)."""
        if self._rm is not None:
            return self._rm
        with self._lock:
            if self._rm is None:
                text = self.text()
                if self.on_load:
                    self.on_load(f"loading model {self.name}")
                assert isinstance(text, ModelText)
                self._rm = load_weights(self.options, text, self.target)
                self._text = None
                if self.on_loaded:
                    self.on_loaded()
            return self._rm

    # ------------------------------------------------------------ known without loading

    @property
    def device(self) -> Any:
        """``torch.device`` once loaded; before, its name (``str()`` of either is the same)."""
        return self._rm.device if self._rm is not None else self.target.device

    @property
    def device_type(self) -> str:
        return self.target.device_type

    @property
    def dtype(self) -> Any:
        """``torch.dtype`` once loaded; before, its name (``dtype_name`` of either is the same)."""
        return self._rm.dtype if self._rm is not None else self.target.dtype

    @property
    def commit(self) -> str | None:
        if self._rm is not None:
            return self._rm.commit
        if self._commit is None:
            self._commit = model_commit(self.name, self.revision) or ""
        return self._commit or None

    @property
    def forward_calls(self) -> int:
        return self._rm.forward_calls if self._rm is not None else 0

    @property
    def forward_tokens(self) -> int:
        return self._rm.forward_tokens if self._rm is not None else 0

    # ------------------------------------------------------------ the tokenizer's

    @property
    def tokenizer(self) -> Any:
        return self.text().tokenizer

    def render(self, question: str, code: str) -> str:
        return self.text().render(question, code)

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.text().encode(texts)

    # ------------------------------------------------------------ everything else: weights

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not found among the above: never load for these
            raise AttributeError(name)
        return getattr(self.load(), name)
