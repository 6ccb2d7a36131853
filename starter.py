"""The `dunwise` command line: run, import, invoice, simulate, demo, policy."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlmodel import Session, select
from temporalio.client import (
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import FailureError
from temporalio.service import RPCError, RPCStatusCode

import demo_data
from activities.currency import format_money
from activities.rendering import available_templates
from invoices import choose_policy, invoice_input, start_invoice_workflow, workflow_id
from ledger.db import make_engine, session_scope
from ledger.imports import ImportRejected, InvoiceRow, import_file
from ledger.inputs import parse_amount, parse_date, positive_minor_units
from ledger.migrate import upgrade
from ledger.models import Customer, Invoice, InvoiceStatus
from policies.loader import (
    PolicyFileError,
    check_policy_files,
    load_policies,
    load_policy,
    policy_json_schema,
)
from policies.schema import Policy
from settings import DEV_SECRET_KEY, Settings, get_settings
from simulation import format_timeline, simulate
from temporal_client import connect, quiet_core_logs, temporal
from worker import run_worker
from workflows.invoice import TERMINAL_STATUSES, InvoiceWorkflow
from workflows.models import (
    Adjustment,
    Closure,
    Dispute,
    InvoiceInput,
    InvoiceState,
    PaymentReceived,
    PromiseToPay,
    Resolution,
)

SHIPPED_POLICIES = Path(__file__).parent / "policies"
OPEN_STATUSES = (InvoiceStatus.OPEN, InvoiceStatus.DISPUTED, InvoiceStatus.PAUSED)
# Invoice actions whose REASON argument must say something.
REASON_REQUIRED = frozenset({"credit", "dispute", "void", "write-off"})


class CommandError(Exception):
    """A problem to report to the user in one line, with exit status 1."""


def error_reason(err: BaseException) -> str:
    """What went wrong, in the words of whoever refused, without exception class names.

    A workflow's update validator raising ValueError("...") reaches the client as an
    ApplicationError whose str() is "ValueError: ..."; the reason is only the "...".
    """
    if isinstance(err, WorkflowUpdateFailedError):
        return error_reason(err.cause)
    if isinstance(err, FailureError | RPCError):
        return err.message
    return str(err)


def error_line(args: argparse.Namespace, err: BaseException) -> str:
    """The text printed for a refused command: `dunwise: invoice A-2: <reason>` for an
    invoice command, `dunwise <command>: <reason>` for the others."""
    if args.command == "invoice":
        return f"dunwise: invoice {args.number}: {error_reason(err)}"
    return f"dunwise {args.command}: {error_reason(err)}"


# ----------------------------------------------------------------------------- run


async def run(settings: Settings) -> None:
    if not settings.embedded_temporal and settings.secret_key.get_secret_value() == DEV_SECRET_KEY:
        raise CommandError(
            "DUNWISE_SECRET_KEY is the development key; set a secret of your own before "
            "running against a Temporal cluster"
        )
    # SIGTERM (docker stop, systemd) unwinds like Ctrl-C, so the embedded server stops too.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url)
    async with temporal(settings) as client:
        where = (
            settings.temporal_address
            or f"embedded dev server 127.0.0.1:{settings.temporal_dev_port}"
        )
        print(f"dunwise worker on task queue {settings.temporal_task_queue!r} ({where})")
        if settings.embedded_temporal:
            print(f"Temporal UI: http://127.0.0.1:{settings.temporal_ui_port}")
        print(f"ledger: {settings.effective_database_url}")
        print(f"outbox: {settings.effective_outbox_dir.resolve()}")
        print("Ctrl-C to stop")
        await run_worker(client, settings, engine)


# ----------------------------------------------------------------------------- import


def policy_folder(settings: Settings) -> Path:
    return settings.policy_dir or SHIPPED_POLICIES


async def import_invoices_file(settings: Settings, path: Path, *, partial: bool) -> int:
    policies = load_policies(policy_folder(settings))
    upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url)

    def policy_for(row: InvoiceRow) -> tuple[str, int]:
        policy = choose_policy(policies, row, settings.default_policy)
        return policy.name, policy.version

    with session_scope(engine) as session:
        report = import_file(session, path, policy_for, partial=partial)
        inputs = [_workflow_input(session, number, policies) for number in report.imported]
    for error in report.refused:
        print(f"{path}: {error}", file=sys.stderr)
    await _start_workflows(settings, inputs)
    print(f"imported {len(inputs)} invoices from {path}, refused {len(report.refused_rows)} rows")
    return 1 if report.refused else 0


async def start_open_invoices(settings: Settings) -> None:
    """Make sure every open invoice in the ledger has its workflow (safe to repeat)."""
    policies = load_policies(policy_folder(settings))
    upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url)
    with session_scope(engine) as session:
        numbers = session.exec(
            select(Invoice.number).where(Invoice.status.in_(OPEN_STATUSES))  # type: ignore[attr-defined]
        ).all()
        inputs = [_workflow_input(session, number, policies) for number in numbers]
    await _start_workflows(settings, inputs)
    print(f"{len(inputs)} open invoices, each with its workflow")


async def _start_workflows(settings: Settings, inputs: list[InvoiceInput]) -> None:
    if not inputs:
        return
    try:
        async with temporal(settings) as client:
            for invoice in inputs:
                await start_invoice_workflow(client, settings, invoice)
    except (RuntimeError, RPCError) as err:
        raise CommandError(
            f"the ledger has the invoices but their workflows could not all start ({err}); "
            "run `dunwise sync` once Temporal is reachable"
        ) from err


def _workflow_input(session: Session, number: str, policies: dict[str, Policy]) -> InvoiceInput:
    invoice = session.exec(select(Invoice).where(Invoice.number == number)).one()
    customer = session.get(Customer, invoice.customer_id)
    assert customer is not None
    return invoice_input(invoice, customer.timezone, policies[invoice.policy_name])


# ----------------------------------------------------------------------------- invoice


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


# ----------------------------------------------------------------------------- simulate, demo


async def simulate_command(args: argparse.Namespace) -> None:
    policy = load_policy(args.policy)
    with tempfile.TemporaryDirectory(prefix="dunwise-simulate-") as scratch:
        result = await simulate(
            policy, args.invoices, Path(scratch), payments_path=args.payments, days=args.days
        )
        if args.json:
            for event in result.events:
                print(event.as_json())
        else:
            print(
                format_timeline(result).replace(str(result.outbox), "(discarded: scratch folder)")
            )


async def demo_command(settings: Settings) -> None:
    folder = (settings.data_dir / "demo").resolve()
    shutil.rmtree(folder, ignore_errors=True)
    invoices, payments = demo_data.write(folder, today=date.today())
    policy = load_policy(SHIPPED_POLICIES / "standard.yaml")
    print(f"demo: {invoices} and {payments}, policy {policy.name} v{policy.version}")
    print("simulating 75 days on a time-skipping Temporal server...\n")
    result = await simulate(policy, invoices, folder / "run", payments_path=payments, days=75)
    print(format_timeline(result))
    print(f"Ledger of the run: {folder / 'run' / 'dunwise.db'}")


# ----------------------------------------------------------------------------- policy


def policy_check(paths: Sequence[Path]) -> int:
    errors = check_policy_files(paths, templates=available_templates())
    for error in errors:
        print(error, file=sys.stderr)
    if errors:
        print(f"{len(errors)} error(s)", file=sys.stderr)
        return 1
    print(f"{len(paths)} policy file(s) OK")
    return 0


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dunwise", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("run", help="run the worker (and the embedded Temporal dev server)")
    commands.add_parser("migrate", help="create or upgrade the ledger database")
    commands.add_parser("sync", help="start the workflow of every open invoice that has none")

    imp = commands.add_parser("import", help="import invoices from CSV or JSON and start them")
    imp.add_argument("file", type=Path)
    imp.add_argument("--partial", action="store_true", help="import good rows, report bad ones")

    inv = commands.add_parser("invoice", help="look at or act on one invoice")
    actions = inv.add_subparsers(dest="action", required=True)

    def invoice_action(name: str, help: str) -> argparse.ArgumentParser:
        action = actions.add_parser(name, help=help)
        action.add_argument("number", help="invoice number")
        action.add_argument("--actor", default="operator", help="who acts, for the audit trail")
        return action

    invoice_action("show", "state and timeline").add_argument("--json", action="store_true")
    pay = invoice_action("pay", "record a payment")
    pay.add_argument("amount", help="decimal amount in the invoice currency, e.g. 120.50")
    pay.add_argument("--method", default="manual")
    pay.add_argument("--reference")
    pay.add_argument("--reason", help="why a partial payment is partial")
    promise = invoice_action("promise", "record a promise to pay")
    promise.add_argument("pay_by", help="YYYY-MM-DD")
    promise.add_argument("--amount")
    promise.add_argument("--note")
    credit = invoice_action("credit", "issue a credit note that lowers the balance")
    credit.add_argument("amount", help="decimal amount of the credit, e.g. 25.00")
    credit.add_argument("reason")
    invoice_action("dispute", "pause dunning for a dispute").add_argument("reason")
    invoice_action("void", "void an invoice issued in error").add_argument("reason")
    invoice_action("write-off", "write off the balance").add_argument("reason")
    invoice_action("resume", "resume dunning").add_argument("--note")
    invoice_action("stop", "stop reminders; wait for payment").add_argument("--note")

    sim = commands.add_parser("simulate", help="what-if: run a policy over invoices")
    sim.add_argument("--policy", type=Path, required=True)
    sim.add_argument("--invoices", type=Path, required=True)
    sim.add_argument("--payments", type=Path)
    sim.add_argument("--days", type=int, default=120)
    sim.add_argument("--json", action="store_true", help="one JSON object per event per line")

    commands.add_parser("demo", help="sample invoices, simulated, with rendered messages")

    pol = commands.add_parser("policy", help="check or describe policy files")
    pol_actions = pol.add_subparsers(dest="action", required=True)
    check = pol_actions.add_parser("check", help="report every error with file, line and field")
    check.add_argument("files", type=Path, nargs="+")
    schema = pol_actions.add_parser("schema", help="print the policy JSON Schema")
    schema.add_argument("--output", type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    try:
        status = run_command(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader left early (`dunwise simulate --json | head`): not an error of ours.
        status = 0
    sys.stderr.flush()
    # Leave without interpreter finalization: the Temporal client's native threads may still
    # call back into Python while it tears down, which can abort an otherwise finished run.
    os._exit(status)


def run_command(argv: Sequence[str] | None = None) -> int:
    """Run one command line; the exit status."""
    args = build_parser().parse_args(argv)
    quiet_core_logs()
    settings = get_settings()
    try:
        return _dispatch(args, settings) or 0
    except (CommandError, PolicyFileError, ImportRejected) as err:
        print(error_line(args, err), file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("stopped")
        return 0


def _dispatch(args: argparse.Namespace, settings: Settings) -> int | None:
    match args.command:
        case "run":
            asyncio.run(run(settings))
        case "migrate":
            upgrade(settings.effective_database_url)
            print(f"ledger at {settings.effective_database_url} is up to date")
        case "sync":
            asyncio.run(start_open_invoices(settings))
        case "import":
            return asyncio.run(import_invoices_file(settings, args.file, partial=args.partial))
        case "invoice":
            asyncio.run(invoice_command(settings, args))
        case "simulate":
            if args.days < 1:
                raise CommandError("--days must be at least 1")
            asyncio.run(simulate_command(args))
        case "demo":
            asyncio.run(demo_command(settings))
        case "policy" if args.action == "check":
            return policy_check(args.files)
        case "policy":
            text = json.dumps(policy_json_schema(), indent=2) + "\n"
            if args.output:
                args.output.write_text(text)
            else:
                print(text, end="")
    return None


if __name__ == "__main__":
    main()
