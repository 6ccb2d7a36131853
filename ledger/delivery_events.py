"""What providers tell of a message after it left: delivered, opened, clicked, bounced, ...

Invariants:
- An event is recorded once per provider and event id; a repeat changes nothing.
- An event names its message by the idempotency key it was sent with, or by the provider's
  own id of it; one for a message the ledger does not have is kept (with no message) so that
  a repeat is still recognised.
- `message.delivery` only moves forward (delivered, then opened, then clicked) except to a
  failure, which always shows: events arrive in any order.
- The message's invoices are those of every row it delivered (a grouped reminder has several).
"""

from __future__ import annotations

from datetime import datetime

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


class RecordedDelivery(BaseModel):
    """A new event, and what it concerns: nothing when the message is unknown."""

    kind: DeliveryKind
    customer_id: str | None
    channel: str | None
    invoice_numbers: list[str]
    message_key: str | None = None
    template: str | None = None


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
    """Record the event; None when it was recorded before."""
    seen = session.exec(
        select(DeliveryEvent.id).where(
            DeliveryEvent.provider == provider, DeliveryEvent.event_id == event_id
        )
    ).first()
    if seen is not None:
        return None
    message = None
    if message_key:
        message = session.exec(
            select(Message).where(Message.idempotency_key == message_key)
        ).first()
    elif provider_message_id:
        message = session.exec(
            select(Message).where(Message.provider_id == provider_message_id)
        ).first()
    session.add(
        DeliveryEvent(
            provider=provider,
            event_id=event_id,
            message_id=message.id if message else None,
            kind=kind,
            at=at,
            detail=detail[:500],
        )
    )
    if message is None:
        return RecordedDelivery(kind=kind, customer_id=None, channel=None, invoice_numbers=[])
    if _moves_forward(message.delivery, kind):
        message.delivery = kind
        session.add(message)
    numbers = session.exec(
        select(Invoice.number)
        .join(Message, Message.invoice_id == Invoice.id)
        .where(sa.or_(Message.id == message.id, Message.sent_with_id == message.id))
        .order_by(Invoice.number)
    ).all()
    return RecordedDelivery(
        kind=kind,
        customer_id=message.customer_id,
        channel=message.channel,
        invoice_numbers=sorted(set(numbers)),
        message_key=message.idempotency_key,
        template=message.template,
    )


def _moves_forward(current: str | None, kind: DeliveryKind) -> bool:
    if kind in DELIVERY_FAILURES or current is None:
        return True
    if current in DELIVERY_FAILURES:
        return False
    return _RANK.get(kind, 0) > _RANK.get(DeliveryKind(current), 0)
