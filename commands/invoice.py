"""`dunwise invoice ...`: look at one invoice or act on it, through its workflow."""

from __future__ import annotations

import argparse
import json
import re
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from pydantic import ValidationError
from sqlmodel import select
from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.service import RPCError, RPCStatusCode

from activities.currency import format_money
from casework.actions import message_templates
from commands.errors import CommandError, error_reason
from commands.importing import policy_folder
from invoices import invoice_state_from_ledger, send_request, workflow_id
from ledger.db import make_engine, session_scope
from ledger.inputs import parse_amount, parse_date, positive_minor_units
from ledger.models import Adjustment as LedgerAdjustment
from ledger.models import Payment
from policies.errors import PolicyFileError
from policies.loader import load_policies
from settings import Settings
from temporal_client import connect
from vocabulary import AdjustmentKind
from workflows import keys
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


async def invoice_command(settings: Settings, args: argparse.Namespace) -> None:
    # Everything that can be checked without Temporal is checked before connecting.
    amount = _amount(args.amount) if getattr(args, "amount", None) is not None else None
    pay_by = _iso_date(args.pay_by, "promise date") if args.action == "promise" else None
    if args.action in REASON_REQUIRED and not args.reason.strip():
        raise CommandError("a reason is required")
    if args.action == "note" and not args.text.strip():
        raise CommandError("a note needs some text")
    if args.action == "message" and args.template not in message_templates():
        raise CommandError(
            f"no message template {args.template!r}; available: {', '.join(message_templates())}"
        )
    if args.action == "escalate":
        try:
            ManualEscalation(queue=args.queue, priority=args.priority)
        except ValidationError as err:
            reason = err.errors()[0]["msg"].removeprefix("Value error, ")
            raise CommandError(f"--queue: {reason}") from None
    request_id = None
    if args.action != "show":
        request_id = _request_id(args.request_id)
    try:
        client = await connect(settings)
    except RuntimeError as err:
        # The client's own text is a transport debug dump; a refused connection says enough.
        refused = "Connection refused" in str(err) or "ConnectionRefused" in str(err)
        raise CommandError(
            f"cannot reach Temporal at {_temporal_where(settings)} (is `dunwise run` running?)"
            + ("" if refused else f": {err}")
        ) from err
    handle = client.get_workflow_handle_for(InvoiceWorkflow.run, workflow_id(args.number))
    try:
        if request_id is None:
            state = await handle.query(InvoiceWorkflow.state)
        else:
            state = await _invoice_action(
                client, handle, args, request_id, amount, pay_by, settings.request_timeout_seconds
            )
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise CommandError(error_reason(err)) from err
        state = _from_ledger(settings, args, request_id)
        if state is None:
            raise CommandError(await _not_found(handle, args.number)) from err
    except (WorkflowUpdateFailedError, WorkflowQueryFailedError) as err:
        raise CommandError(error_reason(err)) from err
    except WorkflowUpdateRPCTimeoutOrCancelledError as err:
        raise CommandError(
            f"no answer from workflow {workflow_id(args.number)} in time; is a worker "
            f"(`dunwise run`) running? Retry with --request-id {request_id}"
        ) from err
    as_json = getattr(args, "json", False)
    print(json.dumps(state.model_dump(mode="json"), indent=2) if as_json else _describe(state))
    if request_id is not None and args.request_id is None:
        print(f"request id {request_id} (to repeat safely: --request-id {request_id})")


def _request_id(given: str | None) -> str:
    """The caller's request id, or a new one; the same id twice is one change."""
    if given is None:
        return str(uuid.uuid4())
    if not REQUEST_ID.fullmatch(given):
        raise CommandError(f"--request-id {given!r} must be 1 to 100 letters, digits or . _ : -")
    return given


def _from_ledger(
    settings: Settings, args: argparse.Namespace, request_id: str | None
) -> InvoiceState | None:
    """What the ledger says when Temporal no longer has the workflow: `show` reads the kept
    timeline, and a payment or credit repeated after the invoice closed finds its first
    recording. None when the ledger cannot answer for it."""
    engine = make_engine(settings.effective_database_url)
    try:
        return _ledger_answer(engine, settings, args, request_id)
    except sa.exc.SQLAlchemyError:
        return None  # no ledger here (yet): Temporal's own answer stands
    finally:
        engine.dispose()


def _ledger_answer(
    engine: sa.Engine, settings: Settings, args: argparse.Namespace, request_id: str | None
) -> InvoiceState | None:
    if request_id is None:
        note = "the workflow has ended; from the ledger:"
    else:
        recorded = {
            "pay": (Payment, keys.payment(args.number, request_id)),
            "credit": (LedgerAdjustment, keys.adjustment(args.number, request_id)),
        }.get(args.action)
        if recorded is None or not _recorded(engine, *recorded):
            return None
        note = f"request id {request_id} was recorded already; nothing new was recorded"
    try:
        policies = load_policies(policy_folder(settings))
    except PolicyFileError:
        policies = None  # the customer's zone then stands in for the policy calendar's
    state = invoice_state_from_ledger(engine, args.number, policies=policies)
    if state is not None:
        print(note)
    return state


def _recorded(engine: sa.Engine, table: type[Payment | LedgerAdjustment], key: str) -> bool:
    with session_scope(engine) as session:
        return (
            session.exec(select(table.id).where(table.idempotency_key == key)).first() is not None
        )


async def _invoice_action(
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


def _amount(text: str) -> Decimal:
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


def _iso_date(text: str, what: str) -> date:
    try:
        return parse_date(text)
    except ValueError as err:
        raise CommandError(f"{what} {err}") from None


async def _not_found(handle: WorkflowHandle, number: str) -> str:
    """Why Temporal found nothing to talk to: the workflow has ended, or never existed."""
    try:
        await handle.describe()
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        return (
            f"no workflow {workflow_id(number)}: unknown invoice number, or its workflow was "
            "never started (`dunwise sync` starts the workflows of open invoices)"
        )
    return "the invoice is closed (its workflow has completed)"


def _temporal_where(settings: Settings) -> str:
    return settings.temporal_address or f"127.0.0.1:{settings.temporal_dev_port}"


def _describe(state: InvoiceState) -> str:
    """The invoice for a person: every time on the wall clock of the invoice's calendar."""
    zone = ZoneInfo(state.timezone)

    def when(moment: datetime) -> str:
        return moment.astimezone(zone).isoformat(timespec="minutes")

    lines = [
        f"invoice {state.number}  customer {state.customer_id}  policy {state.policy_name} "
        f"v{state.policy_version}",
        f"status {state.status}  stage {state.stage}  "
        f"balance {format_money(state.balance_minor, state.currency)}  "
        f"days past due {state.days_past_due}",
    ]
    if state.next_step_at:
        lines.append(f"next step at {when(state.next_step_at)} ({state.timezone})")
    if state.paused_until:
        lines.append(f"paused until {when(state.paused_until)}")
    lines.append("timeline:")
    for entry in state.timeline:
        parts = [when(entry.at), entry.event]
        parts += [p for p in (entry.channel, entry.template, entry.detail) if p]
        if entry.amount_minor is not None:
            parts.append(format_money(entry.amount_minor, state.currency))
        lines.append("  " + "  ".join(parts))
    return "\n".join(lines)
