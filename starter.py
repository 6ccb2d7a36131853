"""The `dunwise` command line's entry point: parse (`commands/parser.py`), run the one command
asked for, and turn refusals into one line on stderr and exit status 1."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from commands.errors import CommandError, error_line, loaded_classes
from commands.parser import build_parser

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
    "start_open_invoices": "commands.syncing",
}

T = TypeVar("T")


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
            if getattr(args, "parent", None) is None:  # a process of run's says nothing
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
            from commands.progress import progress
            from commands.syncing import start_open_invoices

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
