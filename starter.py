"""The `dunwise` command line: run, worker, web, paylink, user, apikey, queue, customer, import,
invoice, simulate, demo, templates, policy."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from commands.errors import CommandError, error_line, loaded_classes
from commands.queues import add_routing_parsers
from commands.templates import add_template_parsers
from policies.priorities import PRIORITIES
from vocabulary import CHANNELS

if TYPE_CHECKING:
    from settings import Settings

# Everything above is light: a command imports what it needs in the branch that runs it,
# so `dunwise --help` or `dunwise policy check` never loads Temporal, the database or the web.

# Commands that may start Temporal's core, whose log lines are kept to errors.
TEMPORAL_COMMANDS = frozenset(
    {"run", "worker", "web", "sync", "import", "invoice", "simulate", "demo"}
)
# Refusals reported in one line (exit status 1), by the modules that raise them.
REFUSALS = ("policies.errors.PolicyFileError", "ledger.import_rows.ImportRejected")
# Names other code takes from this module, with the module that has them.
_ELSEWHERE = {
    "import_invoices_file": "commands.importing",
    "start_open_invoices": "commands.importing",
}

T = TypeVar("T")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dunwise", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run_parser = commands.add_parser(
        "run", help="run the worker (and the embedded Temporal dev server)"
    )
    run_parser.add_argument(
        "--pick-port",
        action="store_true",
        help="run the embedded server on a free port if DUNWISE_TEMPORAL_DEV_PORT is taken",
    )
    run_parser.add_argument(
        "--no-web", action="store_true", help="the worker only; the web app runs as `dunwise web`"
    )
    wrk = commands.add_parser(
        "worker", help="a worker alone, against the Temporal at DUNWISE_TEMPORAL_ADDRESS"
    )
    side = wrk.add_mutually_exclusive_group()
    side.add_argument("--activities-only", action="store_true", help="no workflows")
    side.add_argument("--workflows-only", action="store_true", help="no activities")
    wrk.add_argument("--parent", type=int, help=argparse.SUPPRESS)  # a process of `dunwise run`
    commands.add_parser("web", help="serve the web app alone (portal, API, webhooks)")
    link = commands.add_parser("paylink", help="print a customer's pay link, or revoke them")
    link.add_argument("customer_id")
    link.add_argument("invoices", nargs="*", metavar="INVOICE", help="invoices to preselect")
    link.add_argument("--days", type=int, help="valid for N days (default: the setting)")
    link.add_argument("--revoke", action="store_true", help="revoke every link given out so far")
    usr = commands.add_parser("user", help="add console users; set up their one-time codes")
    user_actions = usr.add_subparsers(dest="action", required=True)
    user_add = user_actions.add_parser(
        "add", help="add a user; the password is read from standard input, or asked twice"
    )
    user_add.add_argument("email")
    user_add.add_argument("--role", required=True, help="viewer, collector or admin")
    user_actions.add_parser(
        "totp", help="give a user a one-time-code secret; prints the URI to scan"
    ).add_argument("email")
    keys = commands.add_parser("apikey", help="API keys for the JSON API")
    key_actions = keys.add_subparsers(dest="action", required=True)
    key_actions.add_parser(
        "create", help="print a new API key for a user (shown once)"
    ).add_argument("email")
    key_actions.add_parser(
        "revoke", help="revoke a key, given whole or as dw_<prefix>"
    ).add_argument("key")
    add_routing_parsers(commands)
    add_template_parsers(commands)
    commands.add_parser("migrate", help="create or upgrade the ledger database")
    commands.add_parser(
        "sync", help="start the workflow of every unfinished invoice whose workflow is not running"
    )

    imp = commands.add_parser("import", help="import invoices from CSV or JSON and start them")
    imp.add_argument("file", type=Path)
    imp.add_argument("--partial", action="store_true", help="import good rows, report bad ones")

    inv = commands.add_parser("invoice", help="look at or act on one invoice")
    actions = inv.add_subparsers(dest="action", required=True)

    def invoice_action(name: str, help: str) -> argparse.ArgumentParser:
        action = actions.add_parser(name, help=help)
        action.add_argument("number", help="invoice number")
        action.add_argument("--actor", default="operator", help="who acts, for the audit trail")
        if name != "show":
            action.add_argument(
                "--request-id",
                help="your id for this change: the same id again changes nothing (default: new)",
            )
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
    escalate = invoice_action("escalate", "hand the invoice to a collector now")
    escalate.add_argument("--queue", help="default: the policy's escalation queue")
    escalate.add_argument("--priority", default="high", choices=PRIORITIES)
    escalate.add_argument("--note")
    note = invoice_action("note", "log a note (or a call, with --call) on the invoice")
    note.add_argument("text")
    note.add_argument("--call", action="store_true", help="the note is about a call")
    message = invoice_action("message", "send the payer one message from a template now")
    message.add_argument("template", help="e.g. overdue_friendly")
    message.add_argument(
        "--channel",
        action="append",
        choices=CHANNELS,
        help="email or sms; repeat for both (default: email)",
    )

    sim = commands.add_parser("simulate", help="what-if: run a policy over invoices")
    sim.add_argument("--policy", type=Path, required=True)
    sim.add_argument("--invoices", type=Path, required=True)
    sim.add_argument("--payments", type=Path)
    sim.add_argument("--days", type=int, default=120)
    sim.add_argument("--json", action="store_true", help="one JSON object per event per line")
    sim.add_argument(
        "--outbox", type=Path, help="keep the rendered messages in this new or empty folder"
    )

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
    try:
        return _dispatch(args) or 0
    except BaseException as err:
        if isinstance(err, (CommandError, *loaded_classes(*REFUSALS))):
            print(error_line(args, err), file=sys.stderr)
            return 1
        if isinstance(err, (KeyboardInterrupt, *loaded_classes("asyncio.CancelledError"))):
            print("stopped")
            return 0
        raise


def _dispatch(args: argparse.Namespace) -> int | None:
    if args.command in TEMPORAL_COMMANDS:
        quiet_core_logs()
    match args.command:
        case "run":
            from commands.run import run

            _wait(run(_settings(), pick_port=args.pick_port, with_web=not args.no_web))
        case "worker":
            from commands.workers import worker_command
            from worker import WorkerRole

            role = (
                WorkerRole.ACTIVITIES
                if args.activities_only
                else WorkerRole.WORKFLOWS
                if args.workflows_only
                else WorkerRole.ALL
            )
            _wait(worker_command(_settings(), role, args.parent))
        case "web":
            from commands.run import web_command

            _wait(web_command(_settings()))
        case "paylink":
            from commands.paylink import paylink_command

            paylink_command(_settings(), args)
        case "user":
            from commands.users import user_command

            user_command(_settings(), args)
        case "apikey":
            from commands.users import apikey_command

            apikey_command(_settings(), args)
        case "queue":
            from commands.queues import queue_command

            queue_command(_settings(), args)
        case "customer":
            from commands.queues import customer_command

            customer_command(_settings(), args)
        case "migrate":
            from ledger.migrate import upgrade

            settings = _settings()
            upgrade(settings.effective_database_url)
            print(f"ledger at {settings.effective_database_url} is up to date")
        case "sync":
            from commands.importing import start_open_invoices
            from commands.progress import progress

            with progress("syncing unfinished invoices with Temporal"):
                return _wait(start_open_invoices(_settings()))
        case "import":
            from commands.importing import import_invoices_file

            return _wait(import_invoices_file(_settings(), args.file, partial=args.partial))
        case "invoice":
            from commands.invoice import invoice_command

            _wait(invoice_command(_settings(), args))
        case "simulate":
            if args.days < 1:
                raise CommandError("--days must be at least 1")
            from commands.simulate import simulate_command

            _wait(simulate_command(args))
        case "demo":
            from commands.simulate import demo_command

            _wait(demo_command(_settings()))
        case "templates":
            from commands.templates import templates_command

            templates_command(_settings(), args)
        case "policy" if args.action == "check":
            from commands.policy import policy_check

            return policy_check(args.files)
        case "policy":
            from commands.policy import policy_schema

            policy_schema(args.output)
    return None


def quiet_core_logs() -> None:
    """Keep the log lines of Temporal's core to errors, before a command may start it."""
    import temporal_client

    temporal_client.quiet_core_logs()


def _settings() -> Settings:
    from settings import get_settings

    return get_settings()


def _wait(work: Coroutine[Any, Any, T]) -> T:
    import asyncio

    return asyncio.run(work)


def __getattr__(name: str) -> Any:
    """A command's function by the name other code reaches it by, imported when asked for."""
    if name in _ELSEWHERE:
        import importlib

        return getattr(importlib.import_module(_ELSEWHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()
