"""A burst of reminders: N invoices whose first reminder falls due at the same instant.

    python bench/burst.py [--invoices 10000] [--json]

Starts the embedded Temporal dev server (in memory), a scratch SQLite ledger with durable
writes and the dunwise worker as `dunwise run` does (its activities in processes of their
own, `--activity-processes`), then N invoices under the shipped standard policy spread over
customers of one, two and three invoices due the same day (so most reminders are gathered by
their customer's coordinator into one message, and a third go out alone). Each invoice's
clock is set (through the input's clock offset) so that its courtesy email falls due at one
wall-clock instant, a little after every workflow has started.

Prints the time from that instant until every message is in the outbox, messages and
reminders per second, the worker's peak memory (this process, with the workflows and the
driver, and its activity processes), and the Temporal actions and the workflow tasks that
timed out (each then replayed from its history) per reminder, counted on a sample of
invoices and their coordinators.
"""

from __future__ import annotations

import asyncio
import random
import resource
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from harness import arguments, measure, scratch_stack, start_dev_server
from process_cpu import children_peak_memory_mb
from sqlmodel import func, select
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from invoices import invoice_input, start_invoice_workflow
from ledger.db import session_scope
from ledger.models import Customer, Invoice, Message
from policies.loader import load_policy
from policies.schedule import build_schedule
from settings import Settings, default_activity_processes
from vocabulary import MessageStatus
from worker_processes import ACTIVITIES_ONLY, split_worker

STANDARD_POLICY = Path(__file__).resolve().parent.parent / "policies" / "standard.yaml"
ZONE = "America/New_York"
STARTS_IN_FLIGHT = 200
SAMPLED_HISTORIES = 40
STALLED_AFTER_SECONDS = 120
# Events that are Temporal actions (what a hosted Temporal bills), by type.
ACTIONS = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
    EventType.EVENT_TYPE_TIMER_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
    EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED,
    EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
    EventType.EVENT_TYPE_MARKER_RECORDED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
}


def customers_for(invoices: int) -> list[tuple[str, list[str]]]:
    """Customers of one, two and three invoices in turn, N invoices in all."""
    result, made, index = [], 0, 0
    while made < invoices:
        size = min(index % 3 + 1, invoices - made)
        result.append(
            (f"C{index:06d}", [f"B{made + k:06d}" for k in range(size)]),
        )
        made, index = made + size, index + 1
    return result


def add_ledger_rows(engine: sa.Engine, customers: list[tuple[str, list[str]]], due: date) -> None:
    policy = load_policy(STANDARD_POLICY)
    with session_scope(engine) as session:
        for customer_id, numbers in customers:
            session.add(
                Customer(
                    id=customer_id,
                    name=f"Customer {customer_id}",
                    email=f"ap-{customer_id.lower()}@customer.example",
                    timezone=ZONE,
                )
            )
            for number in numbers:
                session.add(
                    Invoice(
                        number=number,
                        customer_id=customer_id,
                        currency="USD",
                        total_minor=10_000,
                        balance_minor=10_000,
                        issued_on=due - timedelta(days=30),
                        due_on=due,
                        policy_name=policy.name,
                        policy_version=policy.version,
                    )
                )


async def start_all(
    client: Client, settings: Settings, engine: sa.Engine, offset: timedelta
) -> None:
    policy = load_policy(STANDARD_POLICY)
    with session_scope(engine) as session:
        invoices = list(session.exec(select(Invoice)).all())
        for invoice in invoices:
            session.expunge(invoice)
    gate = asyncio.Semaphore(STARTS_IN_FLIGHT)

    async def start(invoice: Invoice) -> None:
        async with gate:
            await start_invoice_workflow(
                client,
                settings,
                invoice_input(
                    invoice, ZONE, policy, clock_offset=offset, planned_at=datetime.now(UTC)
                ),
            )

    async with asyncio.TaskGroup() as group:
        for invoice in invoices:
            group.create_task(start(invoice))


def messages_done(engine: sa.Engine) -> tuple[int, int]:
    """Reminder rows recorded final, and the messages that went out (rows that delivered)."""
    with session_scope(engine) as session:
        final = session.exec(
            select(func.count()).select_from(Message).where(Message.status != MessageStatus.SENDING)
        ).one()
        delivered = session.exec(
            select(func.count())
            .select_from(Message)
            .where(
                Message.status == MessageStatus.SENT,
                sa.or_(Message.sent_with_id.is_(None), Message.sent_with_id == Message.id),
            )
        ).one()
    return final, delivered


async def per_reminder(
    client: Client, customers: list[tuple[str, list[str]]]
) -> tuple[float, float]:
    """History events that are actions, and workflow tasks that timed out (and so went to a
    replay), per reminder, of a sample of invoices and their coordinators."""
    sample = random.Random(7).sample(customers, min(SAMPLED_HISTORIES, len(customers)))
    actions, timeouts, reminders = 0, 0, 0
    for customer_id, numbers in sample:
        workflow_ids = [f"invoice-{number}" for number in numbers]
        if len(numbers) > 1:
            workflow_ids.append(f"customer-{customer_id}")
        for workflow_id in workflow_ids:
            history = await client.get_workflow_handle(workflow_id).fetch_history()
            kinds = Counter(event.event_type for event in history.events)
            actions += sum(kinds[kind] for kind in ACTIONS)
            timeouts += kinds[EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT]
        reminders += len(numbers)
    return actions / reminders, timeouts / reminders


