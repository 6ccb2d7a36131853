"""Invoices per second through a whole lifecycle, against a no-op Temporal baseline.

    python bench/lifecycle.py [--invoices 200] [--concurrency 50] [--json]

Starts the embedded Temporal dev server (in memory) and a scratch SQLite ledger, then runs
each invoice the way production does: rows into the ledger, workflow started with the
shipped standard policy, its first reminder (the courtesy email) sent, a full payment
through the record_payment update, then ERP clearing, the receipt email and close.
The dev server runs on the wall clock and reminder steps are days apart, so each invoice's
clock is set (through the input's clock offset) to just before its first reminder.

The baseline runs as many workflows with the same number of timers and activities as one
real invoice's history shows, no-ops all, driven the same way (start, update, result) with
the same concurrency. The ratio dunwise / baseline is the share of Temporal's own
throughput that dunwise keeps.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from baseline_workflow import PAY_AFTER, TIMER, Shape, baseline_workers, run_baseline
from harness import arguments, measure, scratch_stack, start_dev_server
from sqlmodel import func, select
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle

from invoices import invoice_input, start_invoice_workflow
from ledger.db import session_scope
from ledger.models import Customer, Invoice, InvoiceStatus
from policies.loader import load_policy
from policies.schedule import build_schedule
from policies.schema import Policy
from settings import Settings, default_activity_processes
from worker_processes import split_worker
from workflows.invoice import InvoiceWorkflow
from workflows.models import PaymentReceived

STANDARD_POLICY = Path(__file__).resolve().parent.parent / "policies" / "standard.yaml"
AMOUNT_MINOR = 125_000


@dataclass(frozen=True)
class Run:
    count: int
    wall_seconds: float
    cpu_seconds: float  # this process (worker and driver), not the Temporal server
    latencies: list[float]

    @property
    def per_second(self) -> float:
        return self.count / self.wall_seconds

    def summary(self) -> dict[str, float]:
        ordered = sorted(self.latencies)
        return {
            "count": self.count,
            "wall_seconds": round(self.wall_seconds, 3),
            "per_second": round(self.per_second, 2),
            "python_cpu_ms_each": round(1000 * self.cpu_seconds / self.count, 1),
            "latency_p50_seconds": round(statistics.median(ordered), 3),
            "latency_p95_seconds": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
        }


async def run_all(count: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> Run:
    """Run one(0..count-1) with at most `concurrency` in flight; time the whole batch."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def timed(index: int) -> None:
        async with gate:
            started = time.perf_counter()
            await one(index)
            latencies.append(time.perf_counter() - started)

    started, cpu = time.perf_counter(), time.process_time()
    async with asyncio.TaskGroup() as group:
        for index in range(count):
            group.create_task(timed(index))
    return Run(count, time.perf_counter() - started, time.process_time() - cpu, latencies)


# ----------------------------------------------------------------------------- dunwise


@dataclass
class Dunwise:
    client: Client
    settings: Settings
    engine: sa.Engine
    policy: Policy

    async def invoice(self, number: str) -> WorkflowHandle:
        """Import, start, pay in full, and wait until the invoice is closed."""
        invoice, timezone = await asyncio.to_thread(self._import, number)
        first = build_schedule(
            self.policy,
            issued_on=invoice.issued_on,
            due_on=invoice.due_on,
            customer_timezone=timezone,
        )[0]
        offset = datetime.now(UTC) - (first.send_at - TIMER)
        handle = await start_invoice_workflow(
            self.client,
            self.settings,
            invoice_input(invoice, timezone, self.policy, clock_offset=offset),
        )
        await asyncio.sleep(PAY_AFTER.total_seconds())
        payment = PaymentReceived(
            amount_minor=AMOUNT_MINOR, currency="USD", method="card", reference=f"ch_{number}"
        )
        await handle.execute_update(InvoiceWorkflow.record_payment, payment)
        state = await handle.result()
        if state.status != InvoiceStatus.CLOSED:
            raise RuntimeError(f"invoice {number} ended {state.status}, not closed")
        return handle

    def _import(self, number: str) -> tuple[Invoice, str]:
        today = date.today()
        customer = Customer(
            id=f"cust-{number}",
            name=f"Customer {number}",
            email=f"ap-{number.lower()}@customer.example",
            phone="+12125550100",
            timezone="America/New_York",
            segment="smb",
        )
        invoice = Invoice(
            number=number,
            customer_id=customer.id,
            currency="USD",
            total_minor=AMOUNT_MINOR,
            balance_minor=AMOUNT_MINOR,
            issued_on=today,
            due_on=today + timedelta(days=30),
            policy_name=self.policy.name,
            policy_version=self.policy.version,
        )
        with session_scope(self.engine) as session:
            session.add(customer)
            session.add(invoice)
        return invoice, customer.timezone


