"""What a payer does in the portal, told to the timelines of the invoices it concerns.

Fire-and-forget signals: a collector wants to know the payer looked, but a page never waits
for it and an invoice whose workflow has ended simply misses it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from temporalio.service import RPCError, RPCStatusCode

from invoices import workflow_id
from payments.services import PaymentServices
from workflows.invoice import InvoiceWorkflow
from workflows.models import PortalEvent, PortalEventKind

log = logging.getLogger(__name__)
# Signals sent at once for one page view, so a customer with thousands of invoices does not
# flood Temporal.
CONCURRENT_SIGNALS = 16


async def note_portal_event(
    services: PaymentServices, numbers: list[str], kind: PortalEventKind, detail: str = ""
) -> None:
    event = PortalEvent(event=kind, detail=detail[:500])
    await signal_each(services, numbers, InvoiceWorkflow.note_portal_event, event)


async def signal_each(
    services: PaymentServices, numbers: list[str], signal: Callable[..., Any], payload: Any
) -> None:
    """Signal each invoice's workflow, a few at a time; one that has ended is skipped."""
    client = await services.temporal()
    gate = asyncio.Semaphore(CONCURRENT_SIGNALS)

    async def tell(number: str) -> None:
        handle = client.get_workflow_handle_for(InvoiceWorkflow.run, workflow_id(number))
        async with gate:
            try:
                await handle.signal(signal, payload)
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND:
                    raise

    await asyncio.gather(*(tell(number) for number in numbers))


def note_in_background(
    services: PaymentServices, numbers: list[str], kind: PortalEventKind, detail: str = ""
) -> None:
    """Tell the timelines without making the payer wait; a failure is logged, not shown."""

    async def send() -> None:
        try:
            await note_portal_event(services, numbers, kind, detail)
        except Exception:  # noqa: BLE001 - a missed timeline note must never break a page
            log.warning("could not note %s on %s", kind, numbers, exc_info=True)

    task = asyncio.get_running_loop().create_task(send())
    _background.add(task)
    task.add_done_callback(_background.discard)


_background: set[asyncio.Task[None]] = set()
