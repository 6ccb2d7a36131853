"""Bring a ledger database to the newest schema (`alembic upgrade head`), no alembic.ini needed."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from ledger.db import make_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# PostgreSQL advisory lock held while migrating ("dunw" in ASCII).
MIGRATION_LOCK_ID = 0x64756E77


def alembic_config(url: str | None = None) -> Config:
    """An Alembic Config for the ledger's migrations; `url` wins over settings."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if url is not None:
        # Kept out of the ini options: configparser would read '%' in a password as interpolation.
        config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Run every migration up to `revision` on the database at `url` (SQLite or PostgreSQL).

    Safe to run from several processes at once (workers starting together on a new
    database): the migrations run in one transaction that first takes a lock, so the others
    wait and then find nothing left to do.
    """
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    config = alembic_config(url)
    engine = make_engine(url)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _foreign_keys_checked_at_the_end)
    try:
        # On SQLite the transaction itself is the lock (ledger.db begins it IMMEDIATE).
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            if connection.dialect.name == "sqlite":
                _check_foreign_keys(connection)
    finally:
        engine.dispose()


def _foreign_keys_checked_at_the_end(dbapi_connection, _record) -> None:
    # Batch mode copies a SQLite table and drops the original while other tables still refer
    # to its rows; with enforcement on, that drop fails. It is off for the migration (the
    # pragma cannot change inside a transaction, so here, on connect) and checked at the end.
    dbapi_connection.execute("PRAGMA foreign_keys=OFF")


def _check_foreign_keys(connection: sa.Connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        rows = ", ".join(f"{table} row {rowid} -> {parent}" for table, rowid, parent, _ in broken)
        raise RuntimeError(f"migration would leave rows referring to nothing: {rows}")
