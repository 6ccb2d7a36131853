"""A payer's checkout: the invoices and amounts they chose, turned into one Stripe payment.

Invariants:
- One checkout is one currency, one customer, one request id: the same request id again
  answers the same checkout and the same PaymentIntent (the ledger's unique key and Stripe's
  idempotency key), so a double submit cannot charge twice.
- The customer's credit is used first; a checkout that credit covers whole needs no payment
  and settles at once.
- Money moves only when Stripe says so (`payments.settlement`); this module never applies it.
"""

from __future__ import annotations

import asyncio
import uuid
from decimal import ROUND_DOWN

from pydantic import BaseModel
from sqlmodel import select

from ledger import checkout_drafts, checkout_events, checkouts
from ledger.currencies import currency_exponent
from ledger.db import session_scope
from ledger.models import Checkout, Customer, Invoice, PaymentMethodKind
from payments import keys
from payments.portal_events import note_in_background
from payments.services import PaymentServices
from payments.settlement import settle
from payments.stripe_gateway import IntentInfo, SavedCard, SetupInfo
from workflows.models import PortalEventKind


class CheckoutStarted(BaseModel):
    checkout_id: int
    payment_intent: str | None
    client_secret: str | None
    status: str
    currency: str
    items_minor: int
    credit_minor: int
    surcharge_minor: int
    charge_minor: int


async def start_checkout(
    services: PaymentServices, draft: checkout_drafts.CheckoutDraft
) -> CheckoutStarted:
    """Open the checkout (or find it again by request id) and its PaymentIntent."""
    settings = services.settings
    draft = draft.model_copy(
        update={
            "surcharge_percent": settings.card_surcharge_percent,
            "surcharge_cap_minor": _cap_minor(services, draft),
        }
    )
    with session_scope(services.engine) as session:
        checkout = checkouts.open_checkout(session, draft)
        customer = session.get(Customer, checkout.customer_id)
        assert customer is not None
    if checkout.charge_minor == 0:
        with session_scope(services.engine) as session:
            items = checkouts.checkout_items(session, checkout.id)
        await settle(
            services, checkout, items, request_id=keys.settled_without_provider(checkout.id)
        )
        return _started(checkout, None, "succeeded")
    # The Stripe SDK blocks: keep the web app's event loop free while it talks to Stripe.
    intent = await asyncio.to_thread(_intent_for, services, checkout, customer)
    return _started(checkout, intent, intent.status)


def _intent_for(services: PaymentServices, checkout: Checkout, customer: Customer) -> IntentInfo:
    gateway = services.gateway
    if checkout.payment_intent_id:
        return gateway.retrieve_payment_intent(checkout.payment_intent_id)
    stripe_customer = _stripe_customer(services, customer)
    intent = gateway.create_payment_intent(
        amount_minor=checkout.charge_minor,
        currency=checkout.currency,
        method=checkout.method,
        stripe_customer_id=stripe_customer,
        metadata={"dunwise_checkout": str(checkout.id), "dunwise_customer": customer.id},
        idempotency_key=keys.stripe_payment_intent(checkout.id),
    )
    with session_scope(services.engine) as session:
        checkout_events.attach_payment_intent(session, checkout.id, intent.id)
    checkout.payment_intent_id = intent.id
    return intent


def _stripe_customer(services: PaymentServices, customer: Customer) -> str:
    stripe_id = services.gateway.ensure_customer(
        customer_id=customer.id,
        name=customer.name,
        email=customer.email,
        existing_id=customer.stripe_customer_id,
    )
    if stripe_id != customer.stripe_customer_id:
        with session_scope(services.engine) as session:
            checkouts.set_stripe_customer_id(session, customer.id, stripe_id)
    return stripe_id


def card_setup(services: PaymentServices, customer_id: str) -> SetupInfo:
    """A SetupIntent for the payer's card form: the card is saved to their Stripe customer."""
    with session_scope(services.engine) as session:
        customer = session.get(Customer, customer_id)
        assert customer is not None
    stripe_customer = _stripe_customer(services, customer)
    return services.gateway.create_setup_intent(
        stripe_customer_id=stripe_customer, idempotency_key=f"dunwise-setup-{uuid.uuid4()}"
    )


def saved_cards(services: PaymentServices, customer_id: str) -> list[SavedCard]:
    with session_scope(services.engine) as session:
        customer = session.get(Customer, customer_id)
        stripe_id = customer.stripe_customer_id if customer else None
    return services.gateway.saved_cards(stripe_id) if stripe_id else []


def pay_with_card(
    services: PaymentServices, customer_id: str, checkout_id: int, payment_method_id: str
) -> IntentInfo:
    """Charge a saved card of this customer for the checkout; PaymentDeclined if refused."""
    with session_scope(services.engine) as session:
        checkout = checkouts.get_checkout(session, customer_id, checkout_id)
        customer = session.get(Customer, customer_id)
        assert customer is not None
    if checkout.method != PaymentMethodKind.CARD or not checkout.payment_intent_id:
        raise checkout_drafts.CheckoutItemError(0, "method", "this checkout is not paid by card")
    return services.gateway.pay_with_saved_method(
        payment_intent_id=checkout.payment_intent_id,
        payment_method_id=payment_method_id,
        stripe_customer_id=_stripe_customer(services, customer),
    )


def _cap_minor(services: PaymentServices, draft: checkout_drafts.CheckoutDraft) -> int | None:
    """The surcharge cap (a setting in major units) in minor units of the checkout's currency."""
    cap = services.settings.card_surcharge_cap
    if cap is None or not draft.lines:
        return None
    with session_scope(services.engine) as session:
        currency = session.exec(
            select(Invoice.currency).where(Invoice.number == draft.lines[0].invoice_number)
        ).first()
    if currency is None:
        return None  # the ledger names the unknown invoice
    return int((cap.scaleb(currency_exponent(currency))).to_integral_value(ROUND_DOWN))


def _started(checkout: Checkout, intent: IntentInfo | None, status: str) -> CheckoutStarted:
    return CheckoutStarted(
        checkout_id=checkout.id,
        payment_intent=intent.id if intent else None,
        client_secret=intent.client_secret if intent else None,
        status=status,
        currency=checkout.currency,
        items_minor=checkout.items_minor,
        credit_minor=checkout.credit_minor,
        surcharge_minor=checkout.surcharge_minor,
        charge_minor=checkout.charge_minor,
    )


async def note_declined(
    services: PaymentServices, customer_id: str, checkout_id: int, reason: str
) -> None:
    """A declined card goes on the invoices' timelines: the collector sees the payer tried."""
    with session_scope(services.engine) as session:
        checkouts.get_checkout(session, customer_id, checkout_id)
        numbers = [item.invoice_number for item in checkouts.checkout_items(session, checkout_id)]
    note_in_background(services, numbers, PortalEventKind.PAYMENT_DECLINED, reason)
