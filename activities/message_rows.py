"""The outbox's bookkeeping: one `Message` row per job key, and the outcome written on it.

A row is created "sending" (or "suppressed", with the reason) before anything is delivered,
and becomes final ("sent", "suppressed", "failed") once the channel answered. A row whose
`sent_with_id` points at another row went out in that row's message; when the delivering
row is finished, every row it covers gets the same outcome.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Session, select

from activities.message_jobs import MessageJob
from activities.models import ChannelResult
from ledger.columns import utcnow
from ledger.models import Invoice, Message
from vocabulary import MessageStatus

_MESSAGES = Message.__table__
# Built once: on SQLite, building a statement costs more than running it.
_ROW_BY_KEY = select(Message).where(Message.idempotency_key == sa.bindparam("key"))
_KEY_HELD = sa.select(_MESSAGES.c.id).where(_MESSAGES.c.idempotency_key == sa.bindparam("key"))
_INSERT = sa.insert(_MESSAGES)
_ROWS_BY_KEYS = select(Message).where(
    Message.idempotency_key.in_(sa.bindparam("keys", expanding=True))  # type: ignore[attr-defined]
)


def row_by_key(session: Session, key: str) -> Message | None:
    # Nearly every key is new, and asking the table costs a fraction of loading an ORM row.
    if session.connection().execute(_KEY_HELD, {"key": key}).first() is None:
        return None
    return session.exec(_ROW_BY_KEY, params={"key": key}).first()


def rows_by_key(session: Session, keys: list[str]) -> dict[str, Message]:
    """The rows recorded for any of `keys`, by key."""
    rows = session.exec(_ROWS_BY_KEYS, params={"keys": keys})
    return {row.idempotency_key: row for row in rows}


def new_row(job: MessageJob, invoice: Invoice, recipient: str | None) -> Message:
    """A "sending" row for `job`, not yet added to any session."""
    return Message(**_columns(job, invoice, recipient), status=MessageStatus.SENDING)


def _columns(job: MessageJob, invoice: Invoice, recipient: str | None) -> dict[str, object]:
    """What a new row for `job` holds, whatever its status."""
    return {
        "idempotency_key": job.key,
        "customer_id": invoice.customer_id,
        "invoice_id": invoice.id,
        "channel": job.channel,
        "template": job.template,
        "recipient": recipient,
        "created_at": utcnow(),
    }


def save_row(
    session: Session,
    row: Message | None,
    job: MessageJob,
    invoice: Invoice,
    recipient: str | None,
    status: MessageStatus,
    *,
    reason: str | None = None,
    subject: str | None = None,
) -> ChannelResult:
    """Record `job` with this status on its row (`row`, the one found for its key), or on a
    new row; what the row now says.

    A new row is written with the table's own statement, not an ORM object: every message
    sent pays for this step, and nothing in the session reads the row again. An existing row
    keeps the recipient and subject it has unless given new ones."""
    if row is not None:
        row.status, row.reason = status, reason
        row.recipient = recipient or row.recipient
        row.subject = subject or row.subject
        session.add(row)
        return result_of(row)
    values = {"status": status, "reason": reason, "subject": subject}
    session.connection().execute(_INSERT, _columns(job, invoice, recipient) | values)
    return ChannelResult(channel=job.channel, status=status, reason=reason, recipient=recipient)


def result_of(row: Message) -> ChannelResult:
    return ChannelResult(
        channel=row.channel, status=row.status, reason=row.reason, recipient=row.recipient
    )


_DELIVERING = sa.select(
    _MESSAGES.c.id, _MESSAGES.c.sent_with_id, _MESSAGES.c.channel, _MESSAGES.c.recipient
).where(_MESSAGES.c.idempotency_key == sa.bindparam("key"))
_ONE = _MESSAGES.c.id == sa.bindparam("row_id")
_OUTCOME = (
    sa.update(_MESSAGES)
    .where(_ONE)
    .values(
        status=sa.bindparam("new_status"),
        reason=sa.bindparam("new_reason"),
        provider_id=sa.bindparam("new_provider_id"),
    )
)
_PROVIDER = sa.update(_MESSAGES).where(_ONE).values(provider_id=sa.bindparam("new_provider_id"))
_COVERED = _MESSAGES.c.sent_with_id == sa.bindparam("row_id")
_GROUP_OUTCOME = sa.update(_MESSAGES).where(_COVERED)
_GROUP_RESULTS = sa.select(
    _MESSAGES.c.idempotency_key,
    _MESSAGES.c.channel,
    _MESSAGES.c.status,
    _MESSAGES.c.reason,
    _MESSAGES.c.recipient,
).where(_COVERED)


def mark_outcome(
    session: Session,
    key: str,
    status: MessageStatus,
    reason: str | None = None,
    provider_id: str | None = None,
) -> dict[str, ChannelResult]:
    """Mark the delivering row, and every row its message covered, with the outcome; what
    each row marked came to, by its key.

    Written with the table's own statements, built once, not through ORM objects: every
    message sent pays for this step, and nothing in the session reads these rows again."""
    db = session.connection()
    row = db.execute(_DELIVERING, {"key": key}).one()
    provider = provider_id[:200] if provider_id else None
    if row.sent_with_id is None:
        db.execute(
            _OUTCOME,
            {"row_id": row.id, "new_status": status, "new_reason": reason,
             "new_provider_id": provider},
        )  # fmt: skip
        return {
            key: ChannelResult(
                channel=row.channel, status=status, reason=reason, recipient=row.recipient
            )
        }
    # Sent as a group, each row keeps its "in one message with ..." reason unless the
    # outcome has one of its own.
    outcome = {"status": status} if reason is None else {"status": status, "reason": reason}
    db.execute(_GROUP_OUTCOME.values(outcome), {"row_id": row.id})
    db.execute(_PROVIDER, {"row_id": row.id, "new_provider_id": provider})
    return {
        marked.idempotency_key: ChannelResult(
            channel=marked.channel,
            status=marked.status,
            reason=marked.reason,
            recipient=marked.recipient,
        )
        for marked in db.execute(_GROUP_RESULTS, {"row_id": row.id})
    }
