"""What-if simulation: the real workflows and activities on a time-skipping server.

Finance ops give a policy, invoices and (optionally) payments; the simulation imports them
into a scratch ledger, runs every invoice workflow over N days of virtual time and returns
every message, escalation and payment that would happen.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ValidationError
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError

from ledger.db import make_engine, session_scope
from invoices import invoice_input, start_invoice_workflow
from ledger.imports import ImportRejected, InvoiceRow, RowError, import_invoices, read_invoice_rows
from ledger.migrate import upgrade
from activities.currency import format_money
from ledger.currencies import currency_exponent
from policies.money import to_minor
from policies.schema import Policy
from settings import Settings
from temporal_client import time_skipping_environment
from worker import build_worker
from workflows.invoice import InvoiceWorkflow
from workflows.models import InvoiceState, PaymentReceived

# Every invoice zone's midnight falls after this much before UTC midnight (UTC-14 is the
# westernmost offset in use), so the simulation starts before any invoice's first day.
EARLIEST_OFFSET = timedelta(hours=14)
PAYMENT_LOCAL_TIME = time(12, 0)


class PaymentRow(BaseModel):
    invoice_number: str
    paid_on: date
    amount: Decimal


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
    """Read `invoice_number,paid_on,amount`; every bad row is reported, none is dropped."""
    errors: list[RowError] = []
    payments: list[PaymentRow] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            records = list(csv.DictReader(handle))
    except OSError as err:
        raise ImportRejected([RowError(0, "file", f"{path}: {err.strerror}")]) from err
    for line, record in enumerate(records, start=2):
        try:
            payment = PaymentRow.model_validate(record)
        except ValidationError as err:
            for problem in err.errors():
                field = ".".join(str(part) for part in problem["loc"]) or "row"
                errors.append(RowError(line, field, problem["msg"]))
            continue
        invoice = invoices.get(payment.invoice_number)
        if invoice is None:
            errors.append(RowError(line, "invoice_number", f"unknown invoice {payment.invoice_number}"))
            continue
        try:
            to_minor(payment.amount, currency_exponent(invoice.currency))
        except ValueError as err:
            errors.append(RowError(line, "amount", str(err)))
            continue
        if payment.amount <= 0:
            errors.append(RowError(line, "amount", "must be positive"))
            continue
        payments.append(payment)
    if errors:
        raise ImportRejected(errors)
    return payments


async def simulate(
    policy: Policy,
    invoices_path: Path,
    workdir: Path,
    *,
    payments_path: Path | None = None,
    days: int = 120,
) -> SimulationResult:
    rows = read_invoice_rows(invoices_path)
    by_number = {row.invoice_number: row for row in rows}
    payments = read_payment_rows(payments_path, by_number) if payments_path else []

    settings = Settings(
        data_dir=workdir,
        database_url=None,
        outbox_dir=workdir / "outbox",
        erp_url=None,
        erp_journal=workdir / "erp-journal.jsonl",
        temporal_task_queue="dunwise-simulation",
        email_backend="outbox",
        sms_backend="outbox",
    )
    workdir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url)
    with session_scope(engine) as session:
        invoices = import_invoices(session, rows, lambda _row: (policy.name, policy.version))

    start = datetime.combine(min(row.issued_on for row in rows), time(0), UTC) - EARLIEST_OFFSET
    end = start + timedelta(days=days)
    env = await time_skipping_environment()
    async with env, build_worker(env.client, settings, engine):
        offset = await env.get_current_time() - start
        handles: dict[str, WorkflowHandle] = {}
        for invoice in invoices:
            row = by_number[invoice.number]
            handles[invoice.number] = await start_invoice_workflow(
                env.client,
                settings,
                invoice_input(invoice, row.timezone, policy, clock_offset=offset),
            )
        refused = await _land_payments(env, handles, by_number, payments, offset, end)
        await _sleep_until(env, end + offset)
        states = [await handle.query(InvoiceWorkflow.state) for handle in handles.values()]
    engine.dispose()

    events = [
        _event(state.number, entry, by_number[state.number], state.currency)
        for state in states
        for entry in state.timeline
        if entry.at <= end
    ]
    events.extend(refused)
    events.sort(key=lambda e: (e.at.astimezone(UTC), e.invoice))
    return SimulationResult(events=events, final_states=states, outbox=settings.effective_outbox_dir)


async def _land_payments(
    env,
    handles: dict[str, WorkflowHandle],
    invoices: dict[str, InvoiceRow],
    payments: list[PaymentRow],
    offset: timedelta,
    end: datetime,
) -> list[SimulationEvent]:
    """Each payment lands at noon on its date in the customer's timezone."""
    refused: list[SimulationEvent] = []
    timed = sorted(
        (
            datetime.combine(p.paid_on, PAYMENT_LOCAL_TIME, ZoneInfo(invoices[p.invoice_number].timezone)),
            p,
        )
        for p in payments
    )
    for landed_at, payment in timed:
        if landed_at > end:
            break
        await _sleep_until(env, landed_at + offset)
        invoice = invoices[payment.invoice_number]
        try:
            await handles[payment.invoice_number].execute_update(
                InvoiceWorkflow.record_payment,
                PaymentReceived(
                    amount_minor=to_minor(payment.amount, currency_exponent(invoice.currency)),
                    currency=invoice.currency,
                    method="simulated",
                    received_at=landed_at,
                ),
            )
        except WorkflowUpdateFailedError as err:
            refused.append(
                SimulationEvent(
                    invoice=payment.invoice_number,
                    at=landed_at,
                    event="payment_refused",
                    channel=None,
                    template=None,
                    detail=str(err.cause),
                    amount=f"{invoice.currency} {payment.amount}",
                )
            )
    return refused


async def _sleep_until(env, moment: datetime) -> None:
    remaining = moment - await env.get_current_time()
    if remaining > timedelta(0):
        await env.sleep(remaining)


def _event(number: str, entry, row: InvoiceRow, currency: str) -> SimulationEvent:
    return SimulationEvent(
        invoice=number,
        at=entry.at.astimezone(ZoneInfo(row.timezone)),
        event=entry.event,
        channel=entry.channel,
        template=entry.template,
        detail=entry.detail,
        amount=format_money(entry.amount_minor, currency) if entry.amount_minor is not None else None,
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
    open_states = [s for s in result.final_states if s.stage != "closed"]
    parts = [f"{len(result.final_states)} invoices"]
    parts += [f"{count} {key.replace('_', ' ')}" for key, count in sorted(counts.items())]
    parts.append(f"{len(open_states)} still open")
    return "Summary: " + ", ".join(parts) + f"\nRendered messages: {result.outbox}"
