"""Task routing: the members of each queue, and the collector who owns a customer's account.

`queue_member` is new and empty, and `customer.owner_email` is nullable, so existing
customers have no owner and new tasks on their invoices go round robin or stay unassigned
until someone sets one.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "queue_member",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("queue", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["app_user.id"], name=op.f("fk_queue_member_user_id_app_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_member")),
        sa.UniqueConstraint("queue", "user_id", name=op.f("uq_queue_member_queue_user_id")),
    )
    op.create_index(op.f("ix_queue_member_user_id"), "queue_member", ["user_id"], unique=False)
    with op.batch_alter_table("customer") as batch:
        batch.add_column(sa.Column("owner_email", sa.String(length=320), nullable=True))


def downgrade() -> None:
    # Not batch mode: copying `customer` on SQLite would drop a table invoices refer to. The
    # column has no constraint or index, so SQLite (3.35 and later) drops it in place.
    op.drop_column("customer", "owner_email")
    op.drop_index(op.f("ix_queue_member_user_id"), table_name="queue_member")
    op.drop_table("queue_member")
