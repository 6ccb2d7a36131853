"""The payment half of `bench/portal.py`: a card payment from Stripe's signed webhook until
the invoice is paid in the ledger, cleared in the ERP journal and its receipt sent, and the
no-op workflow update it is compared with."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from pathlib import Path

import httpx
import sqlalchemy as sa
from sqlmodel import select
from temporalio.client import Client
from temporalio.worker import Worker

from bench.baseline_workflow import BASELINE_RUNNER, BaselineWorkflow, Shape
from bench.harness import latency_summary
from ledger import checkout_drafts, checkout_events, checkouts
from ledger.db import session_scope
from ledger.models import Invoice, InvoiceStatus, Message, PaymentMethodKind
from payments.stripe_webhooks import StripeEventKind
from settings import Settings
from vocabulary import MessageStatus

POLL_SECONDS = 0.005  # how often a payment's outcome is looked for: the timing's resolution
PAYMENT_TIMEOUT_SECONDS = 60.0
SETTLED = (InvoiceStatus.PAID, InvoiceStatus.CLOSED)


class Journal:
    """The ERP journal's cleared invoice numbers, read on as it grows."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.cleared = path, 0, set[str]()

    def has(self, number: str) -> bool:
        if number not in self.cleared and self.path.exists():
            with self.path.open("rb") as journal:
                journal.seek(self.offset)
                chunk = journal.read()
            whole = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits
            self.offset += len(whole)
            for line in whole.decode("utf-8").splitlines():
                self.cleared.add(json.loads(line)["invoice_number"])
        return number in self.cleared


def stripe_signature(payload: bytes, secret: str) -> str:
    """Stripe's `Stripe-Signature`: HMAC-SHA256 of "<unix time>.<body>" under the secret."""
    at = int(time.time())
    digest = hmac.new(secret.encode(), f"{at}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


class Payments:
    """Card payments of one customer's invoices, each from Stripe's webhook to done."""

    def __init__(
        self, settings: Settings, engine: sa.Engine, http: httpx.AsyncClient, customer_id: str
    ) -> None:
        self.settings, self.engine, self.http = settings, engine, http
        self.customer_id = customer_id
        self.journal = Journal(settings.effective_erp_journal)

    def open_checkout(self, invoice: Invoice) -> str:
        """A card checkout paying the invoice in full, with a made-up PaymentIntent id."""
        intent = f"pi_bench_{invoice.number}"
        draft = checkout_drafts.CheckoutDraft(
            customer_id=self.customer_id,
            request_id=f"bench-{invoice.number}",
            method=PaymentMethodKind.CARD,
            lines=[
                checkout_drafts.CheckoutLine(
                    invoice_number=invoice.number, amount_minor=invoice.balance_minor
                )
            ],
        )
        with session_scope(self.engine) as session:
            checkout = checkouts.open_checkout(session, draft)
            checkout_events.attach_payment_intent(session, checkout.id, intent)
        return intent

    def done(self, invoice: Invoice) -> bool:
        """Paid in the ledger, cleared in the ERP journal and its receipt email sent."""
        with session_scope(self.engine) as session:
            status = session.exec(select(Invoice.status).where(Invoice.id == invoice.id)).one()
            receipt = session.exec(
                select(Message.id).where(
                    Message.invoice_id == invoice.id,
                    Message.template == "receipt",
                    Message.status == MessageStatus.SENT,
                )
            ).first()
        return status in SETTLED and receipt is not None and self.journal.has(invoice.number)

    async def pay(self, invoice: Invoice) -> tuple[float, float]:
        """Seconds until the webhook is answered, and until the invoice is done."""
        intent = self.open_checkout(invoice)
        event = {
            "id": f"evt_bench_{invoice.number}",
            "object": "event",
            "api_version": "2024-06-20",
            "created": int(time.time()),
            "type": str(StripeEventKind.SUCCEEDED),
            "data": {
                "object": {
                    "id": intent,
                    "object": "payment_intent",
                    "amount": invoice.balance_minor,
                    "currency": "usd",
                    "status": "succeeded",
                }
            },
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
        }
        payload = json.dumps(event).encode()
        secret = self.settings.stripe_webhook_secret.get_secret_value()
        headers = {
            "Content-Type": "application/json",
            "Stripe-Signature": stripe_signature(payload, secret),
        }
        started = time.perf_counter()
        answer = await self.http.post("/webhooks/stripe", content=payload, headers=headers)
        answered = time.perf_counter() - started
        if answer.status_code != 200 or "paid" not in answer.json().get("outcome", ""):
            raise RuntimeError(f"the webhook for {invoice.number} answered {answer.text[:300]}")
        while not self.done(invoice):
            if time.perf_counter() - started > PAYMENT_TIMEOUT_SECONDS:
                raise RuntimeError(f"invoice {invoice.number} not done after the webhook")
            await asyncio.sleep(POLL_SECONDS)
        return answered, time.perf_counter() - started


async def baseline_updates(client: Client, count: int, warmup: int) -> dict[str, object]:
    """Round trips of an update that returns at once, each on a running no-op workflow."""
    queue = "bench-portal-baseline"
    async with Worker(
        client, task_queue=queue, workflows=[BaselineWorkflow], workflow_runner=BASELINE_RUNNER
    ):
        shape = Shape(timers_fired=0, timers_canceled=0, activities=0)
        handles = [
            await client.start_workflow(
                BaselineWorkflow.run, shape, id=f"bench-update-{index}", task_queue=queue
            )
            for index in range(warmup + count)
        ]
        for handle in handles:  # each has run its first task, as the invoices have
            while (
                await handle.describe()
            ).raw_description.workflow_execution_info.history_length < 4:
                await asyncio.sleep(POLL_SECONDS)
        seconds = []
        for index, handle in enumerate(handles):
            started = time.perf_counter()
            await handle.execute_update(BaselineWorkflow.pay)
            if index >= warmup:
                seconds.append(time.perf_counter() - started)
            await handle.result()
    return latency_summary(seconds)
