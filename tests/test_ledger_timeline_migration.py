"""Migration 0004 adds the invoice_event table, as the models describe it, and takes it away."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import ledger.timeline  # noqa: F401  (registers invoice_event)
from ledger.db import make_engine
from ledger.migrate import alembic_config, upgrade

TABLE = "invoice_event"


def _differences_in_the_timeline_table(engine: sa.Engine) -> list:
    def only_the_timeline_table(_object, name, type_, _reflected, _compare_to) -> bool:
        return type_ != "table" or name == TABLE

    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                "include_object": only_the_timeline_table,
            },
        )
        return compare_metadata(context, SQLModel.metadata)


def _version(engine: sa.Engine) -> list:
    with engine.connect() as connection:
        return connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()


def test_upgrade_of_a_new_database_creates_the_timeline_table(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    try:
        inspector = sa.inspect(engine)
        assert TABLE in inspector.get_table_names()
        assert [c["name"] for c in inspector.get_unique_constraints(TABLE)] == [
            "uq_invoice_event_invoice_id_position"
        ]
        assert [fk["referred_table"] for fk in inspector.get_foreign_keys(TABLE)] == ["invoice"]
        assert _differences_in_the_timeline_table(engine) == []
    finally:
        engine.dispose()


def test_downgrade_to_0003_drops_the_table_and_upgrade_brings_it_back(
    empty_database_url: str,
) -> None:
    upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    try:
        command.downgrade(alembic_config(empty_database_url), "0003")
        assert TABLE not in sa.inspect(engine).get_table_names()
        assert "invoice" in sa.inspect(engine).get_table_names()
        assert _version(engine) == [("0003",)]

        upgrade(empty_database_url, "0004")
        assert TABLE in sa.inspect(engine).get_table_names()
        assert _version(engine) == [("0004",)]
        assert _differences_in_the_timeline_table(engine) == []
    finally:
        engine.dispose()
