"""The persistent, content-addressed score cache: never compute the same score twice.

* keys.py: what a score is keyed by (the model by content, dtype, device kind, max
  length, library versions, and the exact model input) and how a stored value is checked;
* digest.py: a model's content digest (whole-file hashes, remembered by stat; a Hub
  snapshot's blob names);
* store.py: the SQLite (WAL) store shared by every process, bounded, least recently used
  first out, tolerant of damage, read-only and full disks (sqlite.py: schema, eviction);
* admin.py: ``codescaler cache info|prune|clear``.

:class:`ModelCache` is the store as one scorer sees it (scoring/scorer.py looks rows up
before planning and stores what it computed). See docs/cache.md.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

from ..config import CacheOptions
from .digest import ModelFiles, model_files
from .keys import Entry, Namespace, library_versions, pair_keys, text_keys
from .store import CacheWarning, Notify, ScoreStore

if TYPE_CHECKING:
    from ..model.lazy import LazyRewardModel

__all__ = ["CacheWarning", "Entry", "ModelCache", "ScoreStore", "open_store"]


def open_store(options: CacheOptions | None, notify: Notify | None = None) -> ScoreStore | None:
    """The store ``options`` name (opened on first use), or None when the cache is off."""
    if options is None or not options.enabled:
        return None
    options.validate()
    return ScoreStore(options.directory(), options.size_limit(), notify)


class ModelCache:
    """The store as one scorer sees it: one model, dtype, device kind and max length."""

    def __init__(self, store: ScoreStore, model: LazyRewardModel, max_length: int) -> None:
        self.store = store
        self.model = model
        self.max_length = max_length
        self.hits = 0  # unique inputs answered from the store
        self.misses = 0
        self.stored = 0
        self._ns: bytes | None = None
        self._fields: dict[str, object] = {}
        self._files: ModelFiles | None = None
        self._tried: set[bool] = set()  # identified before / after the weights loaded
        self._verified = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------ identity

    def namespace(self) -> bytes | None:
        """The namespace digest; None while the model cannot be identified without loading
        it (tried again once it is loaded) or when the store is off."""
        if self._ns is not None or not self.store.readable:
            return self._ns
        loaded = self.model.loaded is not None
        with self._lock:
            if self._ns is not None or loaded in self._tried:
                return self._ns
            self._tried.add(loaded)
            name = self.model.name
            files = model_files(
                name,
                self.model.revision,
                self.store.recall_file,
                self.store.remember_file,
                online=not loaded,
            )
            if files is None:
                return None
            target = self.model.target
            ns = Namespace(
                model_digest=files.digest,
                dtype=target.dtype,
                device=target.device_type,
                attn=target.attn,
                compiled=target.compiled,
                max_length=self.max_length,
                libraries=library_versions(),
            )
            self._files = files
            self._verified = loaded  # a model loaded before it was identified: as is
            self._fields = {
                "model": os.path.abspath(name) if os.path.isdir(name) else name,
                "revision": self.model.revision,
                **asdict(ns),
            }
            self._ns = ns.digest()
        return self._ns

    def _detail(self) -> dict[str, object]:
        found = self.store.namespace_detail(self._ns) if self._ns is not None else None
        try:
            return json.loads(found) if found else {}
        except ValueError:
            return {}

    def max_token_chars(self) -> int | None:
        """The tokenizer's longest token in characters, remembered from an earlier run (so
        a run answered from the store does not load the tokenizer to bound responses)."""
        if self.namespace() is None:
            return None
        value = self._detail().get("max_token_chars")
        return value if isinstance(value, int) and value > 0 else None

    def remember_max_token_chars(self, value: int) -> None:
        if self._namespace_id() is not None and self.max_token_chars() != value:
            detail = {**self._detail(), "max_token_chars": value}
            self.store.set_namespace_detail(self._ns, json.dumps(detail))  # type: ignore[arg-type]

    def _namespace_id(self) -> int | None:
        if self.namespace() is None:
            return None
        detail = json.dumps({"namespace": self._fields})
        return self.store.namespace_id(self._ns, self._fields, detail)  # type: ignore[arg-type]

    # ------------------------------------------------------------ lookups and writes

    def pair_keys(self, questions: Sequence[str], codes: Sequence[str]) -> list[bytes] | None:
        ns = self.namespace()
        return pair_keys(ns, questions, codes) if ns is not None else None

    def text_keys(self, texts: Sequence[str]) -> list[bytes] | None:
        ns = self.namespace()
        return text_keys(ns, texts) if ns is not None else None

    def get(self, keys: Sequence[bytes]) -> list[Entry | None]:
        found = self.store.get(keys)
        hits = sum(e is not None for e in found)
        with self._lock:
            self.hits += hits
            self.misses += len(found) - hits
        return found

    def put(self, items: Sequence[tuple[bytes, Entry]]) -> None:
        """Store results this process computed."""
        if not items or not self.store.writable or not self._still_same_files():
            return
        ns_id = self._namespace_id()
        if ns_id is None:
            return
        n = self.store.put(ns_id, items)
        with self._lock:
            self.stored += n

    def _still_same_files(self) -> bool:
        """Once the weights are loaded: were the files hashed the files loaded? (A model
        replaced in between must not store its scores under the old digest.)"""
        if self._verified or self._files is None:
            return True
        if self.model.loaded is None:
            return True  # nothing computed yet
        if not self._files.unchanged():
            self.store.tell(
                "changed",
                f"model files in {self._files.root} changed while loading; scores of this run "
                "are not stored",
            )
            self.store.writable = False
            return False
        self._verified = True
        return True
