"""A customer as a collector looks them up: contacts, consent per channel, the account's owner,
what is open per currency, and the latest messages. Read-only, a few queries whatever the
number of invoices; amounts are minor units of their currency.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session, select

from ledger.accounts import UnknownCustomer
from ledger.consent import address, opted_out, undeliverable
from ledger.models import Customer, Invoice, Message
from vocabulary import AWAITING_PAYMENT, CHANNELS, Channel

RECENT_MESSAGES = 10


class ChannelContact(BaseModel):
    channel: Channel
    address: str | None
    opted_out: bool
    undeliverable: str | None = None  # why the provider could not deliver there


class RecentMessage(BaseModel):
    at: datetime
    channel: Channel
    template: str
    status: str  # a MessageStatus
    invoice: str | None
    reason: str | None


class CustomerProfile(BaseModel):
    customer_id: str
    name: str
    timezone: str
    locale: str
    segment: str | None
    owner: str | None
    contacts: list[ChannelContact]
    open_invoices: int
    outstanding_minor: dict[str, int]  # currency -> balance of the open invoices
    recent_messages: list[RecentMessage]


def customer_profile(session: Session, customer_id: str) -> CustomerProfile:
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise UnknownCustomer(f"customer {customer_id!r} does not exist")
    open_rows = session.exec(
        select(Invoice.currency, sa.func.count(), sa.func.sum(Invoice.balance_minor))
        .where(Invoice.customer_id == customer_id, Invoice.status.in_(AWAITING_PAYMENT))
        .group_by(Invoice.currency)
        .order_by(Invoice.currency)
    ).all()
    messages = session.exec(
        select(Message, Invoice.number)
        .outerjoin(Invoice, Message.invoice_id == Invoice.id)
        .where(Message.customer_id == customer_id)
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(RECENT_MESSAGES)
    ).all()
    return CustomerProfile(
        customer_id=customer.id,
        name=customer.name,
        timezone=customer.timezone,
        locale=customer.locale,
        segment=customer.segment,
        owner=customer.owner_email,
        contacts=[
            ChannelContact(
                channel=channel,
                address=address(customer, channel),
                opted_out=opted_out(customer, channel),
                undeliverable=undeliverable(customer, channel),
            )
            for channel in CHANNELS
        ],
        open_invoices=sum(count for _, count, _ in open_rows),
        outstanding_minor={currency: int(total) for currency, _, total in open_rows},
        recent_messages=[
            RecentMessage(
                at=message.created_at,
                channel=message.channel,
                template=message.template,
                status=message.status,
                invoice=number,
                reason=message.reason,
            )
            for message, number in messages
        ],
    )
