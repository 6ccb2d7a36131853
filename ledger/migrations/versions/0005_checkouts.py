"""Payment portal checkouts: checkouts and their invoices, handled Stripe events, and the
customer's Stripe id.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc(name: str, nullable: bool = False) -> sa.Column:
    # ledger.models.UTCDateTime stores through this type; migrations stay independent of models.
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _money(name: str) -> sa.Column:
    return sa.Column(name, sa.BigInteger(), nullable=False)


def upgrade() -> None:
    # A nullable column needs no table copy on SQLite: plain ALTER TABLE ADD COLUMN.
    op.add_column("customer", sa.Column("stripe_customer_id", sa.String(length=64), nullable=True))
    op.add_column(
        "customer",
        sa.Column("pay_links_revoked_before", sa.DateTime(timezone=True), nullable=True),
    )

    op.create_table(
        "checkout",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=100), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        _money("items_minor"),
        _money("credit_minor"),
        _money("surcharge_minor"),
        _money("charge_minor"),
        sa.Column("payment_intent_id", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("failure_reason", sa.String(length=500), nullable=True),
        _money("refunded_minor"),
        sa.Column("disputed", sa.Boolean(), nullable=False),
        _utc("created_at"),
        _utc("updated_at"),
        sa.CheckConstraint(
            "charge_minor = items_minor - credit_minor + surcharge_minor",
            name=op.f("ck_checkout_charge_adds_up"),
        ),
        sa.CheckConstraint(
            "items_minor > 0 AND credit_minor >= 0 AND surcharge_minor >= 0 "
            "AND refunded_minor >= 0",
            name=op.f("ck_checkout_amounts_in_range"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customer.id"], name=op.f("fk_checkout_customer_id_customer")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checkout")),
        sa.UniqueConstraint(
            "customer_id", "request_id", name=op.f("uq_checkout_customer_id_request_id")
        ),
        sa.UniqueConstraint("payment_intent_id", name=op.f("uq_checkout_payment_intent_id")),
    )
    op.create_index(op.f("ix_checkout_status"), "checkout", ["status"])

    op.create_table(
        "checkout_item",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("checkout_id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("invoice_number", sa.String(length=64), nullable=False),
        _money("amount_minor"),
        sa.Column("reason_code", sa.String(length=32), nullable=True),
        sa.Column("note", sa.String(length=500), nullable=True),
        _money("reversed_minor"),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_checkout_item_amount_positive")),
        sa.CheckConstraint(
            "reversed_minor >= 0 AND reversed_minor <= amount_minor",
            name=op.f("ck_checkout_item_reversed_in_range"),
        ),
        sa.ForeignKeyConstraint(
            ["checkout_id"], ["checkout.id"], name=op.f("fk_checkout_item_checkout_id_checkout")
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoice.id"], name=op.f("fk_checkout_item_invoice_id_invoice")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checkout_item")),
        sa.UniqueConstraint(
            "checkout_id", "invoice_id", name=op.f("uq_checkout_item_checkout_id_invoice_id")
        ),
    )
    op.create_index(op.f("ix_checkout_item_invoice_id"), "checkout_item", ["invoice_id"])

    op.create_table(
        "stripe_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("payment_intent_id", sa.String(length=255), nullable=True),
        _utc("processed_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_event")),
        sa.UniqueConstraint("event_id", name=op.f("uq_stripe_event_event_id")),
    )


def downgrade() -> None:
    op.drop_table("stripe_event")
    op.drop_index(op.f("ix_checkout_item_invoice_id"), table_name="checkout_item")
    op.drop_table("checkout_item")
    op.drop_index(op.f("ix_checkout_status"), table_name="checkout")
    op.drop_table("checkout")
    with op.batch_alter_table("customer") as batch:
        batch.drop_column("pay_links_revoked_before")
        batch.drop_column("stripe_customer_id")
