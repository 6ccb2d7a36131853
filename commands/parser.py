"""The `dunwise` command line's grammar: every command, its arguments and their help.

Light on purpose: building the parser loads no Temporal, database or web module, so
`dunwise --help` answers at once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from commands.queues import add_routing_parsers
from commands.templates import add_template_parsers
from policies.priorities import PRIORITIES
from vocabulary import CHANNELS

DESCRIPTION = "dunwise: collections automation on Temporal. Each command has its own --help."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dunwise", description=DESCRIPTION)
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
