"""What a payer asked to pay, as typed (decimal strings), turned into a ledger checkout draft.

Shared by the checkout form and the JSON API, so both refuse the same things with the same
words: `items[1].amount: 12.345 has more decimals than the currency allows`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
from sqlmodel import Session, select

from ledger.checkout_drafts import CheckoutDraft, CheckoutItemError, CheckoutLine
from ledger.inputs import parse_amount, positive_minor_units
from ledger.models import Invoice, PaymentMethodKind, ShortPayReason


class CheckoutItemIn(BaseModel):
    invoice: str = Field(max_length=64, description="invoice number")
    amount: str = Field(max_length=40, description="decimal string in major units, e.g. 100.00")
    reason: ShortPayReason | None = Field(None, description="why less than the balance is paid")
    note: str | None = Field(None, max_length=500, description="required with reason `other`")


class CheckoutIn(BaseModel):
    items: list[CheckoutItemIn] = Field(max_length=1000)
    method: Literal["card", "us_bank_account"] = "card"
    request_id: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="the same id again answers the same PaymentIntent",
    )


def checkout_draft(session: Session, customer_id: str, body: CheckoutIn) -> CheckoutDraft:
    """The ledger's draft; CheckoutItemError names the first item that cannot be paid."""
    numbers = [item.invoice for item in body.items]
    currencies = dict(
        session.exec(
            select(Invoice.number, Invoice.currency).where(
                Invoice.customer_id == customer_id,
                Invoice.number.in_(numbers),  # type: ignore[attr-defined]
            )
        ).all()
    )
    lines = []
    for index, item in enumerate(body.items):
        currency = currencies.get(item.invoice)
        if currency is None:
            raise CheckoutItemError(
                index, "invoice", f"no open invoice {item.invoice} for this customer"
            )
        try:
            amount_minor = positive_minor_units(parse_amount(item.amount), currency)
        except ValueError as err:
            raise CheckoutItemError(index, "amount", str(err)) from None
        note = item.note.strip() if item.note else None
        lines.append(
            CheckoutLine(
                invoice_number=item.invoice,
                amount_minor=amount_minor,
                reason_code=item.reason,
                note=note or None,
            )
        )
    return CheckoutDraft(
        customer_id=customer_id,
        request_id=body.request_id,
        method=PaymentMethodKind(body.method),
        lines=lines,
    )