async def history_shape(handle: WorkflowHandle) -> tuple[Shape, list[str], int]:
    """Timers and activities in one invoice's history, the activity names, and its length."""
    history = await handle.fetch_history()
    kinds = Counter(event.event_type for event in history.events)
    names = [
        event.activity_task_scheduled_event_attributes.activity_type.name
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    shape = Shape(
        timers_fired=kinds[EventType.EVENT_TYPE_TIMER_FIRED],
        timers_canceled=kinds[EventType.EVENT_TYPE_TIMER_CANCELED],
        activities=kinds[EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED],
    )
    return shape, names, len(history.events)


def ledger_check(engine: sa.Engine, settings: Settings) -> dict[str, int]:
    """What the run left behind: every invoice closed, cleared once and receipted once."""
    with session_scope(engine) as session:
        closed = session.exec(
            select(func.count()).select_from(Invoice).where(Invoice.status == InvoiceStatus.CLOSED)
        ).one()
        total = session.exec(select(func.count()).select_from(Invoice)).one()
    journal = settings.effective_erp_journal
    emails = settings.effective_outbox_dir / "email"
    return {
        "invoices": total,
        "closed": closed,
        "erp_journal_lines": len(journal.read_text().splitlines()) if journal.exists() else 0,
        "receipt_emails": len(list(emails.glob("*receipt*"))) if emails.exists() else 0,
        "reminder_emails": len(list(emails.glob("*step*"))) if emails.exists() else 0,
    }


# ----------------------------------------------------------------------------- main


async def bench(invoices: int, concurrency: int, warmup: int, activity_processes: int) -> dict:
    with scratch_stack(
        "dunwise-bench-", "bench-dunwise", activity_processes=activity_processes
    ) as (settings, engine):
        async with await start_dev_server() as env:
            dunwise = Dunwise(env.client, settings, engine, load_policy(STANDARD_POLICY))
            async with split_worker(env.client, settings, engine):
                # Warm-up runs load the sandbox and fill caches; they are not timed.
                await run_all(warmup, concurrency, lambda i: dunwise.invoice(f"W{i:06d}"))
                handles: dict[int, WorkflowHandle] = {}

                async def one_invoice(index: int) -> None:
                    handles[index] = await dunwise.invoice(f"B{index:06d}")

                real = await run_all(invoices, concurrency, one_invoice)
            # Histories differ only where the update lands before the first task or after.
            shapes: Counter[tuple[Shape, tuple[str, ...]]] = Counter()
            lengths: list[int] = []
            for handle in handles.values():
                shape, names, length = await history_shape(handle)
                shapes[(shape, tuple(names))] += 1
                lengths.append(length)
            (shape, names), same_shape = shapes.most_common(1)[0]

            queue = "bench-baseline"
            async with baseline_workers(env.client, queue, activity_processes):
                await run_all(
                    warmup,
                    concurrency,
                    lambda i: run_baseline(env.client, queue, shape, f"warmup-{i}"),
                )
                baseline = await run_all(
                    invoices,
                    concurrency,
                    lambda i: run_baseline(env.client, queue, shape, str(i)),
                )
        check = ledger_check(engine, settings)
    return {
        "invoices": invoices,
        "concurrency": concurrency,
        "warmup": warmup,
        "activity_processes": activity_processes,
        "per_invoice": {
            **asdict(shape),
            "activity_names": list(names),
            "history_events_min": min(lengths),
            "history_events_max": max(lengths),
            "histories_of_other_shapes": invoices - same_shape,
        },
        "dunwise": real.summary(),
        "baseline": baseline.summary(),
        "ratio": round(real.per_second / baseline.per_second, 3),
        "ledger": check,
    }


def report(result: dict) -> str:
    shape = result["per_invoice"]
    lines = [
        f"{result['invoices']} invoices, concurrency {result['concurrency']}, "
        f"after {result['warmup']} warm-up runs each "
        "(embedded Temporal dev server in memory, SQLite ledger)",
        f"one invoice: {shape['timers_fired']} timer(s) fired, {shape['timers_canceled']} "
        f"canceled, {shape['activities']} activities "
        f"({', '.join(shape['activity_names'])}), {shape['history_events_min']}-"
        f"{shape['history_events_max']} history events",
    ]
    for name in ("dunwise", "baseline"):
        run = result[name]
        lines.append(
            f"{name:<9} {run['count']} in {run['wall_seconds']:.2f} s = "
            f"{run['per_second']:.1f}/s  (latency p50 {run['latency_p50_seconds']:.3f} s, "
            f"p95 {run['latency_p95_seconds']:.3f} s, "
            f"{run['python_cpu_ms_each']:.0f} ms Python CPU each)"
        )
    lines.append(f"ratio dunwise / baseline: {result['ratio']:.2f}")
    ledger = result["ledger"]
    lines.append(
        f"ledger: {ledger['closed']} of {ledger['invoices']} invoices closed, "
        f"{ledger['erp_journal_lines']} ERP journal lines, {ledger['receipt_emails']} receipts, "
        f"{ledger['reminder_emails']} reminders"
    )
    return "\n".join(lines)


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--invoices", type=int, default=200, help="invoices (and baseline runs)")
    parser.add_argument("--concurrency", type=int, default=50, help="lifecycles in flight at once")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs of each before")
    parser.add_argument(
        "--activity-processes",
        type=int,
        default=default_activity_processes(),
        help="both workers run their activities in N processes of their own (default: as "
        "DUNWISE_ACTIVITY_PROCESSES's, 1 on a machine of two cores or more)",
    )
    args = parser.parse_args()
    if args.invoices < 1 or args.concurrency < 1 or args.warmup < 0 or args.activity_processes < 0:
        parser.error(
            "--invoices and --concurrency must be at least 1, --warmup and "
            "--activity-processes at least 0"
        )
    result = measure(
        bench(args.invoices, args.concurrency, args.warmup, args.activity_processes),
        args.json,
        report,
    )
    ledger = result["ledger"]
    expected = args.invoices + args.warmup
    if not ledger["closed"] == ledger["erp_journal_lines"] == ledger["receipt_emails"] == expected:
        sys.exit(f"the ledger does not show {expected} closed, cleared and receipted invoices")


if __name__ == "__main__":
    main()
