"""Messages that cover several invoices of one customer: group key and delivering row.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("message") as batch:
        batch.add_column(sa.Column("group_key", sa.String(length=80), nullable=True))
        batch.add_column(sa.Column("sent_with_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_message_sent_with_id_message"), "message", ["sent_with_id"], ["id"]
        )
        batch.create_index(op.f("ix_message_group_key"), ["group_key"])
        batch.create_index(op.f("ix_message_sent_with_id"), ["sent_with_id"])


def downgrade() -> None:
    with op.batch_alter_table("message") as batch:
        batch.drop_index(op.f("ix_message_sent_with_id"))
        batch.drop_index(op.f("ix_message_group_key"))
        batch.drop_constraint(op.f("fk_message_sent_with_id_message"), type_="foreignkey")
        batch.drop_column("sent_with_id")
        batch.drop_column("group_key")
