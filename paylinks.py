"""Signed links for one customer: expiring pay links and unsubscribe links.

A token carries only the customer id and the invoice numbers it was sent for; the portal
still looks everything up in the ledger and shows nothing outside that customer.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from itsdangerous import BadData, URLSafeTimedSerializer
from pydantic import BaseModel

from settings import Settings
from vocabulary import CHANNELS

PAY_LINK_SALT = "dunwise.pay-link.v1"
UNSUBSCRIBE_SALT = "dunwise.unsubscribe.v1"
# Tolerate small clock differences between the machine that signs and the one that reads.
CLOCK_SKEW = timedelta(minutes=5)
UNSUBSCRIBE_CHANNELS = CHANNELS  # a customer may opt out of each
MAX_VALID_DAYS = 3650


class PayLinkError(Exception):
    """A pay or unsubscribe link that cannot be honoured."""


class PayLinkInvalid(PayLinkError):
    """The token was not signed by us (tampered, truncated, or signed with another secret)."""


class PayLinkExpired(PayLinkError):
    """The token is genuine but older than the allowed age."""


class PayToken(BaseModel):
    customer_id: str
    invoice_numbers: list[str]
    issued_at: datetime
    valid_days: int | None = None  # None: the DUNWISE_PAY_LINK_MAX_AGE_DAYS setting


class UnsubscribeToken(BaseModel):
    customer_id: str
    channel: str


def _serializer(settings: Settings, salt: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.secret_key.get_secret_value(), salt=salt)


def _base_url(settings: Settings) -> str:
    return settings.public_base_url.rstrip("/")


def make_pay_token(
    settings: Settings, customer_id: str, invoice_numbers: list[str], days: int | None = None
) -> str:
    if not customer_id:
        raise ValueError("a pay link needs a customer id")
    if days is not None and not 1 <= days <= MAX_VALID_DAYS:
        raise ValueError(f"a pay link is valid for 1 to {MAX_VALID_DAYS} days, not {days}")
    # Short keys keep the link short enough for an SMS.
    payload: dict[str, Any] = {"c": customer_id, "i": invoice_numbers}
    if days is not None:
        payload["d"] = days
    return _serializer(settings, PAY_LINK_SALT).dumps(payload)


def make_pay_link(
    settings: Settings, customer_id: str, invoice_numbers: list[str], days: int | None = None
) -> str:
    """The customer's portal link, with these invoices selected for payment; valid for `days`
    (default DUNWISE_PAY_LINK_MAX_AGE_DAYS)."""
    token = make_pay_token(settings, customer_id, invoice_numbers, days)
    return f"{_base_url(settings)}/pay/{token}"


def read_pay_token(settings: Settings, token: str, now: datetime | None = None) -> PayToken:
    """Check a pay token's signature and age; raise PayLinkInvalid or PayLinkExpired."""
    pay = read_genuine_pay_token(settings, token)
    signed_at = pay.issued_at
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if signed_at > now + CLOCK_SKEW:
        raise PayLinkInvalid("this pay link is not valid yet")
    valid_days = pay.valid_days or settings.pay_link_max_age_days
    if now - signed_at > timedelta(days=valid_days):
        raise PayLinkExpired(f"this pay link expired; it was valid for {valid_days} days")
    return pay


def read_genuine_pay_token(settings: Settings, token: str) -> PayToken:
    """Check only a pay token's signature: whose it is, however old. For sending a customer a
    fresh link to the address on file when theirs has expired; never to open an account."""
    try:
        payload, signed_at = _serializer(settings, PAY_LINK_SALT).loads(
            token, return_timestamp=True
        )
    except BadData:
        raise PayLinkInvalid("this pay link is not valid") from None
    customer_id, invoice_numbers = _pay_payload(payload)
    days = payload.get("d")
    if days is not None and (type(days) is not int or not 1 <= days <= MAX_VALID_DAYS):
        raise PayLinkInvalid("this pay link is not valid")
    return PayToken(
        customer_id=customer_id,
        invoice_numbers=invoice_numbers,
        issued_at=signed_at,
        valid_days=days,
    )


def _pay_payload(payload: Any) -> tuple[str, list[str]]:
    if not isinstance(payload, dict):
        raise PayLinkInvalid("this pay link is not valid")
    customer_id = payload.get("c")
    invoice_numbers = payload.get("i")
    if not isinstance(customer_id, str) or not customer_id:
        raise PayLinkInvalid("this pay link is not valid")
    if not isinstance(invoice_numbers, list) or not all(
        isinstance(number, str) for number in invoice_numbers
    ):
        raise PayLinkInvalid("this pay link is not valid")
    return customer_id, invoice_numbers


def make_unsubscribe_link(settings: Settings, customer_id: str, channel: str) -> str:
    """A link that opts the customer out of one channel; it does not expire."""
    if channel not in UNSUBSCRIBE_CHANNELS:
        raise ValueError(f"unknown channel {channel!r}; expected one of {UNSUBSCRIBE_CHANNELS}")
    token = _serializer(settings, UNSUBSCRIBE_SALT).dumps({"c": customer_id, "ch": channel})
    return f"{_base_url(settings)}/unsubscribe/{token}"


def read_unsubscribe_token(settings: Settings, token: str) -> UnsubscribeToken:
    try:
        payload = _serializer(settings, UNSUBSCRIBE_SALT).loads(token)
    except BadData:
        raise PayLinkInvalid("this unsubscribe link is not valid") from None
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("c"), str)
        or payload.get("ch") not in UNSUBSCRIBE_CHANNELS
    ):
        raise PayLinkInvalid("this unsubscribe link is not valid")
    return UnsubscribeToken(customer_id=payload["c"], channel=payload["ch"])
