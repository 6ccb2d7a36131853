"""Shared fixtures.

`engine`: a migrated, empty ledger database, once on SQLite and once on PostgreSQL.
PostgreSQL comes from DUNWISE_TEST_POSTGRES_URL (default: local server, database `test`);
each test session creates its own database there and drops it at the end. Without a server
the PostgreSQL cases are skipped, except under CI, where they fail.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

import ledger.delivery_events  # noqa: F401
import ledger.models  # noqa: F401  (registers the tables)
import ledger.notes  # noqa: F401
import ledger.plans  # noqa: F401
import ledger.timeline  # noqa: F401
from ledger.db import make_engine
from ledger.migrate import upgrade
from tests.browser import chromium  # noqa: F401  (the fixture of the browser tests)

# Every worker a test starts re-imports the workflow modules per run, so a non-deterministic
# call in them fails a test (see worker.workflow_runner).
os.environ.setdefault("DUNWISE_STRICT_WORKFLOW_SANDBOX", "true")
# Each test's worker runs its activities in its own process, where a test can reach them;
# tests/test_activity_processes.py runs them in processes of their own, as `run` does on a
# machine of several cores.
os.environ.setdefault("DUNWISE_ACTIVITY_PROCESSES", "0")

POSTGRES_URL_VARIABLE = "DUNWISE_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _libpq_url(url: sa.URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def new_postgres_database() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards."""
    server = sa.make_url(os.environ.get(POSTGRES_URL_VARIABLE, DEFAULT_POSTGRES_URL))
    try:
        admin = psycopg.connect(_libpq_url(server), autocommit=True, connect_timeout=5)
    except psycopg.Error as error:
        reason = f"PostgreSQL unreachable at {server.render_as_string()}: {error}".strip()
        if _in_ci():
            pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)", pytrace=False)
        pytest.skip(reason)
    name = f"dunwise_test_{secrets.token_hex(6)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _libpq_url(server.set(database=name))
    finally:
        with psycopg.connect(_libpq_url(server), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_database_url() -> Iterator[str]:
    """A migrated PostgreSQL database of its own for this test session, dropped afterwards."""
    with new_postgres_database() as url:
        upgrade(url)
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables yet, on SQLite (a new file) or PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'new' / 'ledger.db'}"
        return
    with new_postgres_database() as url:
        yield url


def _empty_all_tables(engine: sa.Engine) -> None:
    tables = ", ".join(f'"{table.name}"' for table in SQLModel.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[sa.Engine]:
    """An empty ledger at the newest migration, on SQLite (a fresh file) or PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('ledger') / 'ledger.db'}"
        upgrade(url)
        ledger_engine = make_engine(url)
    else:
        ledger_engine = make_engine(request.getfixturevalue("postgres_database_url"))
        _empty_all_tables(ledger_engine)
    yield ledger_engine
    ledger_engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty, migrated ledger on SQLite (a fresh file) or PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
        upgrade(url)
        return url
    url = request.getfixturevalue("postgres_database_url")
    engine = make_engine(url)
    _empty_all_tables(engine)
    engine.dispose()
    return url
