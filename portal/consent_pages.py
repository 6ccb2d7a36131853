"""Unsubscribing from payment reminders, from the link in every reminder email.

`GET /unsubscribe/<token>` asks (a mail scanner that follows links changes nothing);
`POST` there records the opt-out: the page's button, and the one-click unsubscribe of RFC 8058
that mail clients send (`List-Unsubscribe=One-Click`, announced by the email's
`List-Unsubscribe-Post` header). `POST /api/unsubscribe/<token>` does the same for the JSON
API. A repeated opt-out changes nothing; receipts keep going out (`ledger.consent`).

The page speaks the customer's language; a link that names no customer, the browser's
(`portal.page_language`).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from ledger.accounts import UnknownCustomer
from ledger.consent import opt_out, opted_out
from ledger.db import session_scope
from ledger.models import Customer
from paylinks import PayLinkError, UnsubscribeToken, read_unsubscribe_token
from portal.pages import render

router = APIRouter()


class OptedOut(BaseModel):
    customer_id: str
    channel: str
    opted_out: bool
    changed: bool  # False when the customer had opted out already


@router.get("/unsubscribe/{token}", include_in_schema=False)
async def unsubscribe_page(request: Request, token: str) -> Response:
    try:
        link = read_unsubscribe_token(request.app.state.services.settings, token)
    except PayLinkError as err:
        return _problem_page(request, str(err))
    with session_scope(request.app.state.services.engine) as session:
        customer = session.get(Customer, link.customer_id)
        if customer is None:
            return _problem_page(request, "this unsubscribe link is not valid")
        already = opted_out(customer, link.channel)
        name, locale = customer.name, customer.locale
    return _page(request, token, link, name, locale, opted_out=already)


@router.post("/unsubscribe/{token}", include_in_schema=False)
async def unsubscribe(request: Request, token: str) -> Response:
    """The page's button and RFC 8058's one-click POST alike; the body is not needed."""
    try:
        link, customer, _changed = _opt_out(request, token)
    except (PayLinkError, UnknownCustomer) as err:
        return _problem_page(request, str(err))
    return _page(request, token, link, customer.name, customer.locale, opted_out=True)


@router.post("/api/unsubscribe/{token}", tags=["payer"], response_model=OptedOut)
async def unsubscribe_api(request: Request, token: str) -> Response:
    """Stop payment reminders on the link's channel; receipts still go out."""
    try:
        link, _customer, changed = _opt_out(request, token)
    except (PayLinkError, UnknownCustomer) as err:
        return JSONResponse({"detail": str(err)}, status_code=404)
    answer = OptedOut(
        customer_id=link.customer_id, channel=link.channel, opted_out=True, changed=changed
    )
    return JSONResponse(answer.model_dump())


def _opt_out(request: Request, token: str) -> tuple[UnsubscribeToken, Customer, bool]:
    services = request.app.state.services
    link = read_unsubscribe_token(services.settings, token)
    with session_scope(services.engine) as session:
        try:
            changed = opt_out(
                session, link.customer_id, link.channel, actor="payer", via="unsubscribe link"
            )
        except UnknownCustomer:
            raise UnknownCustomer("this unsubscribe link is not valid") from None
        customer = session.get(Customer, link.customer_id)
        assert customer is not None
        return link, customer, changed


def _page(
    request: Request,
    token: str,
    link: UnsubscribeToken,
    name: str,
    locale: str,
    *,
    opted_out: bool,
) -> Response:
    context = {
        "token": token,
        "customer_name": name,
        "channel": link.channel,
        "opted_out": opted_out,
    }
    return render(request, "unsubscribe.html", context, locale=locale)


def _problem_page(request: Request, problem: str) -> Response:
    return render(request, "unsubscribe.html", {"problem": problem}, status_code=404)
