"""What several benchmark scripts share (imported as a sibling: scripts run from bench/)."""

import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit


def percentile(values: list[float], q: float) -> float:
    """The value at fraction q of the sorted samples (nearest rank, rounding down)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def postgres_bench_database(action: str) -> None:
    """Create or drop the throwaway PostgreSQL database named in DATABASE_URL."""
    import psycopg

    url = urlsplit(os.environ["DATABASE_URL"])
    name = url.path.lstrip("/")
    if not name.endswith("_bench"):
        raise SystemExit(f"refusing to {action} database {name!r}: its name must end in _bench")
    if url.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("the bench only talks to a loopback PostgreSQL")
    with psycopg.connect(
        host=url.hostname,
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password or None,
        dbname="postgres",
        autocommit=True,
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        if action == "create":
            conn.execute(f'CREATE DATABASE "{name}"')


def django_in_scratch(prefix: str, *, keep_redis: bool = False) -> tuple[Path, bool]:
    """Set Django up for an in-process bench: runtime files in a scratch folder, no Redis (unless
    `keep_redis` and REDIS_URL is set), SQLite there unless DATABASE_URL names a (throwaway,
    *_bench) PostgreSQL database.

    Returns the scratch folder and whether the database is PostgreSQL.
    """
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["VAR_DIR"] = str(scratch)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "novita_gateway.settings")
    os.environ.setdefault(
        "DJANGO_SECRET_KEY", "bench-only-secret-key-not-for-production-0123456789"
    )
    if not keep_redis:
        os.environ.pop("REDIS_URL", None)
    if not os.environ.get("DATABASE_URL"):
        os.environ["DATABASE_URL"] = f"sqlite:///{scratch / 'bench.sqlite3'}"
    is_postgres = os.environ["DATABASE_URL"].startswith(("postgres://", "postgresql://"))
    if is_postgres:
        postgres_bench_database("create")

    import django

    django.setup()
    return scratch, is_postgres
