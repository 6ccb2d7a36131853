"""What-if simulation: the real workflows and activities on a time-skipping server.

Finance ops give a policy, invoices and (optionally) payments; the simulation imports them
into a scratch ledger, runs every invoice workflow over N days of virtual time and returns
every message, escalation and payment that would happen.

The payments file is read by `simulation_inputs`; the events returned, and the timeline
finance ops read, are `simulation_report`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError

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
from workflows.models import PaymentReceived

PAYMENT_LOCAL_TIME = time(12, 0)
SKIP_STEP = timedelta(days=1)
ZERO = timedelta(0)


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
    env = await time_skipping_environment()
    async with env, split_worker(env.client, settings, engine):
        offset = await env.get_current_time() - start
        run = _Run(env, settings, policy, by_number, offset, start, on_days)
        # Each invoice starts on its issue date and each payment lands at noon on its date,
        # both in the customer's timezone; at the same moment, the start comes first.
        actions = [(issue_times[invoice.number], 0, invoice) for invoice in invoices]
        actions += [
            (_local(p.paid_on, PAYMENT_LOCAL_TIME, by_number[p.invoice_number]), 1, p)
            for p in payments
        ]
        for moment, _, subject in sorted(actions, key=lambda action: action[:2]):
            if moment > end:
                break
            await run.sleep_until(moment)
            if isinstance(subject, Invoice):
                await run.start(subject)
            else:
                await run.pay(subject, moment)
        await run.sleep_until(end)
        states = [await handle.query(InvoiceWorkflow.state) for handle in run.handles.values()]
    engine.dispose()

    events = [
        timeline_event(state.number, entry, by_number[state.number], state.currency)
        for state in states
        for entry in state.timeline
        if entry.at <= end
    ]
    events.extend(run.refused)
    events.sort(key=lambda e: (e.at.astimezone(UTC), e.invoice))
    return SimulationResult(
        events=events, final_states=states, outbox=settings.effective_outbox_dir
    )


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
    """The workflows of one simulation, on a server whose clock runs `offset` ahead."""

    def __init__(
        self,
        env,
        settings: Settings,
        policy: Policy,
        rows,
        offset: timedelta,
        start: datetime,
        on_days: Callable[[int], object] | None = None,
    ) -> None:
        self.env = env
        self.settings = settings
        self.policy = policy
        self.rows: dict[str, InvoiceRow] = rows
        self.offset = offset
        self.first_issue = start
        self.on_days = on_days
        self.days_told = 0
        self.handles: dict[str, WorkflowHandle] = {}
        self.refused: list[SimulationEvent] = []

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
        if self.on_days is not None and days > self.days_told:
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
