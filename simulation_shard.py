"""One shard of a what-if simulation: some customers' invoices started, and their payments
made, in order on a time-skipping server of its own, run on until the end of the simulation;
what comes back is every invoice's final state and the payments its workflow refused.

A simulation of several shards plays them in runner processes (`play_in_runner`), each
running the workflows and the activities of one shard at a time: the Python side of a shard
is bound to one core, and a runner is started once for all the shards it plays.

Invariants:
- The shard's clock starts at the first issue date of the whole simulation, so the events of
  all shards line up in one timeline.
- Days simulated are told as they pass (`on_days`), in whole days on the first invoice's
  wall clock, adding up to the simulation's days.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.queues import SimpleQueue
from pathlib import Path

import sqlalchemy as sa
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

import child_process
from invoices import start_invoice_workflow, with_schedule
from ledger.currencies import currency_exponent
from ledger.db import make_engine
from policies.money import to_minor
from settings import Settings
from simulation_inputs import PaymentRow
from simulation_report import SimulationEvent
from temporal_client import quiet_core_logs, skip_time, time_skipping_environment
from worker import build_worker
from worker_processes import split_worker
from workflows.invoice import InvoiceWorkflow
from workflows.models import InvoiceInput, InvoiceState, PaymentReceived

SKIP_STEP = timedelta(days=1)
ZERO = timedelta(0)

# What happens when: an invoice issued (its workflow's input) or a payment.
ShardAction = tuple[datetime, InvoiceInput | PaymentRow]


@dataclass(frozen=True)
class LedgerCopy:
    """The imported ledger (`source`), copied for one shard (`target`) while it is played."""

    source: Path
    target: Path

    @contextlib.contextmanager
    def made(self) -> Iterator[None]:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        with (
            contextlib.closing(sqlite3.connect(self.source)) as source,
            contextlib.closing(sqlite3.connect(self.target)) as target,
        ):
            source.backup(target)
        try:
            yield
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.target}{suffix}").unlink(missing_ok=True)


@dataclass(frozen=True)
class Shard:
    index: int
    settings: Settings
    actions: list[ShardAction]  # in order of time; a payment's invoice is in the shard
    first_issue: datetime  # of the whole simulation
    end: datetime
    ledger_copy: LedgerCopy | None = None  # a runner's: the ledger its settings name
    # A runner's activities all run in it, so it can leave out the messages nobody keeps.
    keep_messages: bool = True


@dataclass
class Played:
    states: list[InvoiceState] = field(default_factory=list)
    refused: list[SimulationEvent] = field(default_factory=list)


async def play(shard: Shard, engine: sa.Engine, on_days: Callable[[int], object]) -> Played:
    """Start the invoices and make the payments in order, then run on until the end and
    keep every invoice's final state."""
    run = _Run(shard, on_days)
    env = await time_skipping_environment()
    async with env, _worker(env.client, shard, engine):
        await run.play(env)
    return run.played


def _worker(client: Client, shard: Shard, engine: sa.Engine) -> AbstractAsyncContextManager:
    """The shard's worker: as its settings split it, or in this process alone when its messages
    are not kept (rendered and recorded, but written nowhere). Then nothing its activities do
    is worth overlapping (the shard's ledger is a SQLite file of its own, with one writer), so
    they and the workflows run one at a time on the worker's event loop."""
    if shard.keep_messages:
        return split_worker(client, shard.settings, engine)
    return build_worker(client, shard.settings, engine, keep_messages=False, on_event_loop=True)


# A runner's channel to the simulation: (shard index, more days simulated).
_progress: SimpleQueue | None = None


# Young objects allocated between collections; the two older generations as CPython's.
RUNNER_GC_THRESHOLDS = (50_000, 10, 10)


