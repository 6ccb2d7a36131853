"""What every ledger table is built on: constraint names and timezone-aware datetimes.

Invariants: constraint names are deterministic (the naming convention is set here, before
any table module defines a table, since names are given when a constraint joins its table),
so migrations can address them; a datetime column stores UTC and always comes back
timezone-aware, and a naive datetime is refused rather than guessed at.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

# Deterministic constraint names, so later migrations (batch mode on SQLite) can address them.
# Set before any table is defined: names are given when a constraint joins its table.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(sa.types.TypeDecorator):
    """A timezone-aware datetime stored as UTC, on SQLite as on PostgreSQL."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):  # noqa: ARG002
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the ledger stores aware datetimes only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect):  # noqa: ARG002
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(**kwargs) -> Field:
    """A timezone-aware datetime column (`UTCDateTime`)."""
    return Field(sa_type=UTCDateTime, **kwargs)
