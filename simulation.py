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
- One shard is played in this process; several are played by runner processes
  (`simulation_shard`), each on its own copy of the imported ledger.

The payments file is read by `simulation_inputs`; the events returned, and the timeline
finance ops read, are `simulation_report`'s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import os
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from multiprocessing.pool import Pool
from pathlib import Path
from zoneinfo import ZoneInfo

from invoices import invoice_input
from ledger.db import make_engine, session_scope
from ledger.import_rows import ImportRejected, InvoiceRow
from ledger.imports import import_invoices, read_invoice_rows
from ledger.migrate import upgrade
from ledger.models import Invoice
from policies.schema import Policy
from settings import LONGEST_GROUP_WINDOW_SECONDS, Settings
from simulation_inputs import InputFileRejected, PaymentRow, read_payment_rows
from simulation_report import SimulationResult, timeline_event
from simulation_shard import LedgerCopy, Played, Shard, play, play_in_runner, start_runner
from workflows.models import InvoiceInput

PAYMENT_LOCAL_TIME = time(12, 0)
# The time-skipping server's cost of each step grows with everything it has run (it keeps a
# list of every lock and unlock and searches it on each step), so a long run on one server
# grows with the square of its size: 1,000 invoices took six times as long as 250. Customers
# are independent, so the invoices are split by customer over servers of their own. Each
# shard costs a server's start and the worker's; 125 invoices a shard beat 60 and 250.
SHARD_INVOICES = 125
# Runner processes. A runner and its server wait on each other at every simulated moment, so
# together they keep less than a core busy: on two cores three runners beat two and four
# (1,000 invoices: 73 s, 81 s and 87 s).
SHARDS_AT_ONCE = max(2, (os.cpu_count() or 2) * 3 // 2)

# When it happens, in what order at the same moment, and what: an invoice issued or a payment.
_Action = tuple[datetime, int, Invoice | PaymentRow]


class ShardFailed(RuntimeError):
    """A shard could not be played: which one, its invoices, and what went wrong (the cause)."""


async def simulate(
    policy: Policy,
    invoices_path: Path,
    workdir: Path,
    *,
    payments_path: Path | None = None,
    days: int = 120,
    on_days: Callable[[int], object] | None = None,
    keep_messages: bool = True,
) -> SimulationResult:
    """Run `policy` over the invoices for `days` of virtual time from the first issue date.

    `on_days`, if given, is told each time more days have been simulated, with how many more
    (they add up to `days`), so a terminal can show how far the run is.

    `keep_messages=False` says nobody reads the outbox: runner processes then render and record
    every message but write none (writing them took 15% of a large run's time); a run of one
    shard still writes its few.
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
    shards = [
        _shard(index, planned, settings, policy, by_number, start, end)
        for index, planned in enumerate(_shards(actions, by_number))
    ]
    told = _DaysTold(on_days, shards=len(shards))
    if len(shards) == 1:
        runs = [await play(shards[0], engine, lambda more: told.add(0, more))]
    else:
        ledger = Path(str(engine.url.database))
        runs = await _in_runners(
            [_for_runner(shard, ledger, keep_messages) for shard in shards], told
        )
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


def _shard(
    index: int,
    actions: list[_Action],
    settings: Settings,
    policy: Policy,
    rows: dict[str, InvoiceRow],
    first_issue: datetime,
    end: datetime,
) -> Shard:
    def played(subject: Invoice | PaymentRow) -> InvoiceInput | PaymentRow:
        if isinstance(subject, PaymentRow):
            return subject
        return invoice_input(subject, rows[subject.number].timezone, policy)

    return Shard(
        index=index,
        settings=settings,
        actions=[(moment, played(subject)) for moment, _, subject in actions],
        first_issue=first_issue,
        end=end,
    )


def _for_runner(shard: Shard, ledger: Path, keep_messages: bool) -> Shard:
    """A runner plays its shard on a copy of the imported ledger of its own (SQLite has one
    writer at a time: runners sharing one file would wait for each other), and runs its
    workflows and activities itself."""
    copy = LedgerCopy(source=ledger, target=ledger.parent / "shards" / f"{shard.index}.db")
    settings = shard.settings.model_copy(
        update={"database_url": f"sqlite:///{copy.target}", "activity_processes": 0}
    )
    return dataclasses.replace(
        shard, settings=settings, ledger_copy=copy, keep_messages=keep_messages
    )


async def _in_runners(shards: list[Shard], told: _DaysTold) -> list[Played]:
    """Every shard played in one of SHARDS_AT_ONCE runner processes, which tell the days
    they simulate through a queue, read here on a thread of its own."""
    context = multiprocessing.get_context("spawn")
    progress = context.SimpleQueue()
    loop = asyncio.get_running_loop()

    def relay() -> None:
        while (told_by_shard := progress.get()) is not None:
            loop.call_soon_threadsafe(told.add, *told_by_shard)

    relaying = threading.Thread(target=relay, name="simulation-progress", daemon=True)
    relaying.start()
    # Leaving the pool terminates its runners: after a failed shard, the others stop too.
    with context.Pool(
        min(SHARDS_AT_ONCE, len(shards)), initializer=start_runner, initargs=(progress,)
    ) as pool:
        try:
            played = await asyncio.gather(
                *(_apply(pool, loop, shard, len(shards)) for shard in shards)
            )
            # Every shard played: each runner is told there is no more work and exits by
            # itself. Terminating them relies on their SIGTERM handler, which never ran in a
            # runner whose main thread was blocked on the pool's queue lock: the run hung.
            pool.close()
            await asyncio.to_thread(pool.join)
            return played
        finally:
            progress.put(None)
            await asyncio.to_thread(relaying.join)


def _apply(
    pool: Pool, loop: asyncio.AbstractEventLoop, shard: Shard, shards: int
) -> asyncio.Future[Played]:
    """`shard` played by the pool, as a future of this loop."""
    played: asyncio.Future[Played] = loop.create_future()

    def settle(value: Played | BaseException) -> None:
        if played.done():  # the simulation stopped waiting (another shard failed)
            return
        if isinstance(value, BaseException):
            played.set_exception(_failed(shard, shards, value))
        else:
            played.set_result(value)

    def answered(value: Played | BaseException) -> None:
        loop.call_soon_threadsafe(settle, value)

    pool.apply_async(play_in_runner, (shard,), callback=answered, error_callback=answered)
    return played


def _failed(shard: Shard, shards: int, err: BaseException) -> ShardFailed:
    numbers = [subject.number for _, subject in shard.actions if isinstance(subject, InvoiceInput)]
    failed = ShardFailed(
        f"shard {shard.index + 1} of {shards} ({len(numbers)} invoices, {numbers[0]} to "
        f"{numbers[-1]}) could not be played: {type(err).__name__}: {err}"
    )
    failed.__cause__ = err
    return failed


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
