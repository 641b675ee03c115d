"""Caches for model calls: `repo.cache(name)` -> the `CacheStore` of cache/<name>_cache.db.

Two names are conventional: ``"embedding"`` (embedding vectors) and ``"llm"`` (completions);
any ``[a-z][a-z0-9_]{0,39}`` name makes its own file. One store object per name and
repository, so its batched bookkeeping (see `plandb.stores.cache`) is shared by all callers
and written on `close()`.
"""

from __future__ import annotations

import logging
import threading

from .errors import InvalidInput, PlanDBError
from .stores.cache import CacheStore

log = logging.getLogger("plandb.cache")


class CacheMixin:
    """`repo.cache(name)` (mixed into PlanRepository)."""

    def _init_cache(self) -> None:
        self._caches: dict[str, CacheStore] = {}
        self._caches_lock = threading.Lock()

    def cache(self, name: str) -> CacheStore:
        """The cache store for cache/<name>_cache.db (created on first use)."""
        if not isinstance(name, str):  # checked here: an unhashable name fails the lookup
            raise InvalidInput(f"cache name must be a string, got {type(name).__name__}")
        with self._caches_lock:
            store = self._caches.get(name)
            if store is None:
                store = self._caches[name] = CacheStore(self, name)
            return store

    def _flush_caches(self) -> None:
        with self._caches_lock:
            stores = list(self._caches.values())
        for store in stores:
            try:
                store.flush()
            except PlanDBError as exc:  # counters only; entries are already durable
                log.warning("cache %s: pending stats not written: %s", store.name, exc)
