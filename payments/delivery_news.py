"""What email and SMS providers tell of a message after it left, acted on in one place for
every provider's webhook.

Recording (in the caller's transaction): the event once on its message (`ledger.delivery_events`);
a spam report or an unsubscribe opts the customer out of email; a message that could not be
delivered (a hard bounce, a dropped email, an undeliverable or failed SMS) marks the address.

Telling (after the commit): the news goes to the timelines of the message's invoices, and an
undelivered message asks each invoice to follow it up (`InvoiceWorkflow.contact_failed`: a
"fix contact" task, and the reminder once on the other channel, sent by the first invoice
only). The update's id is made of the event's, so a retry is answered, not redone.

Told once Temporal answered for every invoice (an ended workflow is told too: it has nothing
to follow up); the ledger then marks the event told. With Temporal unreachable it stays
untold: the webhook answers 503 so the provider sends it again, and `tell_untold` (the web
app every minute, and `dunwise sync`) tells what is left.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlmodel import Session
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from invoices import workflow_id
from ledger.consent import mark_undeliverable, opt_out
from ledger.db import session_scope
from ledger.delivery_events import (
    RecordedDelivery,
    count_untold,
    mark_told,
    record_delivery_event,
    untold_events,
)
from payments.portal_events import signal_each
from payments.services import PaymentServices
from vocabulary import DeliveryKind
from workflows.invoice import InvoiceWorkflow
from workflows.models import ContactFailure, DeliveryNote

log = logging.getLogger(__name__)
LEAVES_EMAIL = frozenset({DeliveryKind.SPAM_REPORT, DeliveryKind.UNSUBSCRIBED})
UNDELIVERED = frozenset({DeliveryKind.BOUNCED, DeliveryKind.DROPPED})
# Left to the webhook that recorded an event for this long before `tell_untold` tells it.
TELLING_GRACE = timedelta(minutes=1)
# Untold events read from the ledger at once: a long outage may leave many.
UNTOLD_AT_ONCE = 500


# Answers that say Temporal is down or overloaded, not that the request was wrong.
UNREACHABLE = frozenset(
    {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.RESOURCE_EXHAUSTED}
)


class TemporalUnreachable(Exception):
    """Temporal did not answer: the event stays untold."""


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
    """Record the event and what it means for the customer; None if recorded and told
    before. A repeat of an untold event comes back to be told, and changes nothing here."""
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
    if recorded is None or recorded.repeat or recorded.customer_id is None:
        return recorded
    if kind in LEAVES_EMAIL and recorded.channel == "email":
        opt_out(session, recorded.customer_id, "email", actor="provider", via=f"{provider} {kind}")
    if kind in UNDELIVERED and recorded.channel is not None:
        mark_undeliverable(
            session, recorded.customer_id, recorded.channel, detail or kind, actor="provider"
        )
    return recorded


async def tell_each(services: PaymentServices, news: list[RecordedDelivery]) -> int:
    """Tell each event and mark the told ones in the ledger; how many were told."""
    told = [each for each in news if await tell(services, each)]
    if told:
        with session_scope(services.engine) as session:
            for each in told:
                mark_told(session, each)
    return len(told)


async def tell_untold(
    services: PaymentServices, grace: timedelta = TELLING_GRACE
) -> tuple[int, int]:
    """Tell the events left untold (Temporal was down), but those of the last `grace`, which
    their webhook may be telling now, a batch at a time until Temporal stops answering:
    (told, left untold)."""
    told = 0
    while True:
        with session_scope(services.engine) as session:
            batch = untold_events(session, datetime.now(UTC) - grace, limit=UNTOLD_AT_ONCE)
        told_now = await tell_each(services, batch) if batch else 0
        told += told_now
        if told_now < len(batch) or len(batch) < UNTOLD_AT_ONCE:
            break
    with session_scope(services.engine) as session:
        left = count_untold(session, datetime.now(UTC) - grace)
    return told, left


async def keep_telling_untold(services: PaymentServices) -> None:
    """Until cancelled: every minute, tell what Temporal missed while it was unreachable."""
    while True:
        await asyncio.sleep(TELLING_GRACE.total_seconds())
        try:
            told, left = await tell_untold(services)
        except Exception:  # noqa: BLE001 - the web app must outlive a bad minute
            log.warning("could not tell the untold delivery events", exc_info=True)
            continue
        if told:
            log.info("told %d delivery events that waited for Temporal", told)


async def tell(services: PaymentServices, recorded: RecordedDelivery) -> bool:
    """The news on the invoices' timelines, an undelivered message followed up; False when
    Temporal could not be reached."""
    if not recorded.invoice_numbers or recorded.channel is None:
        return True
    try:
        await _tell(services, recorded)
    except TemporalUnreachable as err:
        log.warning("%s %s not told yet: %s", recorded.provider, recorded.event_id, err.__cause__)
        return False
    return True


async def _tell(services: PaymentServices, recorded: RecordedDelivery) -> None:
    assert recorded.channel is not None
    note = DeliveryNote(kind=recorded.kind, channel=recorded.channel, detail=recorded.detail)
    try:
        client = await services.temporal()
        await signal_each(services, recorded.invoice_numbers, InvoiceWorkflow.note_delivery, note)
    except RPCError as err:
        if err.status in UNREACHABLE:
            raise TemporalUnreachable(str(err)) from err
        # Refused for good: a provider's webhook must not fail for a timeline note.
        log.warning("could not note %s on %s", note.kind, recorded.invoice_numbers, exc_info=True)
    except (RuntimeError, OSError) as err:  # no connection to Temporal
        raise TemporalUnreachable(str(err)) from err
    if recorded.kind in UNDELIVERED and recorded.message_key is not None:
        await _follow_up(client, recorded)


async def _follow_up(client: Client, recorded: RecordedDelivery) -> None:
    """Every invoice of the message at once, so their coordinator gathers the reminders it
    sends again into one message, as the first one was."""
    assert recorded.channel is not None and recorded.message_key is not None
    failure = ContactFailure(
        channel=recorded.channel,
        failed_key=recorded.message_key,
        template=recorded.template,
        reason=recorded.detail[:200],
    )

    async def follow_up(number: str) -> None:
        handle = client.get_workflow_handle_for(InvoiceWorkflow.run, workflow_id(number))
        try:
            await handle.execute_update(
                InvoiceWorkflow.contact_failed, failure, id=f"undelivered:{recorded.event_id}"
            )
        except (WorkflowUpdateFailedError, RPCError) as err:  # refused (closed), or gone
            if isinstance(err, RPCError) and err.status in UNREACHABLE:
                raise TemporalUnreachable(str(err)) from err
            log.info("invoice %s not followed up after %s: %s", number, recorded.event_id, err)

    await asyncio.gather(*(follow_up(number) for number in recorded.invoice_numbers))
