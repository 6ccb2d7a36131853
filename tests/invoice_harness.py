"""Runs invoice workflows on a time-skipping server with a real ledger and outbox.

The workflows' clock is pinned to a fixed Monday (through the input's clock offset), so the
schedules these tests see do not depend on the day they run.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlmodel import select
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from invoices import invoice_input, start_invoice_workflow
from ledger.db import make_engine, session_scope
from ledger.migrate import upgrade
from ledger.models import Customer, Invoice, Message
from policies.loader import load_policy
from policies.schema import Policy
from settings import Settings
from temporal_client import installed_binary, skip_time, time_skipping_environment
from worker import STRICT_RUNNER, WORKFLOWS, build_worker
from workflows import search_attributes
from workflows.invoice import InvoiceWorkflow
from workflows.invoice_patches import (
    EVERY_CHANGE_TO_ENGAGEMENT_WATCH,
    EVERY_CHANGE_TO_SCHEDULE_IN_INPUT,
    EVERY_CHANGE_TO_SETTLED_SHOWN_CLEARING,
)
from workflows.models import InvoiceState

POLICIES = Path(__file__).resolve().parent.parent / "policies"
HISTORIES = Path(__file__).resolve().parent / "histories"
# A saved history's name ends in what its run recorded: the marker of a bundle of changes, or
# none (a marker per change, or a workflow without changes).
HISTORY_ENDINGS = {
    EVERY_CHANGE_TO_SCHEDULE_IN_INPUT: ".schedule_in_input.json",
    EVERY_CHANGE_TO_SETTLED_SHOWN_CLEARING: ".settled_shown_clearing.json",
    EVERY_CHANGE_TO_ENGAGEMENT_WATCH: ".one_marker.json",
}
UNBUNDLED_ENDING = ".json"


def bundle_recorded(history: WorkflowHistory) -> str | None:
    """The bundle marker the run recorded, if any."""
    recorded = b"".join(
        event.SerializeToString()
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
    )
    return next((marker for marker in HISTORY_ENDINGS if marker.encode() in recorded), None)


def ledger_invoice(
    number: str,
    customer_id: str,
    policy: Policy,
    *,
    due_on: date,
    issued_on: date | None = None,
    amount_minor: int = 100_000,
    currency: str = "USD",
    status: str = "open",
) -> Invoice:
    """An invoice row as an import leaves it: unpaid, under `policy`, issued 30 days before
    it is due unless `issued_on` says."""
    return Invoice(
        number=number,
        customer_id=customer_id,
        currency=currency,
        total_minor=amount_minor,
        balance_minor=amount_minor,
        issued_on=issued_on or due_on - timedelta(days=30),
        due_on=due_on,
        policy_name=policy.name,
        policy_version=policy.version,
        status=status,
    )


START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # Monday 2026-03-02, 03:00 in New York
DUE = date(2026, 3, 16)  # two weeks after START: every step of the standard policy ahead


def reminder_templates(state: InvoiceState) -> list[str | None]:
    """The template of each reminder sent, once per channel, in order."""
    return [e.template for e in state.timeline if e.event == "reminder"]


@dataclass
class InvoiceHarness:
    env: WorkflowEnvironment
    settings: Settings
    engine: sa.Engine
    offset: timedelta

    async def start(
        self,
        number: str,
        *,
        due_on: date,
        amount_minor: int = 100_000,
        currency: str = "USD",
        issued_on: date | None = None,
        policy: Policy | None = None,
        timezone: str = "America/New_York",
        email: str | None = "ap@customer.example",
        phone: str | None = "+12125550100",
        sms_opt_out: bool = False,
        customer_id: str | None = None,
        locale: str = "en",
        planned: bool = True,
    ) -> WorkflowHandle:
        """Add the invoice (and its customer, unless `customer_id` names one already added).
        The schedule is planned here and carried in the input unless `planned` is False, as
        starters do whose clock is not the server's."""
        policy = policy or load_policy(POLICIES / "standard.yaml")
        customer_id = customer_id or f"cust-{number}"
        with session_scope(self.engine) as session:
            if session.get(Customer, customer_id) is None:
                session.add(
                    Customer(
                        id=customer_id,
                        name=f"Customer of {number}",
                        email=email,
                        phone=phone,
                        timezone=timezone,
                        sms_opt_out=sms_opt_out,
                        locale=locale,
                    )
                )
            invoice = ledger_invoice(
                number,
                customer_id,
                policy,
                due_on=due_on,
                issued_on=issued_on,
                amount_minor=amount_minor,
                currency=currency,
            )
            session.add(invoice)
        return await start_invoice_workflow(
            self.env.client,
            self.settings,
            invoice_input(
                invoice,
                timezone,
                policy,
                clock_offset=self.offset,
                planned_at=await self.env.get_current_time() if planned else None,
            ),
        )

    async def now(self) -> datetime:
        return await self.env.get_current_time() - self.offset

    async def advance_to(self, moment: datetime) -> None:
        remaining = moment - await self.now()
        if remaining > timedelta(0):
            await skip_time(self.env, remaining)

    async def advance(self, delta: timedelta) -> None:
        await skip_time(self.env, delta)

    async def state(self, handle: WorkflowHandle) -> InvoiceState:
        return await handle.query(InvoiceWorkflow.state)

    def messages(self, invoice_number: str) -> list[Message]:
        with session_scope(self.engine) as session:
            invoice = session.exec(select(Invoice).where(Invoice.number == invoice_number)).one()
            return list(
                session.exec(
                    select(Message).where(Message.invoice_id == invoice.id).order_by(Message.id)
                )
            )

    def invoice(self, invoice_number: str) -> Invoice:
        with session_scope(self.engine) as session:
            return session.exec(select(Invoice).where(Invoice.number == invoice_number)).one()

    def erp_journal(self) -> list[dict]:
        path = self.settings.effective_erp_journal
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    async def assert_replays(self, handle: WorkflowHandle) -> None:
        """The recorded history replays on today's workflow code without nondeterminism.

        With DUNWISE_RECORD_HISTORIES=1 the history is also saved under tests/histories/,
        where test_replay_histories keeps replaying it against every later change.
        """
        history = await handle.fetch_history()
        if os.environ.get("DUNWISE_RECORD_HISTORIES") == "1":
            test_name = (
                os.environ["PYTEST_CURRENT_TEST"].split("::")[-1].split(" ")[0].split("[")[0]
            )
            ending = HISTORY_ENDINGS.get(bundle_recorded(history), UNBUNDLED_ENDING)
            HISTORIES.mkdir(exist_ok=True)
            (HISTORIES / f"{test_name.removeprefix('test_')}{ending}").write_text(history.to_json())
        await Replayer(
            workflows=WORKFLOWS,
            workflow_runner=STRICT_RUNNER,
            data_converter=pydantic_data_converter,
        ).replay_workflow(history)


