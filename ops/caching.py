"""Named caches (settings.CACHE_NAMES) behind one small wrapper that every module uses.

    from ops.caching import named_cache
    products = named_cache("products").get_or_set(key, fetch, timeout=300)

The wrapper counts hits, misses and sets per cache in the shared counters (buffered, see
ops/metrics.py), reports each cache's size, and survives Redis going away: django-redis is set to
swallow connection errors, which would silently turn every read into a miss, so the wrapper talks
to django-redis's client directly, notices the failure, and serves from a process-local in-memory
cache until Redis answers again (checked every few seconds). Every cache only speeds things up:
instance state lives in the database, so clearing or losing a cache loses nothing.

Also here: FileCache, the file cache used without Redis; and PrefixScopedRedisClient, the
django-redis client class in settings.CACHES, because django-redis's own clear() is FLUSHDB,
which would also drop the Celery queue, the shared counters, rate-limit windows, the breaker state
and every other cache.
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.cache import caches, close_caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.cache.backends.filebased import FileBasedCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.signals import request_finished
from django.utils.module_loading import import_string
from django_redis.cache import RedisCache
from django_redis.client import DefaultClient
from django_redis.client.default import glob_escape
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError

from novita_gateway.timeutil import iso_now

from . import metrics

logger = logging.getLogger(__name__)

# Counting more keys than this (a SCAN over Redis) is not worth the time; sizes are capped.
SIZE_SCAN_LIMIT = 10_000
_RETRY_REDIS_AFTER = 5.0
_FALLBACK_MAX_ENTRIES = 2_000
_MISSING = object()
_REDIS_ERRORS = (ConnectionInterrupted, RedisError, OSError)

_state = {"down_until": 0.0, "down": False}
_fallbacks: dict[str, LocMemCache] = {}
_fallback_lock = threading.Lock()


def _redis_pattern(backend: RedisCache) -> str:
    # Every key of this cache, whatever its version: "<prefix>:*:*" with the default key function.
    return backend.key_func("*", glob_escape(backend.key_prefix), "*")


def _delete_redis_keys(backend: RedisCache, client=None) -> int:
    client = client or backend.client.get_client(write=True)
    deleted = 0
    batch: list = []
    for key in client.scan_iter(match=_redis_pattern(backend), count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += client.unlink(*batch)
            batch = []
    if batch:
        deleted += client.unlink(*batch)
    return deleted


class PrefixScopedRedisClient(DefaultClient):
    """django-redis client whose clear() deletes this cache's keys only, never the database."""

    def clear(self, client=None) -> None:
        try:
            _delete_redis_keys(self._backend, client)
        except RedisError as exc:
            raise ConnectionInterrupted(connection=client) from exc


class FileCache(FileBasedCache):
    """Django's file cache (the set-up without Redis), compressing at zlib's fastest level.

    The default level costs about three times as much for files a fifth smaller; entries live
    seconds to minutes on local disk, so writing them fast matters more (the fleet snapshot is
    written on the path of a listing). Reads are unchanged: zlib reads any level.
    """

    def _write_content(self, file, timeout, value):
        expiry = self.get_backend_timeout(timeout)
        file.write(pickle.dumps(expiry, self.pickle_protocol))
        file.write(zlib.compress(pickle.dumps(value, self.pickle_protocol), 1))


def closing_is_a_no_op(config: dict) -> bool:
    """True when closing this CACHES entry's backend does nothing.

    Django closes every cache at the end of each request. Ours never need it: the file and
    in-memory caches hold nothing open, and django-redis keeps its pooled connections unless
    CLOSE_CONNECTION asks otherwise. Any other backend is assumed to need it."""
    backend = import_string(config["BACKEND"])
    if issubclass(backend, RedisCache):
        options = config.get("OPTIONS", {})
        return not options.get(
            "CLOSE_CONNECTION", getattr(settings, "DJANGO_REDIS_CLOSE_CONNECTION", False)
        )
    return backend.close is BaseCache.close


def skip_closing_caches_after_requests() -> bool:
    """Stop Django closing the caches after every request when none of ours needs it.

    Asking each of the six caches whether this thread opened it was a twentieth of a poll's
    CPU, to call six close() methods that do nothing. Returns whether it was skipped."""
    if not all(closing_is_a_no_op(config) for config in settings.CACHES.values()):
        return False
    request_finished.disconnect(close_caches)
    return True


# --- Redis availability (per process) -------------------------------------------------------


