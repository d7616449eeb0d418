"""Counters and heartbeats shared by every web, worker and beat process.

With REDIS_URL set they live in Redis (one hash, atomic increments). Without it, a small SQLite
file under VAR_DIR plays the same role, so the single-machine setup still aggregates across
processes. If Redis stops answering, counting carries on in this process's memory rather than
failing the request that is being counted.
"""

from __future__ import annotations

import atexit
import logging
import sqlite3
import threading
import time

from django.conf import settings

logger = logging.getLogger(__name__)

_HASH = "ngw:counters"
_VALUES = "ngw:values"
_lock = threading.Lock()
_state: dict = {"redis": None, "sqlite": None, "redis_down_until": 0.0}
_memory: dict[str, float] = {}
_sqlite_pending: dict[str, float] = {}
_sqlite_flushed = [0.0]
_SQLITE_FLUSH_SECONDS = 0.5
_memory_values: dict[str, str] = {}


def _redis():
    if not settings.REDIS_URL:
        return None
    if time.monotonic() < _state["redis_down_until"]:
        return None
    if _state["redis"] is None:
        import redis

        _state["redis"] = redis.Redis.from_url(
            settings.REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5
        )
    return _state["redis"]


def _redis_failed(exc: Exception) -> None:
    # Don't pay a connect timeout on every request while Redis is down; look again shortly.
    _state["redis_down_until"] = time.monotonic() + 5.0
    logger.warning("shared counters: redis unavailable, counting locally (%s)", type(exc).__name__)