def local(day: date, hour: int = 9, zone: str = "America/New_York") -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=ZoneInfo(zone))


@asynccontextmanager
async def invoice_harness(
    tmp_path: Path,
    database_url: str | None = None,
    environment: Callable[[], Awaitable[WorkflowEnvironment]] = time_skipping_environment,
    *,
    on_event_loop: bool = False,
    **settings_update: Any,
) -> AsyncIterator[InvoiceHarness]:
    """A worker and a ledger on a fresh server: time-skipping unless `environment` says.
    `on_event_loop` is `build_worker`'s.

    `settings_update` overrides scratch settings, e.g. `erp_url=...`. SMS quiet hours are off
    unless given: the pinned clock starts at midnight, and collectors' one-off messages go
    out at once (test_messaging_activities covers the quiet hours)."""
    settings = Settings.scratch(tmp_path, task_queue=f"test-{uuid.uuid4()}")
    settings_update.setdefault("sms_quiet_hours", "")
    if database_url:
        settings_update["database_url"] = database_url
    settings = settings.model_copy(update=settings_update)
    upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url)
    env = await environment()
    try:
        async with env, build_worker(env.client, settings, engine, on_event_loop=on_event_loop):
            offset = await env.get_current_time() - START
            yield InvoiceHarness(env=env, settings=settings, engine=engine, offset=offset)
    finally:
        engine.dispose()


async def dev_server_environment() -> WorkflowEnvironment:
    """The server `dunwise run` embeds, where time runs as on the wall clock."""
    return await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        search_attributes=search_attributes.ALL,
        dev_server_existing_path=installed_binary("temporal"),
        dev_server_log_level="error",
        ui=False,
    )
