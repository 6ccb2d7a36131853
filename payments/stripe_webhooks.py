"""Stripe webhook events: which ones dunwise listens to, and checking that one came from Stripe.

Invariants:
- An event is trusted only if its `Stripe-Signature` header carries a v1 HMAC-SHA256 of
  "<timestamp>.<raw body>" under the endpoint's secret, with a timestamp within Stripe's default
  tolerance (five minutes); anything else raises `WebhookSignatureError`: refuse it, record nothing.
- The signature covers the raw bytes: verify before parsing, and never re-serialise the body.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

import stripe


class StripeEventKind(StrEnum):
    """The Stripe events dunwise acts on."""

    SUCCEEDED = "payment_intent.succeeded"
    PROCESSING = "payment_intent.processing"  # a bank debit on its way
    FAILED = "payment_intent.payment_failed"
    REFUNDED = "charge.refunded"
    DISPUTE_CREATED = "charge.dispute.created"


WEBHOOK_EVENTS: list[StripeEventKind] = list(StripeEventKind)


class WebhookSignatureError(ValueError):
    """The request is not a genuine Stripe event for this endpoint; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"Stripe webhook refused: {reason}")
        self.reason = reason


def verify_event(payload: bytes, signature_header: str | None, secret: str) -> dict[str, Any]:
    """The event in `payload` once its signature is checked, as a plain dict."""
    if not secret:
        raise ValueError("no Stripe webhook secret is configured (DUNWISE_STRIPE_WEBHOOK_SECRET)")
    if not signature_header:
        raise WebhookSignatureError("the Stripe-Signature header is missing")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookSignatureError("the body is not UTF-8 text") from None
    try:
        # What stripe.Webhook.construct_event checks, with its default tolerance; the body is
        # parsed here so that a signed body which is not an event is refused by name too.
        stripe.WebhookSignature.verify_header(
            text, signature_header, secret, stripe.Webhook.DEFAULT_TOLERANCE
        )
    except stripe.SignatureVerificationError as error:
        # Stripe's text names the problem: no v1 signature, a mismatch, or too old.
        raise WebhookSignatureError(f"bad signature: {error.user_message or error}") from None
    try:
        body = json.loads(text)
    except ValueError as error:
        raise WebhookSignatureError(f"the body is not JSON: {error}") from None
    if not isinstance(body, dict) or not all(
        isinstance(body.get(field), str) and body[field] for field in ("id", "type")
    ):
        raise WebhookSignatureError("the body is not a Stripe event (it needs an id and a type)")
    return body