def redis_configured() -> bool:
    return bool(settings.REDIS_URL)


def redis_connected() -> bool:
    """Whether the caches are on Redis right now (False when not configured or unreachable)."""
    return redis_configured() and not _state["down"]


def note_redis_down(exc: BaseException | None = None) -> None:
    """Serve from the in-memory fallback for a few seconds (also called by /health's PING)."""
    if not _state["down"]:
        logger.warning(
            "caches: redis unavailable, serving from process memory (%s)",
            type(exc).__name__ if exc else "ping failed",
        )
    _state["down"] = True
    _state["down_until"] = time.monotonic() + _RETRY_REDIS_AFTER


def note_redis_up() -> None:
    if _state["down"]:
        logger.info("caches: redis is back")
        # What was cached in memory meanwhile may be older than Redis's copy; drop it.
        for fallback in list(_fallbacks.values()):
            fallback.clear()
    _state["down"] = False
    _state["down_until"] = 0.0


def _try_redis() -> bool:
    return not _state["down"] or time.monotonic() >= _state["down_until"]


def _fallback(name: str, backend) -> LocMemCache:
    cache = _fallbacks.get(name)
    if cache is None:
        with _fallback_lock:
            cache = _fallbacks.get(name)
            if cache is None:
                cache = LocMemCache(
                    f"ngw-fallback-{name}",
                    {
                        "TIMEOUT": backend.default_timeout if backend is not None else 300,
                        "OPTIONS": {"MAX_ENTRIES": _FALLBACK_MAX_ENTRIES},
                    },
                )
                _fallbacks[name] = cache
    return cache


# --- the wrapper --------------------------------------------------------------------------


class NamedCache:
    """One named cache: get/set/delete/get_or_set/clear, counted, with a Redis-down fallback."""

    def __init__(self, name: str):
        self.name = name

    @property
    def backend(self):
        return caches[self.name]

    def _run(self, on_redis: Callable[[RedisCache], Any], on_other: Callable[[Any], Any]):
        if self.name not in settings.CACHES:
            # A settings override without this alias (some tests): keep working, in memory.
            return on_other(_fallback(self.name, None))
        backend = self.backend
        if not isinstance(backend, RedisCache):
            return on_other(backend)
        if _try_redis():
            try:
                result = on_redis(backend)
            except _REDIS_ERRORS as exc:
                note_redis_down(exc)
            else:
                if _state["down"]:
                    note_redis_up()
                return result
        return on_other(_fallback(self.name, backend))

    def get(self, key: str, default: Any = None) -> Any:
        value = self._run(
            lambda b: b.client.get(key, default=_MISSING),
            lambda b: b.get(key, _MISSING),
        )
        if value is _MISSING:
            metrics.record_cache(self.name, misses=1)
            return default
        metrics.record_cache(self.name, hits=1)
        return value

    def set(self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT) -> None:
        self._run(
            lambda b: b.client.set(key, value, timeout=timeout),
            lambda b: b.set(key, value, timeout=timeout),
        )
        metrics.record_cache(self.name, sets=1)

    def delete(self, key: str) -> bool:
        return bool(self._run(lambda b: b.client.delete(key), lambda b: b.delete(key)))

    def get_or_set(self, key: str, default: Any, timeout: Any = DEFAULT_TIMEOUT) -> Any:
        """The cached value, else `default` (called if callable), stored unless it is None."""
        value = self.get(key, _MISSING)
        if value is not _MISSING:
            return value
        value = default() if callable(default) else default
        if value is not None:
            self.set(key, value, timeout)
        return value

    def clear(self) -> None:
        fallback = _fallbacks.get(self.name)
        if fallback is not None:
            fallback.clear()
        self._run(lambda b: _delete_redis_keys(b), lambda b: b.clear())

    def size(self) -> int:
        """Entries held now (capped at SIZE_SCAN_LIMIT)."""

        def on_redis(backend: RedisCache) -> int:
            client = backend.client.get_client(write=False)
            count = 0
            for _key in client.scan_iter(match=_redis_pattern(backend), count=1000):
                count += 1
                if count >= SIZE_SCAN_LIMIT:
                    break
            return count

        return self._run(on_redis, _local_size)

    def backend_name(self) -> str:
        if self.name not in settings.CACHES:
            return "memory"
        backend = self.backend
        if isinstance(backend, RedisCache):
            return "redis" if redis_connected() else "fallback"
        if isinstance(backend, FileBasedCache):
            return "file"
        if isinstance(backend, LocMemCache):
            return "memory"
        return type(backend).__name__


