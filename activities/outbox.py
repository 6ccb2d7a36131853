"""Delivery through the outbox: hand a prepared message to its channel, then record how.

The row for the job's key is committed "sending" before `Outbox.deliver_and_finish` is
called, and delivery always goes under that key, so a retry after a crash delivers again
through a channel that is itself idempotent by key where it can be. The outcome is written
in a transaction of its own: "sent" with the provider's id, "failed" when the provider
refuses for good, or "suppressed" when the recipient left the channel, in which case the
customer is opted out of it from then on.
"""

from __future__ import annotations

import sqlalchemy as sa

from activities.delivery import (
    Channel,
    OutgoingSms,
    PermanentDeliveryError,
    RecipientOptedOut,
)
from activities.email_message import OutgoingEmail
from activities.ledger import invoice_in_ledger
from activities.message_content import ReadyToSend
from activities.message_jobs import MessageJob
from activities.message_rows import mark_outcome
from activities.models import ChannelResult
from ledger.consent import opt_out
from ledger.db import session_scope
from vocabulary import MessageStatus


class Outbox:
    def __init__(
        self, engine: sa.Engine, email: Channel[OutgoingEmail], sms: Channel[OutgoingSms]
    ) -> None:
        self._engine = engine
        self._email = email
        self._sms = sms

    def deliver_and_finish(
        self, job: MessageJob, prepared: ReadyToSend
    ) -> dict[str, ChannelResult]:
        """Deliver under the job's key and mark its row (and the rows it covers) with how;
        what each row came to, by its key."""
        try:
            delivered = self._deliver(job, prepared)
        except RecipientOptedOut as left:
            self._record_opt_out(job, str(left))
            return self.finish(job.key, MessageStatus.SUPPRESSED, reason=str(left)[:200])
        except PermanentDeliveryError as refused:
            return self.finish(job.key, MessageStatus.FAILED, reason=str(refused)[:200])
        return self.finish(job.key, MessageStatus.SENT, provider_id=delivered)

    def finish(
        self,
        key: str,
        status: MessageStatus,
        reason: str | None = None,
        provider_id: str | None = None,
    ) -> dict[str, ChannelResult]:
        with session_scope(self._engine) as session:
            return mark_outcome(session, key, status, reason=reason, provider_id=provider_id)

    def _deliver(self, job: MessageJob, ready: ReadyToSend) -> str | None:
        rendered = ready.rendered
        if job.channel == "email":
            return self._email.deliver(
                OutgoingEmail(
                    to=ready.recipient,
                    subject=rendered.subject or "",
                    text=rendered.text,
                    html=rendered.html,
                    idempotency_key=job.key,
                    unsubscribe_link=ready.unsubscribe_link,
                )
            ).provider_id
        return self._sms.deliver(
            OutgoingSms(to=ready.recipient, body=rendered.text, idempotency_key=job.key)
        ).provider_id

    def _record_opt_out(self, job: MessageJob, reason: str) -> None:
        """The provider says the customer left this channel: respect it from now on."""
        with session_scope(self._engine) as session:
            invoice = invoice_in_ledger(session, job.invoice_number)
            opt_out(
                session,
                invoice.customer_id,
                job.channel,
                actor="provider",
                via=reason,
                invoice_id=invoice.id,
            )