def _sqlite():
    conn = _state["sqlite"]
    if conn is None:
        path = settings.VAR_DIR / "counters.sqlite3"
        conn = sqlite3.connect(path, timeout=5, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("CREATE TABLE IF NOT EXISTS counters (k TEXT PRIMARY KEY, v REAL NOT NULL)")
        conn.execute("CREATE TABLE IF NOT EXISTS vals (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS windows (k TEXT PRIMARY KEY, n INTEGER, expires REAL)"
        )
        _state["sqlite"] = conn
    return conn


def backend_name() -> str:
    if settings.REDIS_URL:
        return "redis" if _redis() is not None else "memory-fallback"
    return "sqlite"


def incr_many(amounts: dict[str, float]) -> None:
    r = _redis()
    if r is not None:
        try:
            pipe = r.pipeline(transaction=False)
            for key, amount in amounts.items():
                pipe.hincrbyfloat(_HASH, key, amount)
            pipe.execute()
            return
        except Exception as exc:  # noqa: BLE001 - any Redis failure degrades to memory
            _redis_failed(exc)
    if not settings.REDIS_URL:
        # SQLite takes one writer at a time across processes; writing on every request makes
        # requests queue behind each other. Buffer here and write at most every half second.
        with _lock:
            for key, amount in amounts.items():
                _sqlite_pending[key] = _sqlite_pending.get(key, 0) + amount
            if time.monotonic() - _sqlite_flushed[0] >= _SQLITE_FLUSH_SECONDS:
                _flush_sqlite_locked()
        return
    with _lock:
        for key, amount in amounts.items():
            _memory[key] = _memory.get(key, 0) + amount


def _flush_sqlite_locked() -> None:
    _sqlite_flushed[0] = time.monotonic()
    if not _sqlite_pending:
        return
    _sqlite().executemany(
        "INSERT INTO counters (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = v + excluded.v",
        list(_sqlite_pending.items()),
    )
    _sqlite_pending.clear()


def flush() -> None:
    """Write this process's buffered increments now (readers and process exit call it)."""
    if not settings.REDIS_URL:
        with _lock:
            _flush_sqlite_locked()


atexit.register(lambda: flush() if settings.configured else None)


def incr(key: str, amount: float = 1) -> None:
    incr_many({key: amount})


def get_all() -> dict[str, float]:
    r = _redis()
    if r is not None:
        try:
            raw = r.hgetall(_HASH)
            merged = {k.decode(): float(v) for k, v in raw.items()}
            for key, value in _memory.items():
                merged[key] = merged.get(key, 0) + value
            return merged
        except Exception as exc:  # noqa: BLE001
            _redis_failed(exc)
    if not settings.REDIS_URL:
        with _lock:
            _flush_sqlite_locked()
            return dict(_sqlite().execute("SELECT k, v FROM counters").fetchall())
    return dict(_memory)


def set_value(key: str, value: str) -> None:
    """Remember a small value (a heartbeat timestamp, a breaker state) for every process."""
    r = _redis()
    if r is not None:
        try:
            r.hset(_VALUES, key, value)
            return
        except Exception as exc:  # noqa: BLE001
            _redis_failed(exc)
    if not settings.REDIS_URL:
        with _lock:
            _sqlite().execute(
                "INSERT INTO vals (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
                (key, value),
            )
        return
    _memory_values[key] = value


def get_value(key: str) -> str | None:
    r = _redis()
    if r is not None:
        try:
            raw = r.hget(_VALUES, key)
            return raw.decode() if raw is not None else _memory_values.get(key)
        except Exception as exc:  # noqa: BLE001
            _redis_failed(exc)
    if not settings.REDIS_URL:
        with _lock:
            row = _sqlite().execute("SELECT v FROM vals WHERE k = ?", (key,)).fetchone()
        return row[0] if row else None
    return _memory_values.get(key)


# One command per claim (a MULTI/EXEC pipeline was four, and a tenth of a poll's CPU); the
# expiry is set by the claim that creates the window's key.
_HIT_WINDOW_LUA = """
local count = redis.call('INCRBY', KEYS[1], ARGV[2])
if count == tonumber(ARGV[2]) then redis.call('EXPIREAT', KEYS[1], ARGV[1]) end
return count
"""


def hit_window(key: str, window_seconds: int, amount: int = 1) -> tuple[int, float]:
    """Count `amount` hits in the fixed window containing now; return (hits so far, window end)."""
    now = time.time()
    window_end = (int(now) // window_seconds + 1) * window_seconds
    full_key = f"ngw:rl:{key}:{window_end}"
    r = _redis()
    if r is not None:
        try:
            if _state.get("hit_script_for") is not r:
                _state["hit_script"] = r.register_script(_HIT_WINDOW_LUA)
                _state["hit_script_for"] = r
            count = _state["hit_script"](keys=[full_key], args=[int(window_end) + 1, amount])
            return int(count), float(window_end)
        except Exception as exc:  # noqa: BLE001
            _redis_failed(exc)
    if not settings.REDIS_URL:
        with _lock:
            conn = _sqlite()
            (count,) = conn.execute(
                "INSERT INTO windows (k, n, expires) VALUES (?, ?, ?) "
                "ON CONFLICT(k) DO UPDATE SET n = n + excluded.n RETURNING n",
                (full_key, amount, window_end),
            ).fetchone()
            if count == amount:
                # First claim of a new window: a good moment to drop expired ones.
                conn.execute("DELETE FROM windows WHERE expires < ?", (now,))
        return int(count), float(window_end)
    with _lock:
        _memory[full_key] = _memory.get(full_key, 0) + amount
        return int(_memory[full_key]), float(window_end)


def reset_all() -> None:
    """Forget every counter and value (tests, and an operator's explicit reset)."""
    r = _redis()
    if r is not None:
        try:
            r.delete(_HASH, _VALUES)
            for key in r.scan_iter("ngw:rl:*"):
                r.delete(key)
        except Exception as exc:  # noqa: BLE001
            _redis_failed(exc)
    if not settings.REDIS_URL:
        with _lock:
            conn = _sqlite()
            conn.execute("DELETE FROM counters")
            conn.execute("DELETE FROM vals")
            conn.execute("DELETE FROM windows")
            _sqlite_pending.clear()
    _memory.clear()
    _memory_values.clear()
