"""The pay token in a portal URL, read once per request: whose account it opens, or why not.

A tampered link (403) shows nothing of anyone. An expired or revoked link (410) shows nothing
either, but offers to send a fresh link to the address the customer has on file; being genuine,
it still tells the customer's locale, so that page speaks their language.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import Request

from ledger.db import session_scope
from ledger.models import Customer
from paylinks import PayLinkError, PayLinkExpired, PayToken, read_genuine_pay_token, read_pay_token


@dataclass
class LinkProblem(Exception):
    status: int
    message: str  # English, as the JSON API answers; the page says it in the customer's language
    renewable: bool  # genuine but expired or revoked: a fresh link can be sent
    valid_days: int | None = None  # an expired link's lifetime, which the page names
    locale: str | None = None  # the customer's, when the link is genuine


class OpenLink(PayToken):
    """A pay token whose customer exists, with the customer's locale for the pages."""

    locale: str


def open_link(request: Request, token: str) -> OpenLink:
    """The token's customer, invoices and locale, or LinkProblem."""
    settings = request.app.state.services.settings
    try:
        pay = read_pay_token(settings, token)
    except PayLinkExpired as err:
        genuine = read_genuine_pay_token(settings, token)
        raise LinkProblem(
            410,
            str(err),
            renewable=True,
            valid_days=genuine.valid_days or settings.pay_link_max_age_days,
            locale=customer_locale(request, genuine.customer_id),
        ) from None
    except PayLinkError as err:
        raise LinkProblem(403, str(err), renewable=False) from None
    with session_scope(request.app.state.services.engine) as session:
        customer = session.get(Customer, pay.customer_id)
    if customer is None:
        raise LinkProblem(403, "this pay link is not valid", renewable=False)
    revoked_before = customer.pay_links_revoked_before
    if revoked_before is not None and pay.issued_at <= revoked_before:
        raise LinkProblem(410, "this pay link was revoked", renewable=True, locale=customer.locale)
    return OpenLink(**pay.model_dump(), locale=customer.locale)


def customer_locale(request: Request, customer_id: str) -> str | None:
    """The customer's locale, or None for a customer not (or no longer) in the ledger."""
    with session_scope(request.app.state.services.engine) as session:
        customer = session.get(Customer, customer_id)
        return customer.locale if customer else None


def now() -> datetime:
    return datetime.now(UTC)
