"""Engine and sessions for the ledger database (SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlmodel import Session, create_engine


def make_engine(url: str, *, durable: bool = True) -> sa.Engine:
    """An engine for `url`; `durable=False` lets a scratch SQLite file skip fsyncs."""
    if url.startswith("sqlite"):
        # SQLite has one writer at a time. One pooled connection makes threads queue for it
        # in-process, instead of polling the file lock with sleeps under busy_timeout.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            poolclass=sa.pool.QueuePool,
            pool_size=1,
            max_overflow=0,
            pool_timeout=120,
        )

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            # The sqlite3 driver's own transaction handling leaves SELECTs and SAVEPOINTs
            # outside the transaction; turn it off and begin transactions ourselves below.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _sqlite_begin(connection: sa.Connection) -> None:
            # IMMEDIATE takes the write lock up front: a read-then-write transaction waits for
            # another writer (busy_timeout) instead of failing on a stale snapshot. Sent to the
            # driver directly: every transaction pays for it, and SQLAlchemy's statement path
            # costs several times what SQLite spends on the BEGIN.
            connection.connection.driver_connection.execute("BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True)


@contextmanager
def session_scope(engine: sa.Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