def start_runner(progress: SimpleQueue) -> None:
    """A runner process's start: it tells days through `progress`. Told to stop (SIGTERM: by
    the simulation's pool, or by the kernel when the simulation's process dies), it kills
    itself and its time-skipping server at once, as one process group: a graceful stop
    would wait for the worker's polls, and the server would outlive a runner that died."""
    global _progress
    _progress = progress
    quiet_core_logs()  # core's warnings would land in the timeline on stdout
    os.setpgrp()
    child_process.die_with_parent()
    signal.signal(signal.SIGTERM, lambda *_: os.killpg(0, signal.SIGKILL))
    # CPython's full collections walk every object a runner holds, over and over as its
    # shards' workflows come and go (5% of a 10,000-invoice run's CPU): what it loaded to
    # start stays out of them, and young objects are collected in larger batches.
    gc.freeze()
    gc.set_threshold(*RUNNER_GC_THRESHOLDS)


def play_in_runner(shard: Shard) -> Played:
    progress = _progress
    assert progress is not None, "a runner starts with start_runner"
    assert shard.ledger_copy is not None, "a runner plays a shard on a ledger of its own"
    with shard.ledger_copy.made():
        engine = make_engine(shard.settings.effective_database_url, durable=False)
        try:
            return asyncio.run(play(shard, engine, lambda i: progress.put((shard.index, i))))
        finally:
            engine.dispose()


class _Run:
    """The shard's workflows on its server, as the simulated days pass."""

    def __init__(self, shard: Shard, on_days: Callable[[int], object]) -> None:
        self.shard = shard
        self.on_days = on_days
        self.days_told = 0
        self.handles: dict[str, WorkflowHandle] = {}
        self.played = Played()
        invoices = [s for _, s in shard.actions if isinstance(s, InvoiceInput)]
        self.currency = {invoice.number: invoice.currency for invoice in invoices}
        self.env: WorkflowEnvironment  # the shard's server, once `play` has it
        self.offset = ZERO  # how far its clock runs ahead of the simulated one

    async def play(self, env: WorkflowEnvironment) -> None:
        self.env = env
        self.offset = await env.get_current_time() - self.shard.first_issue
        for moment, subject in self.shard.actions:
            if moment > self.shard.end:
                break
            now = await self.sleep_until(moment)
            if isinstance(subject, InvoiceInput):
                await self.start(subject, now)
            else:
                await self.pay(subject, moment)
        await self.sleep_until(self.shard.end)
        self.played.states = [
            await handle.query(InvoiceWorkflow.state) for handle in self.handles.values()
        ]

    async def sleep_until(self, moment: datetime) -> datetime:
        """Skip the server's clock to `moment` (simulated time); the server's time then."""
        # A day at a time: one long skip over many busy workflows can outlast the RPC deadline.
        # In UTC: adding the offset to a local time would add wall-clock time, an hour off
        # when the server's date and the simulated one are on different sides of a DST change.
        target = moment.astimezone(UTC) + self.offset
        while (remaining := target - (now := await self.env.get_current_time())) > ZERO:
            self._tell_days(now)
            await skip_time(self.env, min(remaining, SKIP_STEP))
        self._tell_days(now)
        return now

    def _tell_days(self, now: datetime) -> None:
        # Days as the end of the run counts them, on the first invoice's wall clock: a DST
        # change in between makes one of them 23 or 25 hours long.
        first = self.shard.first_issue
        simulated = (now - self.offset).astimezone(first.tzinfo)
        days = (simulated.replace(tzinfo=None) - first.replace(tzinfo=None)) // SKIP_STEP
        if days > self.days_told:
            self.on_days(days - self.days_told)
            self.days_told = days

    async def start(self, invoice: InvoiceInput, server_now: datetime) -> None:
        """Start the invoice's run, its schedule planned here: the shard reads its server's
        clock, so the run need not plan it with a local activity."""
        start = invoice.model_copy(update={"clock_offset": self.offset})
        self.handles[invoice.number] = await start_invoice_workflow(
            self.env.client, self.shard.settings, with_schedule(start, server_now)
        )

    async def pay(self, payment: PaymentRow, moment: datetime) -> None:
        currency = self.currency[payment.invoice_number]
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
            self.played.refused.append(
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