def _local_size(backend) -> int:
    if isinstance(backend, LocMemCache):
        return len(backend._cache)
    if isinstance(backend, FileBasedCache):
        count = 0
        try:
            with os.scandir(backend._dir) as entries:
                for entry in entries:
                    if entry.name.endswith(FileBasedCache.cache_suffix):
                        count += 1
                        if count >= SIZE_SCAN_LIMIT:
                            break
        except FileNotFoundError:
            return 0
        return count
    return 0


_named: dict[str, NamedCache] = {}


def cache_names() -> list[str]:
    return list(settings.CACHE_NAMES)


def named_cache(name: str) -> NamedCache:
    """The wrapper for one of settings.CACHE_NAMES (ValueError for any other name)."""
    cache = _named.get(name)
    if cache is None:
        if name not in settings.CACHE_NAMES:
            raise ValueError(f"unknown cache {name!r}; expected one of {settings.CACHE_NAMES}")
        cache = _named[name] = NamedCache(name)
    return cache


def clear(name: str | None = None) -> list[str]:
    """Clear one named cache, or all of them; returns the names cleared."""
    names = [name] if name else cache_names()
    for each in names:
        named_cache(each).clear()
    return names


# --- statistics ---------------------------------------------------------------------------


def _ratio(hits: float, misses: float) -> float:
    total = hits + misses
    return round(hits / total, 4) if total else 0.0


def stats(all_totals: dict[str, float] | None = None) -> dict[str, dict]:
    """Per cache: size, hitRatio (0..1), hits, misses, sets; counts from every process."""
    all_totals = metrics.totals() if all_totals is None else all_totals
    out = {}
    for name in cache_names():
        hits = int(all_totals.get(f"cache:{name}:hits", 0))
        misses = int(all_totals.get(f"cache:{name}:misses", 0))
        out[name] = {
            "size": named_cache(name).size(),
            "hitRatio": _ratio(hits, misses),
            "hits": hits,
            "misses": misses,
            "sets": int(all_totals.get(f"cache:{name}:sets", 0)),
        }
    return out


def summary(all_totals: dict[str, float] | None = None, per_cache: dict | None = None) -> dict:
    per_cache = stats(all_totals) if per_cache is None else per_cache
    hits = sum(s["hits"] for s in per_cache.values())
    misses = sum(s["misses"] for s in per_cache.values())
    return {
        "totalCaches": len(per_cache),
        "totalEntries": sum(s["size"] for s in per_cache.values()),
        "totalHits": hits,
        "totalMisses": misses,
        "overallHitRatio": _ratio(hits, misses),
    }


def stats_payload() -> dict:
    """`GET /api/cache/stats`."""
    per_cache = stats()
    instances = per_cache.get("instances", {"size": 0, "hitRatio": 0.0})
    return {
        "timestamp": iso_now(),
        "cacheManager": {"cacheNames": cache_names(), "stats": per_cache},
        "services": {
            "instance": {
                # Instance details are cached in the "instances" cache (the DB holds the state).
                "instanceDetailsCache": {
                    "size": instances["size"],
                    "hitRatio": instances["hitRatio"],
                }
            }
        },
        "summary": summary(per_cache=per_cache),
    }


def configuration() -> dict:
    """The /health `redis.cacheManager.configuration` block."""
    backend = "file"
    if redis_configured():
        backend = "redis" if redis_connected() else "fallback"
    return {
        "defaultBackend": backend,
        "enableFallback": True,
        "cacheCount": len(cache_names()),
        "redisConnected": redis_connected(),
    }


def probe(name: str = "health") -> tuple[bool, str]:
    """A set/get/delete round trip on the cache's current backend, uncounted: (works, backend)."""
    cache = named_cache(name)
    key = f"probe:{os.getpid()}:{threading.get_ident()}"

    def on_redis(backend: RedisCache):
        backend.client.set(key, 1, timeout=10)
        try:
            return backend.client.get(key)
        finally:
            backend.client.delete(key)

    def on_other(backend):
        backend.set(key, 1, timeout=10)
        try:
            return backend.get(key)
        finally:
            backend.delete(key)

    try:
        got = cache._run(on_redis, on_other)
    except Exception as exc:  # noqa: BLE001 - a broken cache is a finding, not a crash
        logger.warning("cache probe failed: %s", type(exc).__name__)
        return False, cache.backend_name()
    return got == 1, cache.backend_name()
