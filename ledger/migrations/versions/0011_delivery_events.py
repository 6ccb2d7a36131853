"""Delivery events: what the email and SMS providers tell of each message after sending, and
the addresses they could not deliver to.

`delivery_event` is new and empty; `message.delivery` and the customer's
`email_undeliverable` / `phone_undeliverable` are nullable: nothing is known of earlier
messages, and no address is marked.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "delivery_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("event_id", sa.String(length=100), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detail", sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"], ["message.id"], name=op.f("fk_delivery_event_message_id_message")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_event")),
        sa.UniqueConstraint(
            "provider", "event_id", name=op.f("uq_delivery_event_provider_event_id")
        ),
    )
    op.create_index(
        op.f("ix_delivery_event_message_id"), "delivery_event", ["message_id"], unique=False
    )
    with op.batch_alter_table("message") as batch:
        batch.add_column(sa.Column("delivery", sa.String(length=16), nullable=True))
    with op.batch_alter_table("customer") as batch:
        batch.add_column(sa.Column("email_undeliverable", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("phone_undeliverable", sa.String(length=200), nullable=True))


def downgrade() -> None:
    # Not batch mode: copying `message` on SQLite would drop a table others refer to. The
    # column has no constraint or index, so SQLite (3.35 and later) drops it in place.
    op.drop_column("customer", "phone_undeliverable")
    op.drop_column("customer", "email_undeliverable")
    op.drop_column("message", "delivery")
    op.drop_index(op.f("ix_delivery_event_message_id"), table_name="delivery_event")
    op.drop_table("delivery_event")
