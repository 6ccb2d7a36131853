"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel

import ledger.models  # noqa: F401  (registers the tables)
from ledger.db import make_engine
from ledger.migrate import alembic_config, upgrade

ROOT = Path(__file__).resolve().parent.parent
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def _schema_differences(engine: sa.Engine) -> list:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return compare_metadata(context, SQLModel.metadata)


def test_migrated_schema_matches_the_models(engine: sa.Engine) -> None:
    assert _schema_differences(engine) == []


def test_upgrade_again_changes_nothing(engine: sa.Engine) -> None:
    upgrade(engine.url.render_as_string(hide_password=False))
    assert _schema_differences(engine) == []
    with engine.connect() as connection:
        versions = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    assert versions == [(HEAD,)]


def test_upgrade_creates_the_folder_of_a_new_sqlite_file(tmp_path) -> None:
    path = tmp_path / "data" / "nested" / "dunwise.db"
    upgrade(f"sqlite:///{path}")
    assert path.exists()


def test_workers_starting_together_on_a_new_database_migrate_it_once(
    empty_database_url: str,
) -> None:
    # Separate processes, as workers on several machines would be.
    migrate = [
        sys.executable,
        "-c",
        f"from ledger.migrate import upgrade; upgrade({empty_database_url!r})",
    ]
    workers = [subprocess.Popen(migrate, cwd=ROOT, stderr=subprocess.PIPE) for _ in range(4)]
    failures = [worker.stderr.read().decode() for worker in workers if worker.wait(timeout=120)]
    assert failures == []
    engine = make_engine(empty_database_url)
    try:
        assert _schema_differences(engine) == []
        with engine.connect() as connection:
            versions = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
        assert versions == [(HEAD,)]
    finally:
        engine.dispose()
