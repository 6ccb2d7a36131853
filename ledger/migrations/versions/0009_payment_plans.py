"""Payment plans a collector offered, so the payer's portal can show and take them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "payment_plan",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("installments", sa.JSON(), nullable=False),
        sa.Column("balance_at_start_minor", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("note", sa.String(length=2000), nullable=True),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('active', 'kept', 'broken', 'cancelled', 'replaced')",
            name=op.f("ck_payment_plan_status_known"),
        ),
        sa.CheckConstraint(
            "balance_at_start_minor > 0", name=op.f("ck_payment_plan_balance_at_start_positive")
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoice.id"], name=op.f("fk_payment_plan_invoice_id_invoice")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_plan")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_payment_plan_idempotency_key")),
    )
    op.create_index(
        op.f("ix_payment_plan_invoice_id"), "payment_plan", ["invoice_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_payment_plan_invoice_id"), table_name="payment_plan")
    op.drop_table("payment_plan")
