"""`dunwise invoice ...`: look at one invoice or act on it, through its workflow."""

from __future__ import annotations

import argparse
import json
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from temporalio.client import (
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.service import RPCError, RPCStatusCode

from activities.currency import format_money
from commands.errors import CommandError, error_reason
from invoices import workflow_id
from ledger.inputs import parse_amount, parse_date, positive_minor_units
from settings import Settings
from temporal_client import connect
from workflows.invoice import TERMINAL_STATUSES, InvoiceWorkflow
from workflows.models import (
    Adjustment,
    Closure,
    Dispute,
    InvoiceState,
    PaymentReceived,
    PromiseToPay,
    Resolution,
)

# Invoice actions whose REASON argument must say something.
REASON_REQUIRED = frozenset({"credit", "dispute", "void", "write-off"})


async def invoice_command(settings: Settings, args: argparse.Namespace) -> None:
    # Everything that can be checked without Temporal is checked before connecting.
    amount = _amount(args.amount) if getattr(args, "amount", None) is not None else None
    pay_by = _iso_date(args.pay_by, "promise date") if args.action == "promise" else None
    if args.action in REASON_REQUIRED and not args.reason.strip():
        raise CommandError("a reason is required")
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
        if args.action == "show":
            state = await handle.query(InvoiceWorkflow.state)
        else:
            state = await _invoice_action(handle, args, amount, pay_by)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise CommandError(await _not_found(handle, args.number)) from err
        raise CommandError(error_reason(err)) from err
    except (WorkflowUpdateFailedError, WorkflowQueryFailedError) as err:
        raise CommandError(error_reason(err)) from err
    except WorkflowUpdateRPCTimeoutOrCancelledError as err:
        raise CommandError(
            f"no answer from workflow {workflow_id(args.number)} in time; is a worker "
            "(`dunwise run`) running?"
        ) from err
    if state is None:
        print(f"invoice {args.number}: {args.action} sent")
        return
    as_json = getattr(args, "json", False)
    print(json.dumps(state.model_dump(mode="json"), indent=2) if as_json else _describe(state))


async def _invoice_action(
    handle: WorkflowHandle,
    args: argparse.Namespace,
    amount: Decimal | None,
    pay_by: date | None,
) -> InvoiceState | None:
    state = await handle.query(InvoiceWorkflow.state)
    actor = f"cli:{args.actor}"
    if args.action in ("dispute", "resume", "stop") and state.status in TERMINAL_STATUSES:
        # The workflow ignores these signals once the invoice is settled: say so.
        status = state.status.replace("_", " ")
        raise CommandError(f"the invoice is {status}: nothing to {args.action}")
    match args.action:
        case "pay":
            assert amount is not None
            payment = PaymentReceived(
                amount_minor=_minor(amount, state.currency),
                currency=state.currency,
                method=args.method,
                reference=args.reference,
                reason=args.reason,
                actor=actor,
            )
            return await handle.execute_update(InvoiceWorkflow.record_payment, payment)
        case "promise":
            assert pay_by is not None
            promised = _minor(amount, state.currency) if amount is not None else None
            if promised is not None and promised > state.balance_minor:
                raise CommandError(
                    f"promised amount {args.amount} is more than the balance "
                    f"{format_money(state.balance_minor, state.currency)}"
                )
            promise = PromiseToPay(
                pay_by=pay_by, amount_minor=promised, note=args.note, actor=actor
            )
            return await handle.execute_update(InvoiceWorkflow.promise_to_pay, promise)
        case "credit":
            assert amount is not None
            credit = Adjustment(
                amount_minor=-_minor(amount, state.currency),
                reason=args.reason,
                actor=actor,
            )
            return await handle.execute_update(InvoiceWorkflow.adjust, credit)
        case "dispute":
            await handle.signal(InvoiceWorkflow.dispute, Dispute(reason=args.reason, actor=actor))
        case "resume" | "stop":
            resolution = Resolution(action=args.action, note=args.note, actor=actor)
            await handle.signal(InvoiceWorkflow.resolve, resolution)
        case "void":
            return await handle.execute_update(
                InvoiceWorkflow.void, Closure(reason=args.reason, actor=actor)
            )
        case "write-off":
            closure = Closure(reason=args.reason, actor=actor)
            return await handle.execute_update(InvoiceWorkflow.write_off, closure)
    return None


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
