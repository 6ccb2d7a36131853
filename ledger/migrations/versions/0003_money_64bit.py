"""Money columns become 64-bit: 32 bits end at 21,474,836.47 in a two-decimal currency.

Every *_minor column (invoice total and balance, payment, allocation, adjustment, customer
credit) turns from INTEGER into BIGINT; values are kept as they are. On SQLite an INTEGER
already holds 64 bits, but the declared type changes too, so the schema matches the models;
batch mode copies each table (ledger.migrate.upgrade checks foreign keys after the copy).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY_COLUMNS: dict[str, tuple[str, ...]] = {
    "invoice": ("total_minor", "balance_minor"),
    "payment": ("amount_minor",),
    "paymentallocation": ("amount_minor",),
    "adjustment": ("amount_minor",),
    "customercredit": ("amount_minor",),
}


def _retype(old: sa.types.TypeEngine, new: sa.types.TypeEngine) -> None:
    for table, columns in MONEY_COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.alter_column(column, existing_type=old, type_=new, existing_nullable=False)


def upgrade() -> None:
    _retype(sa.Integer(), sa.BigInteger())


def downgrade() -> None:
    # Fails, changing nothing, if an amount no longer fits 32 bits.
    _retype(sa.BigInteger(), sa.Integer())
