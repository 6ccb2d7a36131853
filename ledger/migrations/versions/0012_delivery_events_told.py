"""Delivery events: when the invoices' workflows were told of each.

`delivery_event.told_at` is null while an event waits to be told (Temporal was unreachable
when it came); events recorded before are taken as told, at the moment they happened.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("delivery_event") as batch:
        batch.add_column(sa.Column("told_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index(op.f("ix_delivery_event_told_at"), ["told_at"], unique=False)
    op.execute("UPDATE delivery_event SET told_at = at")


def downgrade() -> None:
    with op.batch_alter_table("delivery_event") as batch:
        batch.drop_index(op.f("ix_delivery_event_told_at"))
        batch.drop_column("told_at")
