"""What-if simulation: the real workflows and activities on a time-skipping server.

Finance ops give a policy, invoices and (optionally) payments; the simulation imports them
into a scratch ledger, runs every invoice workflow over N days of virtual time and returns
every message, escalation and payment that would happen.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError

from activities.currency import format_money
from invoices import invoice_input, start_invoice_workflow
from ledger.currencies import currency_exponent
from ledger.db import make_engine, session_scope
from ledger.import_rows import ImportRejected, InvoiceRow, RowError
from ledger.imports import import_invoices, read_invoice_rows
from ledger.inputs import parse_amount, parse_date, positive_minor_units
from ledger.migrate import upgrade
from ledger.models import Invoice
from policies.money import to_minor
from policies.schema import Policy
from settings import Settings
from temporal_client import time_skipping_environment
from worker import build_worker
from workflows.invoice import InvoiceWorkflow
from workflows.models import InvoiceState, PaymentReceived, Stage

PAYMENT_LOCAL_TIME = time(12, 0)
SKIP_STEP = timedelta(days=1)
ZERO = timedelta(0)
PAYMENT_COLUMNS = ("invoice_number", "paid_on", "amount")


class InputFileRejected(ImportRejected):
    """An input file of a simulation was refused: every problem, each named with the file.

    `errors` are the RowErrors (row and field) as for any import; the text puts the path
    before each, so the invoices file and the payments file cannot be told apart wrongly.
    """

    def __init__(self, path: Path, errors: Iterable[RowError]) -> None:
        super().__init__(errors)
        self.path = path
        count = len(self.errors)
        lines = "\n".join(f"{path}: {error}" for error in self.errors)
        self.args = (f"{path} refused, {count} problem{'s' if count != 1 else ''}:\n{lines}",)


class PaymentRow(BaseModel):
    invoice_number: str
    paid_on: date
    amount: Decimal

    @field_validator("paid_on", mode="before")
    @classmethod
    def _iso_date(cls, value: object) -> date:
        try:
            return parse_date(value)
        except ValueError as err:
            raise PydanticCustomError("payment_row", str(err)) from None

    @field_validator("amount", mode="before")
    @classmethod
    def _plain_decimal(cls, value: object) -> Decimal:
        try:
            return parse_amount(value)
        except ValueError as err:
            raise PydanticCustomError("payment_row", str(err)) from None


@dataclass(frozen=True)
class SimulationEvent:
    invoice: str
    at: datetime  # in the customer's timezone
    event: str
    channel: str | None
    template: str | None
    detail: str
    amount: str | None

    def as_json(self) -> str:
        record = asdict(self)
        record["at"] = self.at.isoformat()
        return json.dumps(record)


@dataclass(frozen=True)
class SimulationResult:
    events: list[SimulationEvent]
    final_states: list[InvoiceState]
    outbox: Path


def read_payment_rows(path: Path, invoices: dict[str, InvoiceRow]) -> list[PaymentRow]:
    """Read `invoice_number,paid_on,amount`; every bad row is reported, none is dropped.

    InputFileRejected names the file, and each problem its row (the header is row 1) and field.
    """
    errors: list[RowError] = []
    payments: list[PaymentRow] = []
    for line, record in _payment_records(path):
        try:
            payment = PaymentRow.model_validate(record)
        except ValidationError as err:
            for problem in err.errors():
                field = ".".join(str(part) for part in problem["loc"]) or "row"
                message = "missing or empty" if problem["type"] == "missing" else problem["msg"]
                errors.append(RowError(line, field, message))
            continue
        invoice = invoices.get(payment.invoice_number)
        if invoice is None:
            errors.append(
                RowError(line, "invoice_number", f"unknown invoice {payment.invoice_number}")
            )
            continue
        try:
            positive_minor_units(payment.amount, invoice.currency)
        except ValueError as err:
            errors.append(RowError(line, "amount", str(err)))
            continue
        payments.append(payment)
    if errors:
        raise InputFileRejected(path, errors)
    return payments


def _payment_records(path: Path) -> list[tuple[int, dict[str, str]]]:
    """(line of the file, record) of every non-blank row, or InputFileRejected."""

    def refused(row: int, field: str, message: str) -> InputFileRejected:
        return InputFileRejected(path, [RowError(row, field, message)])

    records: list[tuple[int, dict[str, str]]] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [name.strip().lower() for name in next(reader, [])]
            if not any(header):
                raise refused(0, "file", "the file is empty: expected a header row")
            missing = [c for c in PAYMENT_COLUMNS if c not in header]
            if missing:
                raise InputFileRejected(
                    path, [RowError(1, c, "column missing from the header") for c in missing]
                )
            last_line = reader.line_num
            for values in reader:
                line, last_line = last_line + 1, reader.line_num
                if any(value.strip() for value in values):
                    record = dict(zip(header, values, strict=False))
                    records.append((line, {k: v.strip() for k, v in record.items() if v.strip()}))
    except OSError as err:
        raise refused(0, "file", f"cannot read {path.name}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise refused(0, "file", f"{path.name} is not UTF-8 text") from None
    except csv.Error as err:
        raise refused(0, "file", f"{path.name} line {reader.line_num}: {err}") from None
    return records


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

    settings = Settings.scratch(workdir, task_queue="dunwise-simulation")
    workdir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url, durable=False)
    with session_scope(engine) as session:
        invoices = import_invoices(session, rows, lambda _row: (policy.name, policy.version))

    issue_times = {row.invoice_number: _local(row.issued_on, time(0), row) for row in rows}
    start = min(issue_times.values())
    end = start + timedelta(days=days)
    env = await time_skipping_environment()
    async with env, build_worker(env.client, settings, engine):
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
        _event(state.number, entry, by_number[state.number], state.currency)
        for state in states
        for entry in state.timeline
        if entry.at <= end
    ]
    events.extend(run.refused)
    events.sort(key=lambda e: (e.at.astimezone(UTC), e.invoice))
    return SimulationResult(
        events=events, final_states=states, outbox=settings.effective_outbox_dir
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
            await self.env.sleep(min(remaining, SKIP_STEP))
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


def _event(number: str, entry, row: InvoiceRow, currency: str) -> SimulationEvent:
    return SimulationEvent(
        invoice=number,
        at=entry.at.astimezone(ZoneInfo(row.timezone)).replace(second=0, microsecond=0),
        event=entry.event,
        channel=entry.channel,
        template=entry.template,
        detail=entry.detail,
        amount=format_money(entry.amount_minor, currency)
        if entry.amount_minor is not None
        else None,
    )


def format_timeline(result: SimulationResult) -> str:
    """A readable, day-by-day timeline for finance ops, with a summary."""
    lines: list[str] = []
    current_day: date | None = None
    for event in result.events:
        day = event.at.date()
        if day != current_day:
            lines.append("")
            lines.append(day.strftime("%a %Y-%m-%d"))
            current_day = day
        what = event.event.replace("_", " ")
        if event.channel:
            what += f" by {event.channel}"
        if event.template:
            what += f" ({event.template})"
        extra = " ".join(part for part in (event.amount, event.detail) if part)
        lines.append(f"  {event.at:%H:%M %Z}  {event.invoice:<14} {what:<38} {extra}".rstrip())
    lines.append("")
    lines.append(_summary(result))
    return "\n".join(lines).lstrip("\n")


def _summary(result: SimulationResult) -> str:
    counts: dict[str, int] = {}
    for event in result.events:
        key = event.event + (f" by {event.channel}" if event.channel else "")
        counts[key] = counts.get(key, 0) + 1
    open_states = [s for s in result.final_states if s.stage != Stage.CLOSED]
    parts = [f"{len(result.final_states)} invoices"]
    parts += [f"{count} {key.replace('_', ' ')}" for key, count in sorted(counts.items())]
    parts.append(f"{len(open_states)} still open")
    return "Summary: " + ", ".join(parts) + f"\nRendered messages: {result.outbox}"
