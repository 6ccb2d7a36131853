"""The outbox's bookkeeping: one `Message` row per job key, and the outcome written on it.

A row is created "sending" (or "suppressed", with the reason) before anything is delivered,
and becomes final ("sent", "suppressed", "failed") once the channel answered. A row whose
`sent_with_id` points at another row went out in that row's message; when the delivering
row is finished, every row it covers gets the same outcome.
"""

from __future__ import annotations

from sqlmodel import Session, select

from activities.message_jobs import MessageJob
from activities.models import ChannelResult
from ledger.models import Invoice, Message
from vocabulary import MessageStatus


def row_by_key(session: Session, key: str) -> Message | None:
    return session.exec(select(Message).where(Message.idempotency_key == key)).first()


def new_row(job: MessageJob, invoice: Invoice, recipient: str | None) -> Message:
    """A "sending" row for `job`, not yet added to any session."""
    return Message(
        idempotency_key=job.key,
        customer_id=invoice.customer_id,
        invoice_id=invoice.id,
        channel=job.channel,
        template=job.template,
        recipient=recipient,
        status=MessageStatus.SENDING,
    )


def result_of(row: Message) -> ChannelResult:
    return ChannelResult(
        channel=row.channel, status=row.status, reason=row.reason, recipient=row.recipient
    )


def mark_outcome(
    session: Session,
    key: str,
    status: MessageStatus,
    reason: str | None = None,
    provider_id: str | None = None,
) -> ChannelResult:
    """Mark the delivering row, and every row its message covered, with the outcome."""
    row = session.exec(select(Message).where(Message.idempotency_key == key)).one()
    covered = [row]
    if row.sent_with_id is not None:
        covered = list(session.exec(select(Message).where(Message.sent_with_id == row.id)).all())
    for covered_row in covered:
        covered_row.status = status
        # Sent as a group, each row keeps its "in one message with ..." reason.
        if reason is not None or row.sent_with_id is None:
            covered_row.reason = reason
        session.add(covered_row)
    row.provider_id = provider_id[:200] if provider_id else None
    session.add(row)
    return result_of(row)
