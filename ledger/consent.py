"""What a customer agreed to receive: reminders per channel. Receipts are transactional and
go out whatever the customer opted out of; reminders never go out on an opted-out channel.

Invariants: an opt-out is recorded once (a repeated one changes nothing and adds no audit
event); every change is audited with who made it and through what.
"""

from __future__ import annotations

from sqlmodel import Session

from ledger.accounts import UnknownCustomer
from ledger.books import record_audit
from ledger.models import Customer
from vocabulary import CHANNELS, Channel


def opt_out(
    session: Session,
    customer_id: str,
    channel: Channel,
    *,
    actor: str,
    via: str,
    invoice_id: int | None = None,
) -> bool:
    """Stop reminders to the customer on `channel`; False if they had opted out already.
    `via` says how (an unsubscribe link, the provider's refusal); `invoice_id` the invoice
    whose message told us, if one did."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}; expected one of {', '.join(CHANNELS)}")
    customer = session.get(Customer, customer_id, with_for_update=True)
    if customer is None:
        raise UnknownCustomer(f"customer {customer_id!r} does not exist")
    field = f"{channel}_opt_out"
    if getattr(customer, field):
        return False
    setattr(customer, field, True)
    session.add(customer)
    detail = {"customer": customer_id, "channel": channel, "via": via}
    record_audit(session, actor, "opted_out", invoice_id, detail)
    return True
