"""The async engine and session factory, tuned per backend.

SQLite runs in WAL mode with foreign keys on and a busy timeout, so several readers and one
writer (or several processes) share the file without "database is locked" errors.

PostgreSQL connections are checked before use only when they have sat idle in the pool
(``IDLE_PING_SECONDS``), not at every checkout. SQLAlchemy's ``pool_pre_ping`` with asyncpg sends
BEGIN, a ping and ROLLBACK (three round trips) at each checkout, and a search checks out four to
six connections. A connection that idled (where a restart or an idle timeout cuts connections) is
pinged and, if dead, replaced before anyone uses it; one in steady use is not. The cost: when the
server goes away under load, each connection busy at that moment fails its next statement once;
SQLAlchemy then drops the whole pool, and the next checkouts connect afresh.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

SQLITE_BUSY_TIMEOUT_MS = 5_000
SQLITE_POOL_SIZE = 96
IDLE_PING_SECONDS = 10.0
_holds_write_lock: ContextVar[bool] = ContextVar("trellis_holds_sqlite_write_lock", default=False)
_RETURNED_AT = "trellis.returned_at"  # in a pooled connection's info: when it was last returned (monotonic)


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _ping_idle_connections(engine: AsyncEngine, idle_ping_seconds: float, clock: Callable[[], float]) -> None:
    """Ping a connection at checkout when it has been idle ``idle_ping_seconds`` or longer; a dead
    one is replaced (DisconnectionError makes the pool discard it and check out another)."""

    def returned(_dbapi_connection: Any, record: Any, *_: Any) -> None:
        record.info[_RETURNED_AT] = clock()

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_RETURNED_AT)
        if since is not None and clock() - since < idle_ping_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # whatever the driver raises, the connection is of no use
            raise DisconnectionError(f"a pooled connection failed its ping: {exc}") from exc

    pool = engine.sync_engine.pool
    event.listen(pool, "connect", returned)  # brand new: nothing to check
    event.listen(pool, "checkin", returned)
    event.listen(pool, "checkout", checkout)


def create_engine(
    url: str,
    *,
    echo: bool = False,
    idle_ping_seconds: float = IDLE_PING_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # A pool that covers concurrent readers: an overflow connection is closed when returned, and
        # each new aiosqlite connection costs a thread and the pragmas (measured: a third of a new
        # connection per workflow run at 64 concurrent runs with the default 5 + 10, and still new
        # threads every second at 64 concurrent executes with 32 + 32). An idle connection costs
        # a parked thread.
        engine = create_async_engine(
            url,
            echo=echo,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            pool_size=SQLITE_POOL_SIZE,
            max_overflow=SQLITE_POOL_SIZE,
        )
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
        return engine
    engine = create_async_engine(
        url,
        echo=echo,
        # A steady pool: an overflow connection is closed when returned, so a pool smaller than the
        # steady concurrency reconnects all the time (measured: 10 % of an API's CPU in asyncpg's
        # connect at 64 concurrent workflow executes with 10 + 20). At most 30 per process, as before.
        pool_size=20,
        max_overflow=10,
        pool_timeout=5,
        connect_args={
            "timeout": 5,
            "command_timeout": 30,
            # asyncpg prepares every statement; after five runs PostgreSQL may switch a prepared
            # statement to a generic plan, made without the parameters' values. For search that is
            # the wrong plan: how many rows a full-text query or an ``id IN (...)`` list selects
            # decides between the GIN index and the primary key (measured: 3 ms custom, 9 ms generic
            # for a keyword query over 50 candidate ids at 100,000 contexts). Planning each run costs
            # well under a millisecond.
            "server_settings": {"plan_cache_mode": "force_custom_plan"},
        },
    )
    _ping_idle_connections(engine, idle_ping_seconds, clock)
    return engine


def asyncpg_dsn(url: URL) -> str:
    """asyncpg's own DSN for a PostgreSQL URL (a connection of one's own, for ``LISTEN``): the same
    server, user, database and options, without SQLAlchemy's driver name."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class Database:
    """Owns the engine; hands out sessions and answers readiness pings."""

    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        idle_ping_seconds: float = IDLE_PING_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.engine = create_engine(url, echo=echo, idle_ping_seconds=idle_ping_seconds, clock=clock)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # PostgreSQL reads in autocommit: no BEGIN before the first statement and no ROLLBACK when
        # the session closes, two round trips of a search's four to six sessions. Same pool.
        readers = self.engine
        if self.engine.dialect.name == "postgresql":
            readers = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.readers = async_sessionmaker(readers, expire_on_commit=False)
        self._write_lock = asyncio.Lock() if self.engine.dialect.name == "sqlite" else None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[AsyncSession]:
        """A session for reads only: on PostgreSQL each statement is its own transaction (READ
        COMMITTED gives each statement its own snapshot anyway). Nothing written in it is kept
        together: write through ``transaction()``."""
        async with self.readers() as session:
            yield session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session whose work commits on success and rolls back entirely on any error.

        On SQLite, one transaction of this process writes at a time: the others wait on an asyncio
        lock instead of in SQLite's busy handler, which sleeps in growing steps (up to 100 ms) and
        made 64 concurrent writers 50 times slower than one. A transaction opened inside another in
        the same task does not wait for itself."""
        if self._write_lock is None or _holds_write_lock.get():
            async with self.sessions() as session, session.begin():
                yield session
            return
        async with self._write_lock:
            token = _holds_write_lock.set(True)
            try:
                async with self.sessions() as session, session.begin():
                    yield session
            finally:
                _holds_write_lock.reset(token)

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
