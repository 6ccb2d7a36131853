"""`dunwise invoice ...`: look at one invoice or act on it, through its workflow.

Everything that can be checked without Temporal is checked before connecting. The update an
action sends is built in `commands.invoice_actions`; when Temporal no longer has the
workflow, `commands.invoice_ledger` answers from the ledger.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from temporalio.client import (
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.service import RPCError, RPCStatusCode

from activities.currency import format_money
from casework.actions import message_templates
from commands.errors import CommandError, error_reason
from commands.invoice_actions import (
    REASON_REQUIRED,
    invoice_action,
    parse_amount_arg,
    parse_date_arg,
    request_id_for,
)
from commands.invoice_ledger import state_from_ledger
from invoices import workflow_id
from settings import Settings
from temporal_client import connect
from workflows.invoice import InvoiceWorkflow
from workflows.models import InvoiceState, ManualEscalation


async def invoice_command(settings: Settings, args: argparse.Namespace) -> None:
    # Everything that can be checked without Temporal is checked before connecting.
    amount = parse_amount_arg(args.amount) if getattr(args, "amount", None) is not None else None
    pay_by = parse_date_arg(args.pay_by, "promise date") if args.action == "promise" else None
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
        request_id = request_id_for(args.request_id)
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
            state = await invoice_action(
                client, handle, args, request_id, amount, pay_by, settings.request_timeout_seconds
            )
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise CommandError(error_reason(err)) from err
        state = state_from_ledger(settings, args, request_id)
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
