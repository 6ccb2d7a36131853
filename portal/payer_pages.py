"""The payer's pages: the account behind a pay link, checkout, card entry, receipt.

Each page is a thin layer over the same services as the JSON API (`portal.payer_api`):
a form post here does what a JSON post there does (PDFs: `portal.payer_documents`). Visits,
invoice views and abandoned checkouts go to the invoices' timelines in the background. Every
page speaks the customer's language and formats amounts and dates in their locale
(`portal.page_language`).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from activities.currency import to_major
from ledger import accounts, checkout_events, checkouts, invoice_details, plan_views
from ledger.books import UnknownInvoice
from ledger.checkout_drafts import CheckoutItemError
from ledger.db import session_scope
from ledger.models import CheckoutStatus, Customer, PaymentMethodKind
from paylinks import PayLinkError, read_genuine_pay_token
from payments import checkout as checkout_service
from payments.portal_events import note_in_background
from payments.receipts import send_fresh_pay_link
from payments.stripe_gateway import GatewayError
from portal.checkout_input import CheckoutIn, CheckoutItemIn, checkout_draft
from portal.links import LinkProblem, OpenLink, customer_locale, now, open_link
from portal.pages import REASON_CHOICES, render
from portal.payer_api import account_view
from workflows.models import PortalEventKind

router = APIRouter(prefix="/pay", include_in_schema=False)
# A checkout left unpaid this long counts as abandoned when the payer comes back.
ABANDONED_AFTER = timedelta(minutes=30)
# A visit goes on the timelines of the invoices its link was sent for, or else of this many of
# the customer's most overdue ones.
VISIT_NOTES = 50
# Invoices shown per page of the account: a phone stays quick with a thousand open invoices.
PAGE_SIZE = 100
# The account form's fields that a refused checkout shows again as the payer entered them.
ENTERED_FIELDS = ("amount:", "reason:", "note:")


@router.get("/{token}")
async def account_page(request: Request, token: str, page: int = 1) -> Response:
    pay = open_link(request, token)
    services = request.app.state.services
    with session_scope(services.engine) as session:
        account = accounts.customer_account(session, pay.customer_id, now())
        abandoned = checkout_events.abandon_stale_checkouts(
            session, pay.customer_id, now() - ABANDONED_AFTER
        )
        abandoned_numbers = [
            item.invoice_number
            for checkout in abandoned
            for item in checkouts.checkout_items(session, checkout.id)
        ]
    if abandoned_numbers:
        note_in_background(services, abandoned_numbers, PortalEventKind.CHECKOUT_ABANDONED)
    visited = pay.invoice_numbers or [i.number for i in account.open_invoices[:VISIT_NOTES]]
    note_in_background(services, visited, PortalEventKind.PORTAL_VISIT)
    return _render_account(request, token, account, set(pay.invoice_numbers), page=page)


@router.post("/{token}/checkout")
async def checkout_form(request: Request, token: str) -> Response:
    """The account page's form: selected invoices, amounts, reasons, method."""
    pay = open_link(request, token)
    services = request.app.state.services
    form = await request.form()
    try:
        if form.get("all"):
            items = _everything_due(request, pay.customer_id, str(form.get("all")))
        else:
            items = [
                CheckoutItemIn(
                    invoice=str(number),
                    amount=str(form.get(f"amount:{number}", "")).strip(),
                    reason=form.get(f"reason:{number}") or None,  # type: ignore[arg-type]
                    note=str(form.get(f"note:{number}") or "") or None,
                )
                for number in form.getlist("invoice")
            ]
        body = CheckoutIn(
            items=items,
            method=str(form.get("method", "card")),  # type: ignore[arg-type]
            request_id=str(form.get("request_id", "")),
        )
        with session_scope(services.engine) as session:
            draft = checkout_draft(session, pay.customer_id, body)
        started = await checkout_service.start_checkout(services, draft)
    except (ValueError, GatewayError) as err:
        # CheckoutItemError and pydantic's ValidationError are ValueErrors: the page again,
        # with the problem; nothing was charged.
        account = account_view(request, pay.customer_id)
        entered = {key: str(value) for key, value in form.items() if key.startswith(ENTERED_FIELDS)}
        return _render_account(
            request,
            token,
            account,
            {str(number) for number in form.getlist("invoice")},
            entered=entered,
            error=err.problem if isinstance(err, CheckoutItemError) else str(err),
            status_code=422,
        )
    return RedirectResponse(f"/pay/{token}/checkouts/{started.checkout_id}", status_code=303)


def _everything_due(request: Request, customer_id: str, currency: str) -> list[CheckoutItemIn]:
    """ "Pay all": every open invoice in this currency, in full."""
    account = account_view(request, customer_id, history_limit=0)
    return [
        CheckoutItemIn(invoice=i.number, amount=str(to_major(payable, i.currency)))
        for i in account.open_invoices
        if i.currency == currency and (payable := i.balance_minor - i.pending_minor) > 0
    ]