async def bench(invoices: int, activity_processes: int, progress: bool = False) -> dict:
    customers = customers_for(invoices)
    stack = scratch_stack("dunwise-burst-", "bench-burst", activity_processes=activity_processes)
    with stack as (settings, engine):
        due = date.today() + timedelta(days=30)
        add_ledger_rows(engine, customers, due)
        first = build_schedule(
            load_policy(STANDARD_POLICY),
            issued_on=due - timedelta(days=30),
            due_on=due,
            customer_timezone=ZONE,
        )[0]
        # Every workflow must have started before the instant (one started after it would
        # skip the step, as an invoice imported late does): on this machine, with the worker
        # busy starting each, 25 starts a second is a safe floor.
        lead = timedelta(seconds=20 + invoices / 25)
        instant = datetime.now(UTC) + lead
        async with await start_dev_server() as env, split_worker(env.client, settings, engine):
            started = time.perf_counter()
            await start_all(env.client, settings, engine, instant - first.send_at)
            start_seconds = time.perf_counter() - started
            late_start = max(0.0, (datetime.now(UTC) - instant).total_seconds())
            if late_start:
                sys.exit(f"the workflows started {late_start:.0f} s after the instant")
            # Nothing can be done before the instant: the stall clock starts there.
            wait = max(0.0, (instant - datetime.now(UTC)).total_seconds())
            last_change, done_before = time.monotonic() + wait, 0
            while True:
                final, delivered = messages_done(engine)
                if final >= invoices:
                    break
                if final > done_before:
                    last_change, done_before = time.monotonic(), final
                elif time.monotonic() - last_change > STALLED_AFTER_SECONDS:
                    # An invoice whose first workflow task ran after the instant skipped
                    # the step as past: it will never send. Say so rather than wait forever.
                    sys.exit(
                        f"stalled at {final} of {invoices} reminders: some invoices' first "
                        "workflow task ran after the instant; run fewer invoices"
                    )
                if progress:
                    print(f"  {final} of {invoices} reminders done", file=sys.stderr)
                await asyncio.sleep(1 if progress else 0.25)
            seconds = (datetime.now(UTC) - instant).total_seconds()
            activity_memory_mb = children_peak_memory_mb([ACTIVITIES_ONLY])[ACTIVITIES_ONLY]
            actions, timeouts = await per_reminder(env.client, customers)
        emails = sum(1 for _ in (settings.effective_outbox_dir / "email").glob("*.eml"))
    return {
        "invoices": invoices,
        "customers": len(customers),
        "seconds": round(seconds, 2),
        "messages": delivered,
        "emails_in_outbox": emails,
        "messages_per_second": round(delivered / seconds, 1),
        "reminders_per_second": round(invoices / seconds, 1),
        "start_seconds": round(start_seconds, 2),
        "started_after_the_instant_seconds": round(late_start, 2),
        "activity_processes": activity_processes,
        "peak_memory_mb": round(own_peak_memory_mb() + activity_memory_mb, 1),
        "temporal_actions_per_reminder": round(actions, 1),
        "workflow_task_timeouts_per_reminder": round(timeouts, 2),
    }


def own_peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def report(result: dict) -> str:
    return "\n".join(
        [
            f"{result['invoices']} reminders due at one instant, {result['customers']} customers "
            "(embedded Temporal dev server in memory, SQLite ledger, durable writes)",
            f"all in the outbox {result['seconds']:.1f} s after the instant: "
            f"{result['messages']} messages ({result['messages_per_second']:.1f}/s), "
            f"{result['reminders_per_second']:.1f} reminders/s",
            f"workflows started in {result['start_seconds']:.1f} s"
            + (
                f" (the last {result['started_after_the_instant_seconds']:.1f} s after the instant)"
                if result["started_after_the_instant_seconds"]
                else ""
            ),
            f"peak memory of the worker: {result['peak_memory_mb']:.0f} MB "
            f"(with {result['activity_processes']} activity process(es))",
            f"Temporal actions per reminder: {result['temporal_actions_per_reminder']:.1f}, "
            f"workflow tasks timed out per reminder: "
            f"{result['workflow_task_timeouts_per_reminder']:.2f}",
        ]
    )


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--invoices", type=int, default=10_000, help="reminders in the burst")
    parser.add_argument("--progress", action="store_true", help="reminders done, each second")
    parser.add_argument(
        "--activity-processes",
        type=int,
        default=default_activity_processes(),
        help="the worker runs its activities in N processes of their own (default: as "
        "DUNWISE_ACTIVITY_PROCESSES's, 1 on a machine of two cores or more)",
    )
    args = parser.parse_args()
    if args.invoices < 1 or args.activity_processes < 0:
        parser.error("--invoices must be at least 1 and --activity-processes at least 0")
    result = measure(
        bench(args.invoices, args.activity_processes, progress=args.progress), args.json, report
    )
    if result["emails_in_outbox"] != result["messages"]:
        sys.exit(
            f"{result['messages']} messages sent but {result['emails_in_outbox']} in the outbox"
        )


if __name__ == "__main__":
    main()
