"""Idempotency keys of what the payment path does to the world, built in one place.

The ledger, the outbox and Stripe keep each key under a unique constraint (Stripe for 24
hours), so a repeated webhook, a double submit or a retried request finds the effect already
made. The invoice workflows' own keys are `workflows.keys`; changing a form here would let
effects already made happen again: add forms, never change one.
"""

from __future__ import annotations


def stripe_payment_intent(checkout_id: int) -> str:
    """Stripe's Idempotency-Key for a checkout's PaymentIntent: one intent per checkout."""
    return f"dunwise-checkout-{checkout_id}"


def credit_request(request_id: str) -> str:
    """The request id under which a checkout spends the customer's credit on an invoice."""
    return f"{request_id}.credit"


def settled_without_provider(checkout_id: int) -> str:
    """The request id of a checkout that the customer's credit paid whole."""
    return f"checkout-{checkout_id}"


def unapplied_payment(invoice_number: str, request_id: str) -> str:
    """Money for an invoice that could no longer take it, kept as the customer's credit."""
    return f"{invoice_number}:unapplied:{request_id}"


def refund(payment_intent_id: str, refunded_total_minor: int) -> str:
    """Stripe tells the total refunded so far: each new total is one reversal."""
    return f"{payment_intent_id}:refund:{refunded_total_minor}"


def dispute(payment_intent_id: str, dispute_id: str) -> str:
    return f"{payment_intent_id}:dispute:{dispute_id}"


def checkout_receipt(checkout_id: int, kind: str) -> str:
    return f"checkout:{checkout_id}:{kind}:email"


def fresh_pay_link(customer_id: str, hour: str) -> str:
    """At most one fresh link an hour (`hour` is YYYY-MM-DDTHH in UTC)."""
    return f"pay-link:{customer_id}:{hour}"
