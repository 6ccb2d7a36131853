"""A whole payment path on loopback: invoice workflows on the dev server with a worker, the
ledger, the local Stripe-compatible server and the web app, each real."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
from temporalio.testing import WorkflowEnvironment

from activities.messaging import MessagingActivities
from activities.models import ReminderOutcome, ReminderRequest
from commands.web import serving_web
from paylinks import make_pay_token
from tests.invoice_harness import InvoiceHarness, dev_server_environment, invoice_harness
from workflows.invoice import InvoiceWorkflow
from workflows.models import InvoiceState

DUE = date(2026, 6, 1)  # far after the pinned clock: no reminder fires during a test


@dataclass
class Portal:
    harness: InvoiceHarness
    url: str
    http: httpx.AsyncClient
    web_settings: Any  # with the local Stripe server's address

    @property
    def settings(self):
        return self.harness.settings

    def token(self, customer_id: str, invoices: list[str] | None = None) -> str:
        return make_pay_token(self.settings, customer_id, invoices or [])

    def send_courtesy(self, number: str, channels: list[str]) -> ReminderOutcome:
        """The invoice's first reminder, sent now through the messaging activity."""
        return MessagingActivities(self.harness.engine, self.settings).send_reminder(
            ReminderRequest(
                invoice_number=number,
                template="courtesy",
                channels=channels,
                step_index=0,
                scheduled_for=datetime(2026, 5, 28, 14, 0, tzinfo=UTC),  # before DUE
                idempotency_key=f"{number}:step:0",
            )
        )

    async def state(self, number: str) -> InvoiceState:
        handle = self.harness.env.client.get_workflow_handle_for(
            InvoiceWorkflow.run, f"invoice-{number}"
        )
        return await handle.query(InvoiceWorkflow.state)

    async def until(self, check: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Wait for an async check to return something truthy."""
        deadline = time.monotonic() + timeout
        while True:
            result = await check()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"still not true after {timeout} s: {check.__doc__}")
            await asyncio.sleep(0.2)


@asynccontextmanager
async def portal(
    tmp_path: Path,
    database_url: str | None = None,
    environment: Callable[[], Awaitable[WorkflowEnvironment]] = dev_server_environment,
    **settings,
) -> AsyncIterator[Portal]:
    """The web app over a worker and a server: the dev server, or the time-skipping one for
    walks through weeks of an invoice's life."""
    async with invoice_harness(
        tmp_path,
        database_url,
        environment=environment,
        web_port=0,
        local_stripe_port=0,
        **settings,
    ) as harness:

        async def connect():
            return harness.env.client

        async with (
            serving_web(harness.settings, harness.engine, connect) as web,
            httpx.AsyncClient(base_url=web.url, timeout=30.0, trust_env=False) as http,
        ):
            yield Portal(harness=harness, url=web.url, http=http, web_settings=web.settings)
