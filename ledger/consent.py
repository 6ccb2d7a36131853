"""What a customer agreed to receive, per channel, and where they cannot be reached.

Reminders never go out on an opted-out channel; email receipts are transactional and still
do; a number that replied STOP gets no SMS until it replies START. An address a provider could
not deliver to is marked with why, until an import or edit changes it.

Invariants: a change is recorded once (repeating it changes nothing and adds no audit event);
every change is audited with who made it and through what.
"""

from __future__ import annotations

from sqlmodel import Session, select

from ledger.accounts import UnknownCustomer
from ledger.books import record_audit
from ledger.models import Customer
from vocabulary import CHANNELS, Channel

# The customer's columns for each channel.
ADDRESS_FIELD: dict[str, str] = {"email": "email", "sms": "phone"}
OPT_OUT_FIELD: dict[str, str] = {"email": "email_opt_out", "sms": "sms_opt_out"}
UNDELIVERABLE_FIELD: dict[str, str] = {"email": "email_undeliverable", "sms": "phone_undeliverable"}


def address(customer: Customer, channel: Channel) -> str | None:
    return getattr(customer, ADDRESS_FIELD[channel])


def opted_out(customer: Customer, channel: Channel) -> bool:
    return getattr(customer, OPT_OUT_FIELD[channel])


def undeliverable(customer: Customer, channel: Channel) -> str | None:
    """Why the provider could not deliver to the customer's `channel` address; None if it can."""
    return getattr(customer, UNDELIVERABLE_FIELD[channel])


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
    return _set_opt_out(session, customer_id, channel, True, actor, via, invoice_id)


def opt_in(session: Session, customer_id: str, channel: Channel, *, actor: str, via: str) -> bool:
    """Allow reminders on `channel` again (an SMS reply START); False if they were allowed."""
    return _set_opt_out(session, customer_id, channel, False, actor, via, None)


def customers_with_phone(session: Session, phone: str) -> list[str]:
    """The ids of the customers whose SMS go to `phone` (E.164), in order."""
    return list(
        session.exec(select(Customer.id).where(Customer.phone == phone).order_by(Customer.id))
    )


def _set_opt_out(
    session: Session,
    customer_id: str,
    channel: Channel,
    opting_out: bool,
    actor: str,
    via: str,
    invoice_id: int | None,
) -> bool:
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}; expected one of {', '.join(CHANNELS)}")
    customer = session.get(Customer, customer_id, with_for_update=True)
    if customer is None:
        raise UnknownCustomer(f"customer {customer_id!r} does not exist")
    if opted_out(customer, channel) == opting_out:
        return False
    setattr(customer, OPT_OUT_FIELD[channel], opting_out)
    session.add(customer)
    detail = {"customer": customer_id, "channel": channel, "via": via}
    record_audit(session, actor, "opted_out" if opting_out else "opted_in", invoice_id, detail)
    return True


def mark_undeliverable(
    session: Session, customer_id: str, channel: Channel, reason: str, *, actor: str
) -> bool:
    """Mark the customer's address on `channel` as one the provider could not deliver to;
    False if it was marked already."""
    customer = session.get(Customer, customer_id, with_for_update=True)
    if customer is None:
        raise UnknownCustomer(f"customer {customer_id!r} does not exist")
    if undeliverable(customer, channel) is not None:
        return False
    setattr(customer, UNDELIVERABLE_FIELD[channel], (reason or "undeliverable")[:200])
    session.add(customer)
    detail = {"customer": customer_id, "channel": channel, "reason": reason}
    record_audit(session, actor, "contact_undeliverable", None, detail)
    return True


def clear_marks_of_changed_addresses(customer: Customer, changes: dict[str, object]) -> None:
    """An import or edit that gives a new address clears what was known of the old one."""
    if "email" in changes:
        customer.email_undeliverable = None
    if "phone" in changes:
        customer.phone_undeliverable = None
