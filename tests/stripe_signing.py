"""Stripe's side of a test, written independently of the SDK.

- Webhook events in Stripe's event format, signed the way Stripe signs them
  (https://docs.stripe.com/webhooks#verify-manually): the `Stripe-Signature` header is
  `t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`, keyed with the endpoint's secret
  (the whole `whsec_...` string).
- What the local server's Stripe.js sends from the payer's browser (`confirmCardSetup` with the
  Card Element, `confirmCardPayment` finishing 3-D Secure): the same requests, with only the
  publishable key and the intent's client secret, so tests pay the way a page does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any

import httpx

API_VERSION = "2024-06-20"


def sign_payload(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header value for `payload` signed at `timestamp` (default now)."""
    signed_at = int(time.time()) if timestamp is None else timestamp
    signed = f"{signed_at}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={signed_at},v1={digest}"


def event(
    kind: str,
    data_object: dict[str, Any],
    event_id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """A Stripe event of type `kind` about `data_object`, as Stripe posts it to an endpoint."""
    return {
        "id": event_id or f"evt_{secrets.token_hex(12)}",
        "object": "event",
        "api_version": API_VERSION,
        "created": int(time.time()) if created is None else created,
        "type": str(kind),
        "data": {"object": data_object},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
    }


def _browser_post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    # fetch() with a string body, as the script sends it: text/plain, JSON inside.
    with httpx.Client(trust_env=False, timeout=10.0) as client:
        answer = client.post(
            url, content=json.dumps(body), headers={"Content-Type": "text/plain;charset=UTF-8"}
        )
    result = answer.json()
    if answer.status_code != 200 or "error" in result:
        raise RuntimeError(f"{url} answered {answer.status_code}: {result}")
    return result


def confirm_card_setup(
    api_base: str,
    publishable_key: str,
    client_secret: str,
    number: str,
    *,
    postal_code: str = "10001",
    complete_3ds: bool = True,
) -> dict[str, Any]:
    """`stripe.confirmCardSetup(client_secret, {payment_method: {card: cardElement}})` with the
    card typed in: the SetupIntent afterwards. A 3-D Secure card is authenticated (the payer
    presses "Complete authentication") unless `complete_3ds` is false."""
    setup_id = client_secret.split("_secret_")[0]
    url = f"{api_base}/v1/setup_intents/{setup_id}/confirm"
    card = {"number": number, "exp_month": "12", "exp_year": "2034", "cvc": "123"}
    setup = _browser_post(
        url,
        {
            "key": publishable_key,
            "use_stripe_sdk": True,
            "client_secret": client_secret,
            "payment_method_data": {
                "type": "card",
                "card": card,
                "billing_details": {"address": {"postal_code": postal_code}},
            },
        },
    )
    if setup["status"] == "requires_action" and complete_3ds:
        body = {"key": publishable_key, "use_stripe_sdk": True, "client_secret": client_secret}
        setup = _browser_post(url, body)
    return setup


def complete_card_payment(
    api_base: str, publishable_key: str, client_secret: str, *, success: bool = True
) -> dict[str, Any]:
    """`stripe.confirmCardPayment(client_secret)` on an intent the server confirmed and that
    requires 3-D Secure: the payer completes (or fails) authentication. The intent afterwards."""
    intent_id = client_secret.split("_secret_")[0]
    url = f"{api_base}/v1/payment_intents/{intent_id}/_authenticate?success={str(success).lower()}"
    return _browser_post(url, {"key": publishable_key, "client_secret": client_secret})