def _render_account(
    request: Request,
    token: str,
    account: accounts.CustomerAccount,
    selected: set[str],
    *,
    page: int = 1,
    entered: dict[str, str] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    services = request.app.state.services
    settings = services.settings
    with session_scope(services.engine) as session:
        on_plan = plan_views.customer_plans(session, account.customer_id, account.as_of)
    # The invoices the link was sent for come first; then by due date.
    ordered = sorted(account.open_invoices, key=lambda i: i.number not in selected)
    pages = max(1, -(-len(ordered) // PAGE_SIZE))
    page = min(max(page, 1), pages)
    due: dict[str, list[int]] = {}
    for invoice in ordered:
        payable = invoice.balance_minor - invoice.pending_minor
        if payable > 0:
            count_and_total = due.setdefault(invoice.currency, [0, 0])
            count_and_total[0] += 1
            count_and_total[1] += payable
    return render(
        request,
        "portal.html",
        {
            "token": token,
            "account": account,
            "rows": ordered[(page - 1) * PAGE_SIZE : page * PAGE_SIZE],
            "page": page,
            "pages": pages,
            "pay_all": sorted(due.items()),
            "selected": selected,
            "plans": on_plan,
            "entered": entered or {},
            "reasons": REASON_CHOICES,
            "request_id": str(uuid.uuid4()),
            "error": error,
            "surcharge_percent": settings.card_surcharge_percent,
            # The local Stripe server has no bank debits; real Stripe does.
            "bank_debit": not settings.local_stripe,
        },
        status_code=status_code,
        locale=account.locale,
    )


@router.get("/{token}/checkouts/{checkout_id}")
async def checkout_page(request: Request, token: str, checkout_id: int) -> Response:
    """Pay a checkout: a saved card, or a new card through Stripe.js; or its receipt."""
    pay = open_link(request, token)
    checkout, _ = _checkout_of(request, pay.customer_id, checkout_id)
    if checkout.status not in (CheckoutStatus.CREATED, CheckoutStatus.FAILED):
        return RedirectResponse(f"/pay/{token}/checkouts/{checkout_id}/receipt", status_code=303)
    return await _checkout_view(request, token, pay, checkout_id)


@router.post("/{token}/checkouts/{checkout_id}/card")
async def pay_with_saved_card(
    request: Request, token: str, checkout_id: int, payment_method: str = Form(...)
) -> Response:
    """The no-JavaScript path: pay with a card already saved to the account."""
    pay = open_link(request, token)
    services = request.app.state.services
    try:
        await asyncio.to_thread(
            checkout_service.pay_with_card, services, pay.customer_id, checkout_id, payment_method
        )
    except GatewayError as err:
        await checkout_service.note_declined(services, pay.customer_id, checkout_id, str(err))
        return await _checkout_view(
            request, token, pay, checkout_id, error=str(err), status_code=402
        )
    return RedirectResponse(f"/pay/{token}/checkouts/{checkout_id}/receipt", status_code=303)


async def _checkout_view(
    request: Request,
    token: str,
    pay: OpenLink,
    checkout_id: int,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    services = request.app.state.services
    customer_id = pay.customer_id
    checkout, items = _checkout_of(request, customer_id, checkout_id)
    cards = await asyncio.to_thread(checkout_service.saved_cards, services, customer_id)
    client_secret = customer_name = None
    if checkout.method == PaymentMethodKind.US_BANK_ACCOUNT and checkout.payment_intent_id:
        with session_scope(services.engine) as session:
            customer = session.get(Customer, customer_id)
            customer_name = customer.name if customer else None
        # Stripe.js collects the bank account for this very PaymentIntent.
        intent = await asyncio.to_thread(
            services.gateway.retrieve_payment_intent, checkout.payment_intent_id
        )
        client_secret = intent.client_secret
    return render(
        request,
        "checkout.html",
        {
            "token": token,
            "checkout": checkout,
            "items": items,
            "cards": cards,
            "client_secret": client_secret,
            "customer_name": customer_name,
            "stripe_js": services.gateway.js_url,
            "publishable_key": services.gateway.publishable_key,
            "error": error,
        },
        status_code=status_code,
        locale=pay.locale,
    )


@router.get("/{token}/checkouts/{checkout_id}/receipt")
async def receipt_page(request: Request, token: str, checkout_id: int) -> Response:
    pay = open_link(request, token)
    checkout, items = _checkout_of(request, pay.customer_id, checkout_id)
    return render(
        request,
        "receipt.html",
        {"token": token, "checkout": checkout, "items": items},
        locale=pay.locale,
    )


@router.get("/{token}/invoices/{number}")
async def invoice_page(request: Request, token: str, number: str) -> Response:
    pay = open_link(request, token)
    detail = invoice_of(request, pay.customer_id, number)
    note_in_background(request.app.state.services, [number], PortalEventKind.INVOICE_VIEWED)
    return render(request, "invoice.html", {"token": token, "invoice": detail}, locale=pay.locale)


@router.post("/{token}/renew")
async def renew_link(request: Request, token: str) -> Response:
    """Send a fresh link to the address the customer has on file; never to one typed in."""
    services = request.app.state.services
    try:
        pay = read_genuine_pay_token(services.settings, token)
    except PayLinkError:
        raise LinkProblem(403, "this pay link is not valid", renewable=False) from None
    send_fresh_pay_link(services.settings, services.engine, pay.customer_id)
    locale = customer_locale(request, pay.customer_id)
    return render(request, "link_renewed.html", {}, locale=locale)


def _checkout_of(request: Request, customer_id: str, checkout_id: int):
    with session_scope(request.app.state.services.engine) as session:
        try:
            checkout = checkouts.get_checkout(session, customer_id, checkout_id)
        except checkouts.UnknownCheckout:
            raise HTTPException(404, "no such checkout for this account") from None
        return checkout, checkouts.checkout_items(session, checkout_id)


def invoice_of(request: Request, customer_id: str, number: str) -> invoice_details.InvoiceDetail:
    """One invoice of the customer, or 404 (for another customer's invoice too)."""
    with session_scope(request.app.state.services.engine) as session:
        try:
            return invoice_details.invoice_detail(session, customer_id, number)
        except UnknownInvoice:
            raise HTTPException(404, f"no invoice {number} on this account") from None
