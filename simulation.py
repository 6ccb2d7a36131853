"""What-if simulation: the real workflows and activities on a time-skipping server.

Finance ops give a policy, invoices and (optionally) payments; the simulation imports them
into a scratch ledger, runs every invoice workflow over N days of virtual time and returns
every message, escalation and payment that would happen.

Invariants:
- The invoices are split by customer into shards, each run on a time-skipping server of its
  own; a customer's invoices and payments are all in one shard, so its coordinator gathers
  them as one server would.
- Every shard's clock starts at the first issue date of the whole run, and the events of all
  shards come back in one timeline, ordered by time and invoice.

The payments file is read by `simulation_inputs`; the events returned, and the timeline
finance ops read, are `simulation_report`'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from invoices import invoice_input, start_invoice_workflow
from ledger.currencies import currency_exponent
from ledger.db import make_engine, session_scope
from ledger.import_rows import ImportRejected, InvoiceRow
from ledger.imports import import_invoices, read_invoice_rows
from ledger.migrate import upgrade
from ledger.models import Invoice
from policies.money import to_minor
from policies.schema import Policy
from settings import LONGEST_GROUP_WINDOW_SECONDS, Settings
from simulation_inputs import InputFileRejected, PaymentRow, read_payment_rows
from simulation_report import SimulationEvent, SimulationResult, timeline_event
from temporal_client import skip_time, time_skipping_environment
from worker_processes import split_worker
from workflows.invoice import InvoiceWorkflow
from workflows.models import InvoiceState, PaymentReceived

PAYMENT_LOCAL_TIME = time(12, 0)
SKIP_STEP = timedelta(days=1)
ZERO = timedelta(0)
# The time-skipping server's cost of each step grows with everything it has run (it keeps a
# list of every lock and unlock and searches it on each step), so a long run on one server
# grows with the square of its size: 1,000 invoices took six times as long as 250. Customers
# are independent, so the invoices are split by customer over servers of their own.
SHARD_INVOICES = 250
SHARDS_AT_ONCE = 2

# When it happens, in what order at the same moment, and what: an invoice issued or a payment.
_Action = tuple[datetime, int, Invoice | PaymentRow]


async def simulate(
    policy: Policy,
    invoices_path: Path,
    workdir: Path,
    *,
    payments_path: Path | None = None,
    days: int = 120,
    on_days: Callable[[int], object] | None = None,
) -> SimulationResult:
    """Run `policy` over the invoices for `days` of virtual time from the first issue date.

    `on_days`, if given, is told each time more days have been simulated, with how many more
    (they add up to `days`), so a terminal can show how far the run is.
    """
    try:
        rows = read_invoice_rows(invoices_path)
    except ImportRejected as rejected:
        raise InputFileRejected(invoices_path, rejected.errors) from None
    by_number = {row.invoice_number: row for row in rows}
    payments = read_payment_rows(payments_path, by_number) if payments_path else []

    settings = _simulated(Settings.scratch(workdir, task_queue="dunwise-simulation"))
    workdir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url, durable=False)
    with session_scope(engine) as session:
        invoices = import_invoices(session, rows, lambda _row: (policy.name, policy.version))

    issue_times = {row.invoice_number: _local(row.issued_on, time(0), row) for row in rows}
    start = min(issue_times.values())
    end = start + timedelta(days=days)
    # Each invoice starts on its issue date and each payment lands at noon on its date,
    # both in the customer's timezone; at the same moment, the start comes first.
    actions: list[_Action] = [(issue_times[invoice.number], 0, invoice) for invoice in invoices]
    actions += [
        (_local(p.paid_on, PAYMENT_LOCAL_TIME, by_number[p.invoice_number]), 1, p) for p in payments
    ]
    actions.sort(key=lambda action: action[:2])
    shards = _shards(actions, by_number)
    told = _DaysTold(on_days, shards=len(shards))
    gate = asyncio.Semaphore(SHARDS_AT_ONCE)

    async def play(index: int, shard: list[_Action]) -> _Run:
        async with gate:
            run = _Run(settings, policy, by_number, start, lambda more: told.add(index, more))
            await run.play(shard, engine, end)
            return run

    runs = await asyncio.gather(*(play(index, shard) for index, shard in enumerate(shards)))
    engine.dispose()

    states = {state.number: state for run in runs for state in run.states}
    started = [subject.number for _, _, subject in actions if isinstance(subject, Invoice)]
    final_states = [states[number] for number in started if number in states]
    events = [
        timeline_event(state.number, entry, by_number[state.number], state.currency)
        for state in final_states
        for entry in state.timeline
        if entry.at <= end
    ]
    events.extend(refused for run in runs for refused in run.refused)
    events.sort(key=lambda e: (e.at.astimezone(UTC), e.invoice))
    return SimulationResult(
        events=events, final_states=final_states, outbox=settings.effective_outbox_dir
    )


def _shards(actions: list[_Action], rows: dict[str, InvoiceRow]) -> list[list[_Action]]:
    """The actions split by customer into shards of about SHARD_INVOICES invoices, each in
    order. A customer's invoices and payments stay together: its coordinator gathers them."""
    invoices_of: dict[str, int] = {}
    for _, _, subject in actions:
        if isinstance(subject, Invoice):
            invoices_of[subject.customer_id] = invoices_of.get(subject.customer_id, 0) + 1
    shard_of: dict[str, int] = {}
    sizes: list[int] = []
    for customer, count in invoices_of.items():
        if not sizes or sizes[-1] + count > SHARD_INVOICES:
            sizes.append(0)
        shard_of[customer] = len(sizes) - 1
        sizes[-1] += count
    shards: list[list[_Action]] = [[] for _ in sizes]
    for action in actions:
        subject = action[2]
        number = subject.number if isinstance(subject, Invoice) else subject.invoice_number
        shards[shard_of[rows[number].customer_id]].append(action)
    return shards


