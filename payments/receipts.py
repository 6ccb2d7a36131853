"""Emails to a payer about the portal: a checkout's receipt (received, pending bank debit,
failed) and a fresh pay link in place of an expired one.

They go the way every message goes: a row in the outbox table under its idempotency key,
rendered from `templates/messages/`, then delivered by the configured email channel, so the
same email is never sent twice. A fresh link only ever goes to the address on file.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import select

from activities.currency import format_money
from activities.delivery import PermanentDeliveryError, email_channel
from activities.email_message import OutgoingEmail
from activities.rendering import brand_of, brand_variables, language_of, templates
from ledger import checkouts
from ledger.db import session_scope
from ledger.models import Checkout, Customer, Message
from paylinks import make_pay_link
from payments import keys
from settings import Settings
from vocabulary import FINAL_MESSAGE_STATUSES, MessageStatus

RECEIPT_TEMPLATE = "checkout_receipt"
FRESH_LINK_TEMPLATE = "fresh_pay_link"


class ReceiptKind(StrEnum):
    RECEIVED = "received"
    PENDING = "pending"
    FAILED = "failed"


def send_checkout_receipt(
    settings: Settings, engine: sa.Engine, checkout_id: int, kind: ReceiptKind
) -> str:
    """Send the checkout's receipt of this kind once; its outbox status."""
    with session_scope(engine) as session:
        checkout = session.get(Checkout, checkout_id)
        assert checkout is not None
        items = checkouts.checkout_items(session, checkout_id)
        customer_id = checkout.customer_id
    return _send_once(
        settings,
        engine,
        key=keys.checkout_receipt(checkout_id, kind),
        customer_id=customer_id,
        template=RECEIPT_TEMPLATE,
        variables=lambda customer: receipt_variables(settings, checkout, customer, items, kind),
    )


def send_fresh_pay_link(settings: Settings, engine: sa.Engine, customer_id: str) -> str:
    """Email the customer a new pay link, at most once an hour, to the address on file."""
    hour = datetime.now(UTC).strftime("%Y-%m-%dT%H")
    return _send_once(
        settings,
        engine,
        key=keys.fresh_pay_link(customer_id, hour),
        customer_id=customer_id,
        template=FRESH_LINK_TEMPLATE,
        variables=lambda customer: fresh_link_variables(settings, customer),
    )


def fresh_link_variables(settings: Settings, customer: Customer) -> dict[str, Any]:
    return {
        "pay_link": make_pay_link(settings, customer.id, []),
        "valid_days": settings.pay_link_max_age_days,
    }


def _send_once(
    settings: Settings,
    engine: sa.Engine,
    *,
    key: str,
    customer_id: str,
    template: str,
    variables: Any,
) -> str:
    with session_scope(engine) as session:
        row = session.exec(select(Message).where(Message.idempotency_key == key)).first()
        if row is not None and row.status in FINAL_MESSAGE_STATUSES:
            return row.status
        customer = session.get(Customer, customer_id)
        if customer is None:
            return MessageStatus.SUPPRESSED
        row = row or Message(
            idempotency_key=key,
            customer_id=customer.id,
            channel="email",
            template=template,
            recipient=customer.email,
            status=MessageStatus.SENDING,
        )
        if not customer.email:
            row.status, row.reason = MessageStatus.SUPPRESSED, "no email address on file"
            session.add(row)
            return row.status
        email = render_email(settings, customer, template, variables(customer), key)
        row.subject = email.subject[:300]
        session.add(row)
    try:
        delivered = email_channel(settings).deliver(email)
        status, reason, provider_id = MessageStatus.SENT, None, delivered.provider_id
    except PermanentDeliveryError as refused:
        status, reason, provider_id = MessageStatus.FAILED, str(refused)[:200], None
    with session_scope(engine) as session:
        row = session.exec(select(Message).where(Message.idempotency_key == key)).one()
        row.status, row.reason = status, reason
        row.provider_id = provider_id[:200] if provider_id else None
        session.add(row)
    return status


def render_email(
    settings: Settings,
    customer: Customer,
    template: str,
    variables: dict[str, Any],
    idempotency_key: str,
) -> OutgoingEmail:
    """One of these emails to the customer, in the customer's language."""
    language = language_of(customer.locale)
    context = {
        "lang": language,
        "customer_name": customer.name,
        "company_name": settings.company_name,
        "unsubscribe_link": None,
        **brand_variables(brand_of(settings), settings.company_name),
        **variables,
    }
    env = templates(language)
    return OutgoingEmail(
        to=customer.email or "",
        subject=" ".join(env.get_template(f"{template}.subject.txt").render(context).split()),
        text=env.get_template(f"{template}.txt").render(context).strip() + "\n",
        html=env.get_template(f"{template}.html").render(context),
        idempotency_key=idempotency_key,
    )


def receipt_variables(
    settings: Settings, checkout: Checkout, customer: Customer, items: list, kind: ReceiptKind
) -> dict[str, Any]:
    def money(minor: int) -> str:
        return format_money(minor, checkout.currency, customer.locale)

    return {
        "kind": str(kind),
        "lines": [
            {
                "number": item.invoice_number,
                "amount": money(item.amount_minor),
                "reason": (item.reason_code or "").replace("_", " ")
                + (f": {item.note}" if item.note else ""),
                "reason_code": item.reason_code,
                "note": item.note,
            }
            for item in items
        ],
        "credit_minor": checkout.credit_minor,
        "credit": money(checkout.credit_minor),
        "surcharge_minor": checkout.surcharge_minor,
        "surcharge": money(checkout.surcharge_minor),
        "charged": money(checkout.charge_minor),
        "method": "bank account" if checkout.method == "us_bank_account" else "card",
        "method_kind": checkout.method,
        "reference": checkout.payment_intent_id or f"checkout {checkout.id}",
        "failure_reason": checkout.failure_reason or "the payment was declined",
        "pay_link": make_pay_link(settings, customer.id, []),
    }
