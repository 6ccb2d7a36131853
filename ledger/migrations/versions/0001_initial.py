"""Initial ledger schema: customers, invoices, payments, credits, tasks, outbox, ERP, audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc(name: str, nullable: bool = False) -> sa.Column:
    # ledger.models.UTCDateTime stores through this type; migrations stay independent of models.
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _key() -> sa.Column:
    return sa.Column("idempotency_key", sa.String(length=200), nullable=False)


def upgrade() -> None:
    op.create_table(
        "customer",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("phone", sa.String(length=20), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("locale", sa.String(length=16), nullable=False),
        sa.Column("segment", sa.String(length=64), nullable=True),
        sa.Column("email_opt_out", sa.Boolean(), nullable=False),
        sa.Column("sms_opt_out", sa.Boolean(), nullable=False),
        _utc("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer")),
    )

    op.create_table(
        "invoice",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("total_minor", sa.Integer(), nullable=False),
        sa.Column("balance_minor", sa.Integer(), nullable=False),
        sa.Column("issued_on", sa.Date(), nullable=False),
        sa.Column("due_on", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("policy_name", sa.String(length=64), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        _utc("created_at"),
        _utc("updated_at"),
        sa.CheckConstraint("balance_minor >= 0", name=op.f("ck_invoice_balance_not_negative")),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customer.id"], name=op.f("fk_invoice_customer_id_customer")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice")),
    )
    op.create_index(op.f("ix_invoice_number"), "invoice", ["number"], unique=True)
    op.create_index(op.f("ix_invoice_customer_id"), "invoice", ["customer_id"])
    op.create_index(op.f("ix_invoice_status"), "invoice", ["status"])

    op.create_table(
        "payment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount_minor", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("reference", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        _key(),
        _utc("received_at"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customer.id"], name=op.f("fk_payment_customer_id_customer")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_payment_idempotency_key")),
    )
    op.create_index(op.f("ix_payment_customer_id"), "payment", ["customer_id"])

    op.create_table(
        "paymentallocation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("payment_id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("amount_minor", sa.Integer(), nullable=False),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_paymentallocation_amount_positive")),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoice.id"], name=op.f("fk_paymentallocation_invoice_id_invoice")
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payment.id"], name=op.f("fk_paymentallocation_payment_id_payment")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_paymentallocation")),
        sa.UniqueConstraint(
            "payment_id", "invoice_id", name=op.f("uq_paymentallocation_payment_id_invoice_id")
        ),
    )
    op.create_index(op.f("ix_paymentallocation_invoice_id"), "paymentallocation", ["invoice_id"])
    op.create_index(op.f("ix_paymentallocation_payment_id"), "paymentallocation", ["payment_id"])

    op.create_table(
        "adjustment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount_minor", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        _key(),
        _utc("created_at"),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoice.id"], name=op.f("fk_adjustment_invoice_id_invoice")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adjustment")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_adjustment_idempotency_key")),
    )
    op.create_index(op.f("ix_adjustment_invoice_id"), "adjustment", ["invoice_id"])

    op.create_table(
        "customercredit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount_minor", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("payment_id", sa.Integer(), nullable=True),
        _key(),
        _utc("created_at"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customer.id"], name=op.f("fk_customercredit_customer_id_customer")
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payment.id"], name=op.f("fk_customercredit_payment_id_payment")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customercredit")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_customercredit_idempotency_key")),
    )
    op.create_index(op.f("ix_customercredit_customer_id"), "customercredit", ["customer_id"])

    op.create_table(
        "collectortask",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("queue", sa.String(length=64), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("note", sa.String(length=2000), nullable=True),
        _utc("due_at"),
        _key(),
        _utc("created_at"),
        _utc("closed_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoice.id"], name=op.f("fk_collectortask_invoice_id_invoice")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_collectortask")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_collectortask_idempotency_key")),
    )
    op.create_index(op.f("ix_collectortask_invoice_id"), "collectortask", ["invoice_id"])
    op.create_index(op.f("ix_collectortask_status"), "collectortask", ["status"])

    op.create_table(
        "message",
        sa.Column("id", sa.Integer(), nullable=False),
        _key(),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=True),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("template", sa.String(length=64), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.Column("subject", sa.String(length=300), nullable=True),
        sa.Column("provider_id", sa.String(length=200), nullable=True),
        _utc("created_at"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customer.id"], name=op.f("fk_message_customer_id_customer")
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoice.id"], name=op.f("fk_message_invoice_id_invoice")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_message_idempotency_key")),
    )
    op.create_index(op.f("ix_message_customer_id"), "message", ["customer_id"])
    op.create_index(op.f("ix_message_invoice_id"), "message", ["invoice_id"])

    op.create_table(
        "erpposting",
        sa.Column("id", sa.Integer(), nullable=False),
        _key(),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=500), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        _utc("posted_at"),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoice.id"], name=op.f("fk_erpposting_invoice_id_invoice")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erpposting")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_erpposting_idempotency_key")),
    )
    op.create_index(op.f("ix_erpposting_invoice_id"), "erpposting", ["invoice_id"])

    op.create_table(
        "auditevent",
        sa.Column("id", sa.Integer(), nullable=False),
        _utc("at"),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoice.id"], name=op.f("fk_auditevent_invoice_id_invoice")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auditevent")),
    )
    op.create_index(op.f("ix_auditevent_at"), "auditevent", ["at"])
    op.create_index(op.f("ix_auditevent_invoice_id"), "auditevent", ["invoice_id"])
    _create_audit_guard()


def _create_audit_guard() -> None:
    """The audit trail is append-only: the database itself refuses UPDATE and DELETE."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION auditevent_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'audit events are append-only';
            END $$
            """
        )
        op.execute(
            "CREATE TRIGGER auditevent_append_only BEFORE UPDATE OR DELETE ON auditevent "
            "FOR EACH ROW EXECUTE FUNCTION auditevent_append_only()"
        )
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER auditevent_no_{event.lower()} BEFORE {event} ON auditevent "
                "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END"
            )


def _drop_audit_guard() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS auditevent_append_only ON auditevent")
        op.execute("DROP FUNCTION IF EXISTS auditevent_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS auditevent_no_update")
        op.execute("DROP TRIGGER IF EXISTS auditevent_no_delete")


def downgrade() -> None:
    _drop_audit_guard()
    for table in (
        "auditevent",
        "erpposting",
        "message",
        "collectortask",
        "customercredit",
        "adjustment",
        "paymentallocation",
        "payment",
        "invoice",
        "customer",
    ):
        # Dropping a table drops its indexes with it.
        op.drop_table(table)
