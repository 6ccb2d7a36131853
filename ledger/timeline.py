"""The invoice timeline kept in the ledger, so an invoice's story outlives its workflow.

Temporal keeps a closed workflow only for its namespace's retention; the workflow flushes its
timeline here first. Invariants:

- One row per (invoice, position); positions count from 0 and leave no gap.
- A position, once stored, keeps its moment and event: sending it again may only update what
  a repeat changes (count, last_at and the entry's other fields), and a lower count than the
  stored one is a stale retry, which changes nothing.
- A batch is checked whole before anything is written, and written inside one savepoint: a
  refused batch leaves nothing behind.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel, select

from ledger.books import LedgerError, UnknownInvoice
from ledger.models import Invoice, UTCDateTime
from ledger.requests import TimelineBatch, TimelineEntry


class InvoiceEvent(SQLModel, table=True):
    """One entry of an invoice's timeline, at its position in the workflow's timeline."""

    __tablename__ = "invoice_event"
    __table_args__ = (
        sa.UniqueConstraint("invoice_id", "position"),
        sa.CheckConstraint("position >= 0", name="position_not_negative"),
        sa.CheckConstraint("count >= 1", name="count_positive"),
    )

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(foreign_key="invoice.id")
    position: int
    at: datetime = Field(sa_type=UTCDateTime)
    event: str = Field(max_length=64)
    detail: str = Field(default="", sa_type=sa.Text)
    channel: str | None = Field(default=None, max_length=16)
    template: str | None = Field(default=None, max_length=64)
    amount_minor: int | None = Field(default=None, sa_type=sa.BigInteger)
    count: int = 1
    last_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class TimelineConflict(LedgerError):
    """A batch that would rewrite or leave a hole in the timeline the ledger already holds."""


_BOUNDED_TEXT = ("event", "channel", "template")


# Built once: every closing invoice runs them.
_INVOICE_ID = select(Invoice.id).where(Invoice.number == sa.bindparam("number"))
_INVOICE_ID_FOR_UPDATE = _INVOICE_ID.with_for_update()
_STORED_FROM = select(InvoiceEvent).where(
    InvoiceEvent.invoice_id == sa.bindparam("invoice_id"),
    InvoiceEvent.position >= sa.bindparam("first"),
)
_HELD = sa.select(sa.func.count()).where(InvoiceEvent.invoice_id == sa.bindparam("invoice_id"))

# --- writing -------------------------------------------------------------------------------


def record_timeline(
    session: Session, batch: TimelineBatch, *, invoice_id: int | None = None
) -> int:
    """Store the batch's entries by position; how many entries the ledger now holds.

    That number is also the position the invoice's next new entry takes. Positions already
    stored are updated, never duplicated. `invoice_id`: the invoice's id, when the caller
    holds the invoice locked already.
    """
    number = batch.invoice_number
    if invoice_id is None:
        invoice_id = _invoice_id(session, number, for_update=True)
    for offset, entry in enumerate(batch.entries):
        _check_entry(number, batch.first_position + offset, entry)
    stored = {
        row.position: row
        for row in session.exec(
            _STORED_FROM, params={"invoice_id": invoice_id, "first": batch.first_position}
        )
    }
    # A batch from the start has read every stored entry already.
    held = len(stored) if batch.first_position == 0 else _entries_held(session, invoice_id)
    if batch.first_position > held:
        holds = f"positions 0 to {held - 1}" if held else "no entries"
        raise TimelineConflict(
            f"invoice {number}: the ledger holds timeline {holds}; a batch from position "
            f"{batch.first_position} would leave a gap"
        )
    for offset, entry in enumerate(batch.entries):
        row = stored.get(batch.first_position + offset)
        if row is not None:
            _check_same_event(number, row, entry)
    new_rows = []
    for offset, entry in enumerate(batch.entries):
        position = batch.first_position + offset
        row = stored.get(position)
        if row is None:
            new_rows.append({"invoice_id": invoice_id, "position": position} | entry.model_dump())
        elif entry.count >= row.count:
            _copy_repeatable_fields(row, entry)
            session.add(row)
    session.flush()
    if new_rows:
        # One executemany on the table: a closing invoice saves its whole story at once. ORM
        # objects for rows nothing reads again cost more than the write, and the ORM's bulk
        # insert splits the rows by which of their fields are empty.
        session.connection().execute(InvoiceEvent.__table__.insert(), new_rows)
    return max(held, batch.first_position + len(batch.entries))


def _copy_repeatable_fields(row: InvoiceEvent, entry: TimelineEntry) -> None:
    row.detail = entry.detail
    row.channel = entry.channel
    row.template = entry.template
    row.amount_minor = entry.amount_minor
    row.count = entry.count
    row.last_at = entry.last_at


def _check_entry(number: str, position: int, entry: TimelineEntry) -> None:
    where = f"invoice {number} timeline position {position}"
    if entry.at.utcoffset() is None:
        raise LedgerError(f"{where}: at {entry.at.isoformat()} must be timezone-aware")
    if entry.last_at is not None and entry.last_at.utcoffset() is None:
        raise LedgerError(f"{where}: last_at {entry.last_at.isoformat()} must be timezone-aware")
    if entry.count < 1:
        raise LedgerError(f"{where}: count must be at least 1, got {entry.count}")
    if not entry.event.strip():
        raise LedgerError(f"{where}: the event must be named")
    for field in _BOUNDED_TEXT:
        value = getattr(entry, field)
        limit = InvoiceEvent.__table__.c[field].type.length
        if value is not None and len(value) > limit:
            raise LedgerError(
                f"{where}: {field} {value[:20]!r}... is {len(value)} characters; "
                f"at most {limit} fit"
            )


def _check_same_event(number: str, row: InvoiceEvent, entry: TimelineEntry) -> None:
    if row.event != entry.event or row.at != entry.at:
        raise TimelineConflict(
            f"invoice {number} timeline position {row.position} holds {row.event!r} at "
            f"{row.at.isoformat()}; the batch has {entry.event!r} at {entry.at.isoformat()} "
            "there: a stored entry cannot be replaced by another"
        )


# --- reading -------------------------------------------------------------------------------


def read_timeline(session: Session, invoice_number: str) -> list[TimelineEntry]:
    """The invoice's timeline as the ledger holds it, in order; UnknownInvoice if none."""
    invoice_id = _invoice_id(session, invoice_number)
    rows = session.exec(
        select(InvoiceEvent)
        .where(InvoiceEvent.invoice_id == invoice_id)
        .order_by(InvoiceEvent.position)  # type: ignore[arg-type]
    )
    return [
        TimelineEntry(
            at=row.at,
            event=row.event,
            detail=row.detail,
            channel=row.channel,
            template=row.template,
            amount_minor=row.amount_minor,
            count=row.count,
            last_at=row.last_at,
        )
        for row in rows
    ]


def _invoice_id(session: Session, number: str, *, for_update: bool = False) -> int:
    # Flushes of one invoice (a retry racing its first attempt) queue up on PostgreSQL;
    # SQLite's BEGIN IMMEDIATE (ledger.db) already serializes writers.
    statement = _INVOICE_ID_FOR_UPDATE if for_update else _INVOICE_ID
    invoice_id = session.exec(statement, params={"number": number}).first()
    if invoice_id is None:
        raise UnknownInvoice(f"invoice {number!r} does not exist")
    return invoice_id


def _entries_held(session: Session, invoice_id: int) -> int:
    held = session.scalar(_HELD, {"invoice_id": invoice_id})
    return int(held or 0)
