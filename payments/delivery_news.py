"""What email and SMS providers tell of a message after it left, acted on in one place for
every provider's webhook.

Recording (in the caller's transaction): the event once on its message (`ledger.delivery_events`);
a spam report or an unsubscribe opts the customer out of email; a message that could not be
delivered (a hard bounce, a dropped email, an undeliverable or failed SMS) marks the address.

Telling (after the commit): the news goes to the timelines of the message's invoices, and an
undelivered message asks each invoice to follow it up (`InvoiceWorkflow.contact_failed`: a
"fix contact" task, and the reminder once on the other channel, sent by the first invoice
only). The update's id is made of the event's, so a provider's retry is answered, not redone.
A workflow that cannot be told is logged: the event stays recorded.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from sqlmodel import Session
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError

from invoices import workflow_id
from ledger.consent import mark_undeliverable, opt_out
from ledger.delivery_events import RecordedDelivery, record_delivery_event
from payments.portal_events import signal_each
from payments.services import PaymentServices
from vocabulary import DeliveryKind
from workflows.invoice import InvoiceWorkflow
from workflows.models import ContactFailure, DeliveryNote

log = logging.getLogger(__name__)
LEAVES_EMAIL = frozenset({DeliveryKind.SPAM_REPORT, DeliveryKind.UNSUBSCRIBED})
UNDELIVERED = frozenset({DeliveryKind.BOUNCED, DeliveryKind.DROPPED})


def record_news(
    session: Session,
    *,
    provider: str,
    event_id: str,
    kind: DeliveryKind,
    at: datetime,
    detail: str = "",
    message_key: str | None = None,
    provider_message_id: str | None = None,
) -> RecordedDelivery | None:
    """Record the event and what it means for the customer; None if recorded before."""
    recorded = record_delivery_event(
        session,
        provider=provider,
        event_id=event_id,
        message_key=message_key,
        provider_message_id=provider_message_id,
        kind=kind,
        at=at,
        detail=detail,
    )
    if recorded is None or recorded.customer_id is None or recorded.channel is None:
        return recorded
    if kind in LEAVES_EMAIL and recorded.channel == "email":
        opt_out(session, recorded.customer_id, "email", actor="provider", via=f"{provider} {kind}")
    if kind in UNDELIVERED:
        mark_undeliverable(
            session, recorded.customer_id, recorded.channel, detail or kind, actor="provider"
        )
    return recorded


async def tell(
    services: PaymentServices, recorded: RecordedDelivery, detail: str, event_id: str
) -> None:
    """The news on the invoices' timelines; an undelivered message followed up."""
    if not recorded.invoice_numbers or recorded.channel is None:
        return
    note = DeliveryNote(kind=recorded.kind, channel=recorded.channel, detail=detail[:500])
    try:
        await signal_each(services, recorded.invoice_numbers, InvoiceWorkflow.note_delivery, note)
    except Exception:  # noqa: BLE001 - a provider's webhook must not fail for a timeline note
        log.warning("could not note %s on %s", note.kind, recorded.invoice_numbers, exc_info=True)
    if recorded.kind in UNDELIVERED and recorded.message_key is not None:
        await _follow_up(services, recorded, detail, event_id)


async def _follow_up(
    services: PaymentServices, recorded: RecordedDelivery, detail: str, event_id: str
) -> None:
    """Every invoice of the message at once, so their coordinator gathers the reminders it
    sends again into one message, as the first one was."""
    assert recorded.channel is not None and recorded.message_key is not None
    client = await services.temporal()
    failure = ContactFailure(
        channel=recorded.channel,
        failed_key=recorded.message_key,
        template=recorded.template,
        reason=detail[:200],
    )

    async def follow_up(number: str) -> None:
        handle = client.get_workflow_handle_for(InvoiceWorkflow.run, workflow_id(number))
        try:
            await handle.execute_update(
                InvoiceWorkflow.contact_failed, failure, id=f"undelivered:{event_id}"
            )
        except (WorkflowUpdateFailedError, RPCError) as err:  # closed, or gone
            log.info("invoice %s not followed up after %s: %s", number, event_id, err)

    await asyncio.gather(*(follow_up(number) for number in recorded.invoice_numbers))