class _DaysTold:
    """Tells `on_days` how far the whole run is: the days every shard has simulated, on
    average, so the days told add up to the days asked."""

    def __init__(self, on_days: Callable[[int], object] | None, shards: int) -> None:
        self.on_days = on_days
        self.shards = shards
        self.days = [0] * shards
        self.told = 0

    def add(self, shard: int, more: int) -> None:
        self.days[shard] += more
        now = sum(self.days) // self.shards
        if self.on_days is not None and now > self.told:
            self.on_days(now - self.told)
            self.told = now


def _simulated(settings: Settings) -> Settings:
    """The settings a simulation runs with. The time-skipping server's clock runs at the wall
    clock's pace while the worker works, so a gathering window of a few seconds would measure
    how busy the worker is rather than the customer's day: reminders that production sends in
    one message went out apart. A simulation gathers with the longest window instead (unless
    gathering is off)."""
    if settings.message_group_window_seconds <= 0:
        return settings
    return settings.model_copy(
        update={"message_group_window_seconds": LONGEST_GROUP_WINDOW_SECONDS}
    )


def _local(day: date, at: time, row: InvoiceRow) -> datetime:
    return datetime.combine(day, at, ZoneInfo(row.timezone))


class _Run:
    """The workflows of one shard, on a time-skipping server of its own."""

    def __init__(
        self,
        settings: Settings,
        policy: Policy,
        rows: dict[str, InvoiceRow],
        first_issue: datetime,
        on_days: Callable[[int], object],
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.rows = rows
        self.first_issue = first_issue
        self.on_days = on_days
        self.days_told = 0
        self.handles: dict[str, WorkflowHandle] = {}
        self.refused: list[SimulationEvent] = []
        self.states: list[InvoiceState] = []
        self.env: WorkflowEnvironment  # the shard's server, once `play` started it
        self.offset = ZERO  # how far its clock runs ahead of the simulated one

    async def play(self, actions: list[_Action], engine: sa.Engine, end: datetime) -> None:
        """Start the invoices and make the payments in order, then run on until `end` and
        keep every invoice's final state."""
        self.env = await time_skipping_environment()
        async with self.env, split_worker(self.env.client, self.settings, engine):
            self.offset = await self.env.get_current_time() - self.first_issue
            for moment, _, subject in actions:
                if moment > end:
                    break
                await self.sleep_until(moment)
                if isinstance(subject, Invoice):
                    await self.start(subject)
                else:
                    await self.pay(subject, moment)
            await self.sleep_until(end)
            self.states = [
                await handle.query(InvoiceWorkflow.state) for handle in self.handles.values()
            ]

    async def sleep_until(self, moment: datetime) -> None:
        # A day at a time: one long skip over many busy workflows can outlast the RPC deadline.
        # In UTC: adding the offset to a local time would add wall-clock time, an hour off
        # when the server's date and the simulated one are on different sides of a DST change.
        target = moment.astimezone(UTC) + self.offset
        while (remaining := target - (now := await self.env.get_current_time())) > ZERO:
            self._tell_days(now)
            await skip_time(self.env, min(remaining, SKIP_STEP))
        self._tell_days(now)

    def _tell_days(self, now: datetime) -> None:
        # Days as the end of the run counts them, on the first invoice's wall clock: a DST
        # change in between makes one of them 23 or 25 hours long.
        simulated = (now - self.offset).astimezone(self.first_issue.tzinfo)
        wall_clock = simulated.replace(tzinfo=None) - self.first_issue.replace(tzinfo=None)
        days = wall_clock // SKIP_STEP
        if days > self.days_told:
            self.on_days(days - self.days_told)
            self.days_told = days

    async def start(self, invoice: Invoice) -> None:
        timezone = self.rows[invoice.number].timezone
        self.handles[invoice.number] = await start_invoice_workflow(
            self.env.client,
            self.settings,
            invoice_input(invoice, timezone, self.policy, clock_offset=self.offset),
        )

    async def pay(self, payment: PaymentRow, moment: datetime) -> None:
        currency = self.rows[payment.invoice_number].currency
        handle = self.handles.get(payment.invoice_number)
        try:
            if handle is None:
                raise ValueError("paid before the invoice was issued")
            await handle.execute_update(
                InvoiceWorkflow.record_payment,
                PaymentReceived(
                    amount_minor=to_minor(payment.amount, currency_exponent(currency)),
                    currency=currency,
                    method="simulated",
                    received_at=moment,
                ),
            )
        except (WorkflowUpdateFailedError, ValueError) as err:
            reason = err.cause if isinstance(err, WorkflowUpdateFailedError) else err
            self.refused.append(
                SimulationEvent(
                    invoice=payment.invoice_number,
                    at=moment,
                    event="payment_refused",
                    channel=None,
                    template=None,
                    detail=str(reason),
                    amount=f"{currency} {payment.amount}",
                )
            )
