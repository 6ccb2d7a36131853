"""Collectors' notes and logged calls on an invoice: kept in the ledger once per key, each with
its audit event, so the case tells them for as long as the books are kept."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, Session, SQLModel, select

from ledger.books import IdempotencyConflict, load_invoice, record_audit, write_once
from ledger.models import UTCDateTime, utcnow
from ledger.requests import NoteRequest


class InvoiceNote(SQLModel, table=True):
    """A collector's note or logged call on one invoice; written once per idempotency key."""

    __tablename__ = "invoice_note"

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(foreign_key="invoice.id", index=True)
    kind: str = Field(max_length=16, description="a NoteKind: note or call")
    text: str = Field(max_length=4000)
    actor: str = Field(max_length=128)
    idempotency_key: str = Field(max_length=200, unique=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


def record_note(session: Session, req: NoteRequest) -> int:
    """The note's id; a repeated key returns the first note's id and writes nothing."""

    def write() -> int:
        invoice = load_invoice(session, req.invoice_number)
        note = InvoiceNote(
            invoice_id=invoice.id,
            kind=req.kind,
            text=req.text,
            actor=req.actor,
            idempotency_key=req.idempotency_key,
        )
        session.add(note)
        session.flush()
        record_audit(
            session,
            req.actor,
            f"{req.kind}_logged",
            invoice.id,
            {"note_id": note.id, "kind": req.kind, "idempotency_key": req.idempotency_key},
        )
        return note.id

    def repeat(note: InvoiceNote) -> int:
        if note.text != req.text:
            raise IdempotencyConflict(
                f"note key {req.idempotency_key!r} was already used for another note"
            )
        return note.id

    return write_once(session, InvoiceNote, req.idempotency_key, write, repeat)


def notes_of(session: Session, invoice_id: int) -> list[InvoiceNote]:
    return list(
        session.exec(
            select(InvoiceNote).where(InvoiceNote.invoice_id == invoice_id).order_by(InvoiceNote.id)
        )
    )
