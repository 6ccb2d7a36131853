"""What `dunwise invoice <action>` asks of the invoice's workflow: its arguments checked, and
the workflow update with its message built from them.

Invariants: amounts are positive decimals as typed, in minor units of the invoice's currency
(too many decimals for it is refused, never rounded); every change carries a request id, the
caller's or a new one, so the same id sent twice is one change; a command that waits past
its time says how to repeat it safely.
"""

from __future__ import annotations

import argparse
import re
import uuid
from datetime import date
from decimal import Decimal
from typing import Any

from temporalio.client import Client, WorkflowHandle, WorkflowUpdateRPCTimeoutOrCancelledError

from activities.currency import format_money
from commands.errors import CommandError
from invoices import send_request
from ledger.inputs import parse_amount, parse_date, positive_minor_units
from vocabulary import AdjustmentKind
from workflows.invoice import InvoiceWorkflow
from workflows.models import (
    Adjustment,
    Closure,
    Dispute,
    InvoiceState,
    ManualEscalation,
    Note,
    NoteKind,
    OneOffMessage,
    PaymentReceived,
    PromiseToPay,
    Resolution,
)

# Invoice actions whose REASON argument must say something.
REASON_REQUIRED = frozenset({"credit", "dispute", "void", "write-off"})
# Request ids go into the ledger's idempotency keys: short, and safe in any log or header.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")


def request_id_for(given: str | None) -> str:
    """The caller's request id, or a new one; the same id twice is one change."""
    if given is None:
        return str(uuid.uuid4())
    if not REQUEST_ID.fullmatch(given):
        raise CommandError(f"--request-id {given!r} must be 1 to 100 letters, digits or . _ : -")
    return given


async def invoice_action(
    client: Client,
    handle: WorkflowHandle,
    args: argparse.Namespace,
    request_id: str,
    amount: Decimal | None,
    pay_by: date | None,
    answer_within: float,
) -> InvoiceState:
    state = await handle.query(InvoiceWorkflow.state)
    actor = f"cli:{args.actor}"
    match args.action:
        case "pay":
            assert amount is not None
            update: Any = InvoiceWorkflow.record_payment
            message: Any = PaymentReceived(
                amount_minor=_minor(amount, state.currency),
                currency=state.currency,
                method=args.method,
                reference=args.reference,
                reason=args.reason,
                actor=actor,
            )
        case "promise":
            assert pay_by is not None
            promised = _minor(amount, state.currency) if amount is not None else None
            if promised is not None and promised > state.balance_minor:
                raise CommandError(
                    f"promised amount {args.amount} is more than the balance "
                    f"{format_money(state.balance_minor, state.currency)}"
                )
            update = InvoiceWorkflow.promise_to_pay
            message = PromiseToPay(
                pay_by=pay_by, amount_minor=promised, note=args.note, actor=actor
            )
        case "credit":
            assert amount is not None
            update = InvoiceWorkflow.adjust
            message = Adjustment(
                amount_minor=-_minor(amount, state.currency),
                kind=AdjustmentKind.CREDIT,
                reason=args.reason,
                actor=actor,
            )
        case "dispute":
            update = InvoiceWorkflow.record_dispute
            message = Dispute(reason=args.reason, actor=actor)
        case "resume" | "stop":
            update = InvoiceWorkflow.record_outcome
            message = Resolution(action=args.action, note=args.note, actor=actor)
        case "escalate":
            update = InvoiceWorkflow.escalate
            message = ManualEscalation(
                queue=args.queue, priority=args.priority, note=args.note, actor=actor
            )
        case "note":
            update = InvoiceWorkflow.add_note
            kind = NoteKind.CALL if args.call else NoteKind.NOTE
            message = Note(text=args.text, kind=kind, actor=actor)
        case "message":
            update = InvoiceWorkflow.send_message
            channels = list(dict.fromkeys(args.channel or ["email"]))
            message = OneOffMessage(template=args.template, channels=channels, actor=actor)
        case "void" | "write-off":
            update = InvoiceWorkflow.void if args.action == "void" else InvoiceWorkflow.write_off
            message = Closure(reason=args.reason, actor=actor)
        case _:
            raise CommandError(f"unknown invoice action {args.action!r}")
    try:
        return await send_request(
            client,
            args.number,
            update,
            message,
            request_id=request_id,
            answer_within=answer_within,
        )
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        # Accepted, so a worker has it: the ledger is what keeps it waiting.
        raise CommandError(
            f"no answer within {answer_within:g} s (is the ledger database reachable?): "
            f"nothing is recorded yet; repeat the command with --request-id {request_id} to "
            "see how it ended: it is recorded once however often it is sent"
        ) from None


def parse_amount_arg(text: str) -> Decimal:
    """A positive decimal amount in major units, as typed: 1234.50 (no NaN, 1e3 or 1,234)."""
    try:
        amount = parse_amount(text)
    except ValueError as err:
        raise CommandError(f"amount {err}") from None
    if amount <= 0:
        raise CommandError(f"amount {text!r} must be greater than 0")
    return amount


def _minor(amount: Decimal, currency: str) -> int:
    """The amount in minor units of the invoice currency; refused if it has too many decimals."""
    try:
        return positive_minor_units(amount, currency)
    except ValueError as err:
        raise CommandError(f"amount {err}") from None


def parse_date_arg(text: str, what: str) -> date:
    try:
        return parse_date(text)
    except ValueError as err:
        raise CommandError(f"{what} {err}") from None
