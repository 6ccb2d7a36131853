"""The pay token in a portal URL, read once per request: whose account it opens, or why not.

A tampered link (403) shows nothing of anyone. An expired or revoked link (410) shows nothing
either, but offers to send a fresh link to the address the customer has on file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import Request

from ledger.db import session_scope
from ledger.models import Customer
from paylinks import PayLinkError, PayLinkExpired, PayToken, read_pay_token


@dataclass
class LinkProblem(Exception):
    status: int
    message: str
    renewable: bool  # genuine but expired or revoked: a fresh link can be sent


def open_link(request: Request, token: str) -> PayToken:
    """The token's customer and invoices, or LinkProblem."""
    settings = request.app.state.services.settings
    try:
        pay = read_pay_token(settings, token)
    except PayLinkExpired as err:
        raise LinkProblem(410, str(err), renewable=True) from None
    except PayLinkError as err:
        raise LinkProblem(403, str(err), renewable=False) from None
    with session_scope(request.app.state.services.engine) as session:
        customer = session.get(Customer, pay.customer_id)
        revoked_before = customer.pay_links_revoked_before if customer else None
    if customer is None:
        raise LinkProblem(403, "this pay link is not valid", renewable=False)
    if revoked_before is not None and pay.issued_at <= revoked_before:
        raise LinkProblem(410, "this pay link was revoked", renewable=True)
    return pay


def now() -> datetime:
    return datetime.now(UTC)
