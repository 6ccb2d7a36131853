"""Collector tasks get an assignee, the moments they were claimed and breached, the queue a
breached task came from, and the request id of their last change.

Every new column is nullable, so existing tasks stay open and unassigned. The assignee refers
to a console user; on SQLite that foreign key needs batch mode, which copies the table
(ledger.migrate.upgrade checks foreign keys after the copy).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("collectortask") as batch:
        batch.add_column(sa.Column("assignee_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("breached_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("escalated_from_queue", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("request_id", sa.String(length=100), nullable=True))
        batch.create_foreign_key(
            op.f("fk_collectortask_assignee_id_app_user"), "app_user", ["assignee_id"], ["id"]
        )
        batch.create_index(op.f("ix_collectortask_assignee_id"), ["assignee_id"])


def downgrade() -> None:
    with op.batch_alter_table("collectortask") as batch:
        batch.drop_index(op.f("ix_collectortask_assignee_id"))
        batch.drop_constraint(op.f("fk_collectortask_assignee_id_app_user"), type_="foreignkey")
        batch.drop_column("request_id")
        batch.drop_column("escalated_from_queue")
        batch.drop_column("breached_at")
        batch.drop_column("claimed_at")
        batch.drop_column("assignee_id")
