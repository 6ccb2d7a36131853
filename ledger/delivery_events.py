"""What providers tell of a message after it left: delivered, opened, clicked, bounced, ...

Invariants:
- An event is recorded once per provider and event id; a repeat changes nothing.
- An event names its message by the idempotency key it was sent with, or by the provider's
  own id of it; one for a message the ledger does not have is kept (with no message) so that
  a repeat is still recognised.
- `message.delivery` only moves forward (delivered, then opened, then clicked) except to a
  failure, which always shows: events arrive in any order.
- The message's invoices are those of every row it delivered (a grouped reminder has several).
- `told_at` is set once the message's invoices have been told of the event (or there was
  nothing to tell); until then a repeat of the event hands it back, marked as a repeat, so
  whoever tells it tells it again without acting on it twice in the ledger.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Field, Session, SQLModel, select

from ledger.columns import UTCDateTime
from ledger.models import Invoice, Message
from vocabulary import DELIVERY_FAILURES, DeliveryKind

# The forward order of the good news; failures rank above them all.
_RANK = {DeliveryKind.DELIVERED: 1, DeliveryKind.OPENED: 2, DeliveryKind.CLICKED: 3}


class DeliveryEvent(SQLModel, table=True):
    __tablename__ = "delivery_event"
    __table_args__ = (sa.UniqueConstraint("provider", "event_id"),)

    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(max_length=16)
    event_id: str = Field(max_length=100)
    message_id: int | None = Field(default=None, foreign_key="message.id", index=True)
    kind: str = Field(max_length=16, description="a DeliveryKind")
    at: datetime = Field(sa_type=UTCDateTime)
    detail: str = Field(default="", max_length=500)
    told_at: datetime | None = Field(
        default=None,
        sa_type=UTCDateTime,
        index=True,  # the untold few are looked for every minute among every event kept
        description="when its invoices were told of it",
    )


class RecordedDelivery(BaseModel):
    """An event to tell, and what it concerns: nothing when the message is unknown."""

    provider: str
    event_id: str
    kind: DeliveryKind
    detail: str = ""
    customer_id: str | None
    channel: str | None
    invoice_numbers: list[str]
    message_key: str | None = None
    template: str | None = None
    repeat: bool = Field(False, description="recorded before, not yet told")


def record_delivery_event(
    session: Session,
    *,
    provider: str,
    event_id: str,
    message_key: str | None = None,
    provider_message_id: str | None = None,
    kind: DeliveryKind,
    at: datetime,
    detail: str = "",
) -> RecordedDelivery | None:
    """Record the event; None when it was recorded and told before. An event recorded but
    not told yet comes back as a repeat, with the ledger left as it was."""
    seen = session.exec(
        select(DeliveryEvent).where(
            DeliveryEvent.provider == provider, DeliveryEvent.event_id == event_id
        )
    ).first()
    if seen is not None:
        return None if seen.told_at is not None else _concerning(session, seen, repeat=True)
    message = None
    if message_key:
        message = session.exec(
            select(Message).where(Message.idempotency_key == message_key)
        ).first()
    elif provider_message_id:
        message = session.exec(
            select(Message).where(Message.provider_id == provider_message_id)
        ).first()
    event = DeliveryEvent(
        provider=provider,
        event_id=event_id,
        message_id=message.id if message else None,
        kind=kind,
        at=at,
        detail=detail[:500],
        # An event of a message the ledger does not have concerns no invoice.
        told_at=None if message else datetime.now(UTC),
    )
    session.add(event)
    if message is not None and _moves_forward(message.delivery, kind):
        message.delivery = kind
        session.add(message)
    return _concerning(session, event, message=message)


def mark_told(session: Session, recorded: RecordedDelivery) -> None:
    session.execute(
        sa.update(DeliveryEvent)
        .where(
            DeliveryEvent.provider == recorded.provider,  # type: ignore[arg-type]
            DeliveryEvent.event_id == recorded.event_id,  # type: ignore[arg-type]
        )
        .values(told_at=datetime.now(UTC))
    )


def untold_events(
    session: Session, happened_before: datetime, limit: int | None = None
) -> list[RecordedDelivery]:
    """Events from before the moment whose invoices were never told, oldest first."""
    events = session.exec(
        select(DeliveryEvent)
        .where(*_untold_before(happened_before))
        .order_by(DeliveryEvent.at, DeliveryEvent.id)
        .limit(limit)
    ).all()
    return [_concerning(session, event, repeat=True) for event in events]


def count_untold(session: Session, happened_before: datetime) -> int:
    return session.exec(
        select(sa.func.count()).select_from(DeliveryEvent).where(*_untold_before(happened_before))
    ).one()


def _untold_before(happened_before: datetime) -> tuple[sa.ColumnElement[bool], ...]:
    return (
        DeliveryEvent.told_at.is_(None),  # type: ignore[union-attr]
        DeliveryEvent.at < happened_before,
    )


def _concerning(
    session: Session, event: DeliveryEvent, *, message: Message | None = None, repeat: bool = False
) -> RecordedDelivery:
    """The event with the message and invoices it concerns."""
    if message is None and event.message_id is not None:
        message = session.get(Message, event.message_id)
    recorded = RecordedDelivery(
        provider=event.provider,
        event_id=event.event_id,
        kind=DeliveryKind(event.kind),
        detail=event.detail,
        customer_id=None,
        channel=None,
        invoice_numbers=[],
        repeat=repeat,
    )
    if message is None:
        return recorded
    numbers = session.exec(
        select(Invoice.number)
        .join(Message, Message.invoice_id == Invoice.id)
        .where(sa.or_(Message.id == message.id, Message.sent_with_id == message.id))
        .order_by(Invoice.number)
    ).all()
    return recorded.model_copy(
        update={
            "customer_id": message.customer_id,
            "channel": message.channel,
            "invoice_numbers": sorted(set(numbers)),
            "message_key": message.idempotency_key,
            "template": message.template,
        }
    )


def _moves_forward(current: str | None, kind: DeliveryKind) -> bool:
    if kind in DELIVERY_FAILURES or current is None:
        return True
    if current in DELIVERY_FAILURES:
        return False
    return _RANK.get(kind, 0) > _RANK.get(DeliveryKind(current), 0)
