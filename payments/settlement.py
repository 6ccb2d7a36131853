"""Stripe's word on a checkout, carried into the ledger and the invoice workflows.

Invariants:
- Every effect is keyed by Stripe's event id (the invoice workflows' request id) or by the
  payment intent, so a duplicated event changes nothing; an event is marked processed only
  after all its effects, so a failure half-way is retried whole by Stripe and lands once.
- Order does not matter: a checkout's status only moves forward (`ledger.checkouts`); a
  processing or failed event after success changes nothing; a refund or dispute that comes
  before the success it takes back is answered `NotYet` (HTTP 409), and Stripe sends it again.
- Money for an invoice that can no longer take it (paid, closed, its workflow gone) becomes
  the customer's credit, never an error. Customer credit a checkout applied is paid first.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from invoices import restart_from_ledger, send_request, workflow_id
from ledger import checkout_events, checkouts, reversals, unapplied
from ledger.db import session_scope
from ledger.models import Checkout, CheckoutItem, CheckoutStatus, ShortPayReason
from ledger.operations import PAID_FROM_CREDIT
from payments import keys
from payments.receipts import ReceiptKind, send_checkout_receipt
from payments.services import PaymentServices
from payments.stripe_webhooks import StripeEventKind
from workflows.invoice import InvoiceWorkflow
from workflows.models import (
    BalanceReopened,
    PaymentFailed,
    PaymentPending,
    PaymentReceived,
)

log = logging.getLogger(__name__)
ACTOR = "stripe"


class NotYet(Exception):
    """The event takes back a payment that has not landed yet: Stripe should send it again."""


async def handle_event(services: PaymentServices, event: dict[str, Any]) -> str:
    """Apply one verified Stripe event; what was done, in words."""
    event_id, kind = event["id"], event["type"]
    with session_scope(services.engine) as session:
        if checkout_events.stripe_event_seen(session, event_id):
            return f"event {event_id} was handled already"
    obj = event["data"]["object"]
    intent_id = obj.get("payment_intent") if kind.startswith("charge.") else obj.get("id")
    with session_scope(services.engine) as session:
        checkout = checkouts.checkout_by_intent(session, intent_id) if intent_id else None
        items = checkouts.checkout_items(session, checkout.id) if checkout else []
    if checkout is None:
        outcome = f"{kind} for {intent_id}: not a dunwise checkout; ignored"
    else:
        outcome = await _apply(services, event_id, kind, obj, checkout, items)
    with session_scope(services.engine) as session:
        checkout_events.record_stripe_event(session, event_id, kind, intent_id)
    return outcome


async def _apply(
    services: PaymentServices,
    event_id: str,
    kind: str,
    obj: dict[str, Any],
    checkout: Checkout,
    items: list[CheckoutItem],
) -> str:
    match kind:
        case StripeEventKind.SUCCEEDED:
            return await settle(services, checkout, items, request_id=event_id)
        case StripeEventKind.PROCESSING:
            return await _pending(services, checkout, items, event_id)
        case StripeEventKind.FAILED:
            error = obj.get("last_payment_error") or {}
            reason = error.get("message") or "the payment failed"
            return await _failed(services, checkout, items, event_id, reason)
        case StripeEventKind.REFUNDED:
            refunded = int(obj.get("amount_refunded") or 0)
            return await _take_back(services, checkout, items, refunded, "refund")
        case StripeEventKind.DISPUTE_CREATED:
            disputed = int(obj.get("amount") or 0)
            return await _take_back(
                services, checkout, items, disputed, "chargeback", dispute_id=str(obj["id"])
            )
    return f"{kind}: not an event dunwise acts on"


async def settle(
    services: PaymentServices, checkout: Checkout, items: list[CheckoutItem], *, request_id: str
) -> str:
    """Apply a checkout's money to its invoices: the customer's credit first, then the charge."""
    if checkout.status == CheckoutStatus.SUCCEEDED:
        return f"checkout {checkout.id} was settled already"
    credit_left = checkout.credit_minor
    for item in items:
        from_credit = min(credit_left, item.amount_minor)
        credit_left -= from_credit
        if from_credit:
            await _pay(
                services,
                checkout,
                item,
                from_credit,
                PAID_FROM_CREDIT,
                keys.credit_request(request_id),
            )
        if item.amount_minor - from_credit:
            await _pay(
                services,
                checkout,
                item,
                item.amount_minor - from_credit,
                checkout.method,
                request_id,
            )
    with session_scope(services.engine) as session:
        checkout_events.set_checkout_status(session, checkout.id, CheckoutStatus.SUCCEEDED)
    await _send_receipt(services, checkout, ReceiptKind.RECEIVED)
    return f"checkout {checkout.id} paid: {', '.join(i.invoice_number for i in items)}"


async def _pay(
    services: PaymentServices,
    checkout: Checkout,
    item: CheckoutItem,
    amount_minor: int,
    method: str,
    request_id: str,
) -> None:
    payment = PaymentReceived(
        amount_minor=amount_minor,
        currency=checkout.currency,
        method=method,
        reference=checkout.payment_intent_id or f"checkout-{checkout.id}",
        reason=_short_pay_reason(item),
        actor=f"portal:{checkout.customer_id}",
    )
    if await _ask(
        services, item.invoice_number, InvoiceWorkflow.record_payment, payment, request_id
    ):
        return
    if method == PAID_FROM_CREDIT:
        return  # the credit was never spent: it stays the customer's
    with session_scope(services.engine) as session:
        unapplied.credit_unapplied_payment(
            session,
            customer_id=checkout.customer_id,
            currency=checkout.currency,
            amount_minor=amount_minor,
            method=method,
            reference=payment.reference,
            idempotency_key=keys.unapplied_payment(item.invoice_number, request_id),
            actor=ACTOR,
        )


def _short_pay_reason(item: CheckoutItem) -> str | None:
    if item.reason_code is None:
        return None
    label = ShortPayReason(item.reason_code).value.replace("_", " ")
    return f"short payment, {label}" + (f": {item.note}" if item.note else "")


async def _pending(
    services: PaymentServices, checkout: Checkout, items: list[CheckoutItem], event_id: str
) -> str:
    with session_scope(services.engine) as session:
        moved = checkout_events.set_checkout_status(session, checkout.id, CheckoutStatus.PROCESSING)
    if not moved:
        return f"checkout {checkout.id} is {checkout.status}: processing changes nothing"
    for item in items:
        pending = PaymentPending(
            reference=checkout.payment_intent_id or "",
            amount_minor=item.amount_minor,
            method=checkout.method,
        )
        await _ask(
            services, item.invoice_number, InvoiceWorkflow.payment_pending, pending, event_id
        )
    await _send_receipt(services, checkout, ReceiptKind.PENDING)
    return f"checkout {checkout.id} pending: reminders wait"


async def _failed(
    services: PaymentServices,
    checkout: Checkout,
    items: list[CheckoutItem],
    event_id: str,
    reason: str,
) -> str:
    with session_scope(services.engine) as session:
        moved = checkout_events.set_checkout_status(
            session, checkout.id, CheckoutStatus.FAILED, failure_reason=reason[:500]
        )
    if not moved:
        return f"checkout {checkout.id} is {checkout.status}: the failure changes nothing"
    failure = PaymentFailed(reference=checkout.payment_intent_id or "", reason=reason)
    for item in items:
        await _ask(services, item.invoice_number, InvoiceWorkflow.payment_failed, failure, event_id)
    await _send_receipt(services, checkout, ReceiptKind.FAILED)
    return f"checkout {checkout.id} failed: {reason}"


async def _take_back(
    services: PaymentServices,
    checkout: Checkout,
    items: list[CheckoutItem],
    amount_minor: int,
    why: str,
    *,
    dispute_id: str | None = None,
) -> str:
    """A refund (`amount_minor` is Stripe's total refunded so far) or a chargeback."""
    intent = checkout.payment_intent_id or ""
    if checkout.status != CheckoutStatus.SUCCEEDED:
        raise NotYet(f"{why} of {intent} before its payment landed")
    with session_scope(services.engine) as session:
        if dispute_id is None:
            key = keys.refund(intent, amount_minor)
            amount_minor = checkout_events.note_refund(session, checkout.id, amount_minor)
        else:
            key = keys.dispute(intent, dispute_id)
            amount_minor = amount_minor if checkout_events.note_dispute(session, checkout.id) else 0
        balances = (
            reversals.reverse_for_checkout(
                session, checkout.id, amount_minor, why, idempotency_key=key, actor=ACTOR
            )
            if amount_minor
            else []
        )
    for balance in balances:
        await _reopen(services, balance, amount_minor, why)
    reopened = ", ".join(b.invoice_number for b in balances) or "nothing new"
    return f"checkout {checkout.id}: {why} reopened {reopened}"


async def _reopen(services: PaymentServices, balance: Any, amount_minor: int, why: str) -> None:
    """Tell a running workflow its balance is due again; restart one that has ended."""
    client = await services.temporal()
    change = BalanceReopened(
        balance_minor=balance.balance_minor,
        status=balance.status,
        amount_minor=max(amount_minor, 1),
        reason=f"{why}: money taken back, a collector task is open",
    )
    handle = client.get_workflow_handle_for(
        InvoiceWorkflow.run, workflow_id(balance.invoice_number)
    )
    try:
        await handle.signal(InvoiceWorkflow.balance_reopened, change)
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        # The new run tells the story too: the ledger's timeline lacks the reversal.
        handle = await restart_from_ledger(
            client, services.settings, services.engine, balance.invoice_number
        )
        await handle.signal(InvoiceWorkflow.balance_reopened, change)


async def _send_receipt(services: PaymentServices, checkout: Checkout, kind: ReceiptKind) -> None:
    # Rendering and delivery block (files, SMTP, HTTP): off the event loop the worker shares.
    await asyncio.to_thread(
        send_checkout_receipt, services.settings, services.engine, checkout.id, kind
    )


async def _ask(
    services: PaymentServices, number: str, update: Any, message: Any, request_id: str
) -> bool:
    """Send an invoice workflow a request; False when the invoice can no longer take it."""
    client = await services.temporal()
    try:
        await send_request(
            client,
            number,
            update,
            message,
            request_id=request_id,
            answer_within=services.settings.request_timeout_seconds,
        )
    except WorkflowUpdateFailedError as err:
        log.info("invoice %s refused %s: %s", number, request_id, err.cause)
        return False
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        return False
    return True
