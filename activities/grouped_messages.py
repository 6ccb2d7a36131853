"""The activity that sends a customer's gathered reminders: one message per channel.

The customer's coordinator (`workflows.customer`) calls it with every reminder of a group.
For each channel:

1. each reminder's row (its own key) is read: a final one answers for itself; a new one is
   checked against the ledger (an invoice paid meanwhile, an opted-out channel, no address)
   and recorded suppressed if it must not go out;
2. the remaining rows are tied, in one commit, to the row that delivers them all: the first
   invoice's, or the one a previous attempt chose (`sent_with_id`);
3. one message listing those invoices is rendered and delivered under that row's key, and
   every row it covers gets the outcome.

A retry after a crash finds the rows tied and delivers again under the same key, through a
channel idempotent by key where it can be. A channel over the customer's daily contact limit
records each reminder as suppressed, with the reason.
"""

from __future__ import annotations

import hashlib

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session
from temporalio import activity

from activities.ledger import invoice_in_ledger
from activities.message_content import ReadyToSend, render_group
from activities.message_jobs import MessageJob, check_reminder, reminder_job, suppression_reason
from activities.message_rows import new_row, result_of, row_by_key, rows_by_key
from activities.messaging import MessagingActivities
from activities.models import ChannelResult, GroupedOutcome, GroupedReminder, ReminderOutcome
from ledger.books import invoices_by_number
from ledger.db import session_scope
from ledger.models import Customer, Message
from vocabulary import FINAL_MESSAGE_STATUSES, MessageStatus


class GroupedMessagingActivities(MessagingActivities):
    @activity.defn
    def send_grouped_reminder(self, req: GroupedReminder) -> GroupedOutcome:
        for reminder in req.reminders:
            check_reminder(reminder)
        results: dict[str, list[ChannelResult]] = {r.idempotency_key: [] for r in req.reminders}
        channels = dict.fromkeys(c for r in req.reminders for c in r.channels)
        for channel in channels:
            jobs = [
                reminder_job(r, channel)
                for r in sorted(req.reminders, key=lambda r: r.invoice_number)
                if channel in r.channels
            ]
            if channel in req.limited_channels:
                reason = f"contact limit: the customer had a reminder by {channel} today"
                sent = self._suppress_all(jobs, reason)
            else:
                sent = self._send_together(jobs)
            for job in jobs:
                results[job.key.removesuffix(f":{channel}")].append(sent[job.key])
        return GroupedOutcome(
            outcomes={key: ReminderOutcome(results=found) for key, found in results.items()}
        )

    def _send_together(self, jobs: list[MessageJob]) -> dict[str, ChannelResult]:
        try:
            results, leader = self._tie(jobs)
        except IntegrityError:
            # A concurrent attempt recorded the same keys first; read what it recorded.
            results, leader = self._tie(jobs)
        if leader is not None:
            results.update(self._outbox.deliver_and_finish(*leader))
        return results

    def _tie(
        self, jobs: list[MessageJob]
    ) -> tuple[dict[str, ChannelResult], tuple[MessageJob, ReadyToSend] | None]:
        """Record every reminder's row; tie the ones to send to one delivering row, render."""
        results: dict[str, ChannelResult] = {}
        with session_scope(self._engine) as session:
            rows = rows_by_key(session, [job.key for job in jobs])
            # Kept until the message is rendered, which reads the customer again: the
            # session's identity map holds an object only while something else does.
            customers: dict[str, Customer] = {}
            if new := [job for job in jobs if job.key not in rows]:
                rows.update(self._new_rows(session, new, customers))
            live: list[tuple[MessageJob, Message]] = []
            for job in jobs:
                row = rows[job.key]
                if row.status in FINAL_MESSAGE_STATUSES:  # final before, or suppressed now
                    results[job.key] = result_of(row)
                else:
                    live.append((job, row))
            if not live:
                return results, None
            leading_job, leader = next(
                ((job, row) for job, row in live if row.sent_with_id == row.id), live[0]
            )
            group_key = "group:" + hashlib.sha256(leader.idempotency_key.encode()).hexdigest()[:64]
            for _, row in live:
                row.sent_with_id, row.group_key = leader.id, group_key
            session.flush()  # render_group reads the rows tied to the leader
            ready = render_group(session, self._settings, leader, leading_job)
        return results, (leading_job, ready)

    def _new_rows(
        self, session: Session, jobs: list[MessageJob], customers: dict[str, Customer]
    ) -> dict[str, Message]:
        """A row for each job, "sending", or "suppressed" with the reason when the ledger
        says it must not go out; flushed, so each has its id. The customers read are kept
        in `customers`."""
        invoices = invoices_by_number(session, [job.invoice_number for job in jobs])
        rows: dict[str, Message] = {}
        for job in jobs:
            invoice = invoices.get(job.invoice_number) or invoice_in_ledger(
                session, job.invoice_number
            )
            customer = customers.get(invoice.customer_id) or session.get(
                Customer, invoice.customer_id
            )
            assert customer is not None, f"customer of invoice {invoice.number} is in the ledger"
            customers[customer.id] = customer
            recipient = customer.email if job.channel == "email" else customer.phone
            row = rows[job.key] = new_row(job, invoice, recipient)
            reason = suppression_reason(invoice, customer, job, [], self._settings.sms_quiet_hours)
            if reason is not None:
                row.status, row.reason = MessageStatus.SUPPRESSED, reason
        session.add_all(rows.values())
        session.flush()
        return rows

    def _suppress_all(self, jobs: list[MessageJob], reason: str) -> dict[str, ChannelResult]:
        results: dict[str, ChannelResult] = {}
        with session_scope(self._engine) as session:
            for job in jobs:
                row = row_by_key(session, job.key)
                if row is None:
                    invoice = invoice_in_ledger(session, job.invoice_number)
                    row = new_row(job, invoice, None)
                    row.status, row.reason = MessageStatus.SUPPRESSED, reason
                    session.add(row)
                    session.flush()
                results[job.key] = result_of(row)
        return results
