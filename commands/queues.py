"""`dunwise queue add|remove QUEUE EMAIL...`, `dunwise queue list [--json]` and `dunwise
customer owner CUSTOMER_ID [EMAIL | --none]`: who is given collector tasks (ledger.routing);
`dunwise customer show CUSTOMER_ID [--json]` is in `commands.customers`.

Each command runs in one transaction on the migrated ledger and changes all it names or
nothing; a refusal is one line naming the problem (commands.errors). The command line builds
its parser from this module for every command, so the ledger is imported only by the
commands themselves.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from commands.errors import CommandError

if TYPE_CHECKING:
    from sqlmodel import Session

    from settings import Settings

T = TypeVar("T")


def add_routing_parsers(commands: argparse._SubParsersAction) -> None:
    """The `queue` and `customer` commands, on the command line's subparsers."""
    queue = commands.add_parser("queue", help="who is given a queue's collector tasks")
    actions = queue.add_subparsers(dest="action", required=True)
    for name, help in (
        ("add", "make users members of a queue: its new tasks go round robin among them"),
        ("remove", "take users out of a queue; their open tasks stay theirs"),
    ):
        action = actions.add_parser(name, help=help)
        action.add_argument("queue", help="the queue's name, as policies name it")
        action.add_argument("emails", nargs="+", metavar="EMAIL")
    listing = actions.add_parser("list", help="every queue with its members")
    listing.add_argument("--json", action="store_true")
    customer = commands.add_parser("customer", help="look up a customer; the account's owner")
    customer_actions = customer.add_subparsers(dest="action", required=True)
    owner = customer_actions.add_parser(
        "owner", help="show or set the collector who owns the account (new tasks go to them)"
    )
    owner.add_argument("customer_id")
    owner.add_argument("email", nargs="?", help="the owner's email; without it, show the owner")
    owner.add_argument("--none", action="store_true", help="leave the account without an owner")
    show = customer_actions.add_parser(
        "show", help="contacts, consent per channel, what is open and the latest messages"
    )
    show.add_argument("customer_id")
    show.add_argument("--json", action="store_true", help="print one JSON object")


def queue_command(settings: Settings, args: argparse.Namespace) -> None:
    from ledger.routing import add_queue_members, queues, remove_queue_members

    match args.action:
        case "add":
            added = in_ledger(settings, lambda s: add_queue_members(s, args.queue, args.emails))
            if added:
                print(f"queue {args.queue}: added {', '.join(added)}")
            else:
                print(f"queue {args.queue}: nothing changed, each user is a member already")
        case "remove":
            removed = in_ledger(
                settings, lambda s: remove_queue_members(s, args.queue, args.emails)
            )
            print(f"queue {args.queue}: removed {', '.join(removed)}")
        case "list":
            views = in_ledger(settings, queues)
            if args.json:
                print(json.dumps([view.model_dump() for view in views], indent=2))
                return
            if not views:
                print("no queue has members: new tasks go to the customer's owner or no one")
            for view in views:
                print(view.queue)
                for member in view.members:
                    skipped = "" if member.works_tasks else "  (skipped: cannot work tasks)"
                    state = "disabled " if member.disabled else ""
                    print(f"  {member.email}  {state}{member.role}{skipped}")
        case _:
            raise CommandError(f"unknown action {args.action!r}")


def customer_command(settings: Settings, args: argparse.Namespace) -> None:
    from ledger.routing import owner_of, set_customer_owner

    if args.action == "show":
        from commands.customers import show_customer

        show_customer(settings, args.customer_id, as_json=args.json)
        return
    if args.action != "owner":
        raise CommandError(f"unknown action {args.action!r}")
    if args.none and args.email is not None:
        raise CommandError("give the owner's email or --none, not both")
    if args.email is None and not args.none:
        owner = in_ledger(settings, lambda s: owner_of(s, args.customer_id))
    else:
        owner = in_ledger(settings, lambda s: set_customer_owner(s, args.customer_id, args.email))
    print(f"customer {args.customer_id}: {f'owner {owner}' if owner else 'no owner'}")


def in_ledger(settings: Settings, change: Callable[[Session], T]) -> T:
    """Run `change(session)` in one transaction on the migrated ledger; its answer."""
    from ledger.books import LedgerError
    from ledger.db import make_engine, session_scope
    from ledger.migrate import upgrade

    upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url)
    try:
        with session_scope(engine) as session:
            return change(session)
    except LedgerError as err:
        raise CommandError(str(err)) from None
    finally:
        engine.dispose()
