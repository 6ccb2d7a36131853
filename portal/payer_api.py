"""The portal as a JSON API, for sellers who embed checkout in their own site.

Every route is scoped by the pay token in its path, exactly like the pages: a bad token is
403, an expired or revoked one 410, and nothing outside the token's customer is ever read.
"""

from __future__ import annotations

import asyncio
from datetime import date

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from activities.currency import to_major
from ledger import accounts, checkouts, plan_views
from ledger.db import session_scope
from payments import checkout as checkout_service
from payments.stripe_gateway import GatewayError
from portal.checkout_input import CheckoutIn, checkout_draft
from portal.links import now, open_link

router = APIRouter(prefix="/api/portal", tags=["portal"])


def decimal(amount_minor: int, currency: str) -> str:
    return str(to_major(amount_minor, currency))


class InstallmentOut(BaseModel):
    due_on: date
    amount: str
    status: str = Field(description="paid, part_paid, due, overdue or upcoming")


class PlanOut(BaseModel):
    """A payment plan the payer agreed with a collector: pay installment by installment."""

    next_due_on: date = Field(description="the day of the first installment not fully paid")
    due_now: str = Field(
        description="what pays every installment through that one, at most the balance; "
        "paying at least this, less the invoice's `pending`, needs no reason"
    )
    paid: str = Field(description="paid since the plan began")
    installments: list[InstallmentOut]


class InvoiceOut(BaseModel):
    number: str
    currency: str
    total: str
    balance: str
    pending: str
    issued_on: date
    due_on: date
    status: str
    days_past_due: int
    aging: str
    plan: PlanOut | None = Field(None, description="the active payment plan, if any")


class MoneyOut(BaseModel):
    currency: str
    amount: str


class PendingOut(BaseModel):
    payment_intent: str | None
    currency: str
    amount: str
    method: str
    invoices: list[str]


class CustomerOut(BaseModel):
    id: str
    name: str


class PortalOut(BaseModel):
    customer: CustomerOut
    selected: list[str]
    invoices: list[InvoiceOut]
    credits: list[MoneyOut]
    pending_payments: list[PendingOut]


class CheckoutOut(BaseModel):
    checkout_id: int
    payment_intent: str | None
    client_secret: str | None
    status: str
    amount: str
    currency: str
    invoices_total: str
    credit_applied: str
    surcharge: str


class CardPaymentIn(BaseModel):
    payment_method: str


class CardPaymentOut(BaseModel):
    payment_intent: str
    status: str
    client_secret: str | None


class SetupOut(BaseModel):
    setup_intent: str
    client_secret: str


def account_view(
    request: Request, customer_id: str, history_limit: int = accounts.HISTORY_LIMIT
) -> accounts.CustomerAccount:
    """The customer's account now, aged by their own date."""
    with session_scope(request.app.state.services.engine) as session:
        return accounts.customer_account(session, customer_id, now(), history_limit)


def plan_out(plan: plan_views.PlanView | None) -> PlanOut | None:
    if plan is None:
        return None
    currency = plan.currency
    return PlanOut(
        next_due_on=plan.next_due_on,
        due_now=decimal(plan.due_now_minor, currency),
        paid=decimal(plan.paid_minor, currency),
        installments=[
            InstallmentOut(
                due_on=i.due_on, amount=decimal(i.amount_minor, currency), status=str(i.status)
            )
            for i in plan.installments
        ],
    )


@router.get("/{token}", response_model=PortalOut)
async def portal(request: Request, token: str) -> PortalOut:
    """The customer's open invoices, credit and pending payments."""
    pay = open_link(request, token)
    account = account_view(request, pay.customer_id)
    with session_scope(request.app.state.services.engine) as session:
        on_plan = plan_views.customer_plans(session, pay.customer_id, account.as_of)
    return PortalOut(
        customer=CustomerOut(id=account.customer_id, name=account.name),
        selected=pay.invoice_numbers,
        invoices=[
            InvoiceOut(
                number=i.number,
                currency=i.currency,
                total=decimal(i.total_minor, i.currency),
                balance=decimal(i.balance_minor, i.currency),
                pending=decimal(i.pending_minor, i.currency),
                issued_on=i.issued_on,
                due_on=i.due_on,
                status=i.status,
                days_past_due=i.days_past_due,
                aging=str(i.aging),
                plan=plan_out(on_plan.get(i.number)),
            )
            for i in account.open_invoices
        ],
        credits=[
            MoneyOut(currency=c.currency, amount=decimal(c.amount_minor, c.currency))
            for c in account.credits
        ],
        pending_payments=[
            PendingOut(
                payment_intent=p.payment_intent_id,
                currency=p.currency,
                amount=decimal(p.amount_minor, p.currency),
                method=p.method,
                invoices=p.invoices,
            )
            for p in account.pending
        ],
    )


@router.post("/{token}/checkout", response_model=CheckoutOut)
async def checkout(request: Request, token: str, body: CheckoutIn) -> CheckoutOut:
    """Open a checkout for one or several invoices and its PaymentIntent. Bad items: 422
    naming the item; the same `request_id` again answers the same PaymentIntent."""
    pay = open_link(request, token)
    services = request.app.state.services
    with session_scope(services.engine) as session:
        draft = checkout_draft(session, pay.customer_id, body)
    try:
        started = await checkout_service.start_checkout(services, draft)
    except checkouts.IdempotencyConflict as err:
        raise HTTPException(409, str(err)) from None
    except GatewayError as err:
        raise HTTPException(502, str(err)) from None
    currency = started.currency
    return CheckoutOut(
        checkout_id=started.checkout_id,
        payment_intent=started.payment_intent,
        client_secret=started.client_secret,
        status=started.status,
        amount=decimal(started.charge_minor, currency),
        currency=currency,
        invoices_total=decimal(started.items_minor, currency),
        credit_applied=decimal(started.credit_minor, currency),
        surcharge=decimal(started.surcharge_minor, currency),
    )


@router.post("/{token}/setup-intent", response_model=SetupOut)
async def setup_intent(request: Request, token: str) -> SetupOut:
    """A SetupIntent for the card form (Stripe.js `confirmCardSetup`); the card is saved."""
    pay = open_link(request, token)
    try:
        setup = await asyncio.to_thread(
            checkout_service.card_setup, request.app.state.services, pay.customer_id
        )
    except GatewayError as err:
        raise HTTPException(502, str(err)) from None
    return SetupOut(setup_intent=setup.id, client_secret=setup.client_secret)


@router.post("/{token}/checkout/{checkout_id}/card", response_model=CardPaymentOut)
async def pay_by_card(
    request: Request, token: str, checkout_id: int, body: CardPaymentIn
) -> CardPaymentOut:
    """Charge a card saved to the payer's account for the checkout. A decline is 402 with
    the reason; `requires_action` means Stripe.js `confirmCardPayment(client_secret)`."""
    pay = open_link(request, token)
    services = request.app.state.services
    try:
        intent = await asyncio.to_thread(
            checkout_service.pay_with_card,
            services,
            pay.customer_id,
            checkout_id,
            body.payment_method,
        )
    except checkouts.UnknownCheckout as err:
        raise HTTPException(404, str(err)) from None
    except GatewayError as err:
        await checkout_service.note_declined(services, pay.customer_id, checkout_id, str(err))
        raise HTTPException(402, str(err)) from None
    return CardPaymentOut(
        payment_intent=intent.id, status=intent.status, client_secret=intent.client_secret
    )
