"""Idempotency keys of everything an invoice workflow does to the world, built in one place.

A key names one effect for good: the ledger, the outbox and the ERP store it under a unique
constraint, so a retried activity, a repeated request id or a new run of the workflow finds
the effect already made instead of making it twice. Changing a key's form would let effects
of invoices already in flight happen again: add forms, never change one.
"""

from __future__ import annotations


def payment(invoice_number: str, request_id: str) -> str:
    return f"{invoice_number}:payment:{request_id}"


def adjustment(invoice_number: str, request_id: str) -> str:
    return f"{invoice_number}:adjustment:{request_id}"


def closure(invoice_number: str, kind: str) -> str:
    """A void or write-off: an invoice has at most one of each."""
    return f"{invoice_number}:{kind}"


def late_fee(invoice_number: str, step_index: int) -> str:
    return f"{invoice_number}:late-fee:{step_index}"


def reminder(invoice_number: str, step_index: int) -> str:
    """Per step; the messaging activity appends the channel for each message."""
    return f"{invoice_number}:step:{step_index}"


def escalation(invoice_number: str, step_index: int) -> str:
    return f"{invoice_number}:escalation:{step_index}"


def erp_clearing(invoice_number: str) -> str:
    return f"{invoice_number}:erp-clearing"


def receipt(invoice_number: str) -> str:
    return f"{invoice_number}:receipt"


def note(invoice_number: str, request_id: str) -> str:
    return f"{invoice_number}:note:{request_id}"


def manual_escalation(invoice_number: str, request_id: str) -> str:
    return f"{invoice_number}:escalated-by-hand:{request_id}"


def broken_promise(invoice_number: str, pay_by: str) -> str:
    """The collector task a broken promise reopens; one per promised date."""
    return f"{invoice_number}:broken-promise:{pay_by}"


def broken_plan(invoice_number: str, due_on: str) -> str:
    """The collector task a missed installment reopens; one per installment date."""
    return f"{invoice_number}:broken-plan:{due_on}"


def payment_plan(invoice_number: str, request_id: str) -> str:
    return f"{invoice_number}:payment-plan:{request_id}"


def one_off_message(invoice_number: str, request_id: str) -> str:
    """Per request; the messaging activity appends the channel for each message."""
    return f"{invoice_number}:one-off:{request_id}"


def contact_fallback(invoice_number: str, failed_key: str) -> str:
    """The reminder sent again on the other channel after the message `failed_key` could not
    be delivered; the messaging activity appends the channel."""
    return f"{invoice_number}:fallback:{failed_key}"


def fix_contact(invoice_number: str, channel: str) -> str:
    """The collector task to fix an address a provider could not deliver to; one a channel."""
    return f"{invoice_number}:fix-contact:{channel}"


def engaged_unpaid(invoice_number: str) -> str:
    """The collector task an invoice gets when a reminder was read or its link opened and no
    payment followed in time: once per invoice."""
    return f"{invoice_number}:engaged-unpaid"
