"""Alembic environment for the ledger: tables from SQLModel.metadata, URL from the caller.

`ledger.migrate.upgrade(url)` passes the URL in `config.attributes["url"]`; without one,
the URL from settings is used.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context
from sqlmodel import SQLModel

import ledger.delivery_events  # noqa: F401
import ledger.models  # noqa: F401  (registers the tables on SQLModel.metadata)
import ledger.notes  # noqa: F401
import ledger.plans  # noqa: F401
import ledger.timeline  # noqa: F401
from ledger.db import make_engine

config = context.config
target_metadata = SQLModel.metadata


def _database_url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from settings import get_settings

    return get_settings().effective_database_url


def _configure(**kwargs: object) -> None:
    url = kwargs.get("url")
    connection = kwargs.get("connection")
    dialect = connection.dialect.name if isinstance(connection, sa.Connection) else str(url)
    context.configure(
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: batch mode copies the table instead.
        render_as_batch=dialect.startswith("sqlite"),
        compare_type=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=_database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_database_url())
    try:
        with engine.connect() as connection:
            _configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
