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
from sqlmodel import Session, select
from temporalio import activity

from activities.ledger import invoice_in_ledger
from activities.messaging import (
    FINAL,
    SENDING,
    SUPPRESSED,
    MessagingActivities,
    _Job,
    _new_row,
    _ReadyToSend,
    _result_of,
    _suppression_reason,
    check_reminder,
)
from activities.models import ChannelResult, GroupedOutcome, GroupedReminder, ReminderOutcome
from ledger.db import session_scope
from ledger.models import Customer, Message


class GroupedMessagingActivities(MessagingActivities):
    @activity.defn
    def send_grouped_reminder(self, req: GroupedReminder) -> GroupedOutcome:
        for reminder in req.reminders:
            check_reminder(reminder)
        results: dict[str, list[ChannelResult]] = {r.idempotency_key: [] for r in req.reminders}
        channels = dict.fromkeys(c for r in req.reminders for c in r.channels)
        for channel in channels:
            jobs = [
                _Job(
                    invoice_number=r.invoice_number,
                    template=r.template,
                    channel=channel,
                    key=f"{r.idempotency_key}:{channel}",
                    as_of=r.scheduled_for,
                    is_receipt=False,
                    step_index=r.step_index,
                )
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

    def _send_together(self, jobs: list[_Job]) -> dict[str, ChannelResult]:
        try:
            results, leader = self._tie(jobs)
        except IntegrityError:
            # A concurrent attempt recorded the same keys first; read what it recorded.
            results, leader = self._tie(jobs)
        if leader is not None:
            job, ready = leader
            self._deliver_and_finish(job, ready)
            with session_scope(self._engine) as session:
                for job in jobs:
                    if job.key not in results:
                        results[job.key] = _result_of(_row(session, job.key))
        return results

    def _tie(self, jobs: list[_Job]) -> tuple[dict[str, ChannelResult], tuple | None]:
        """Record every reminder's row; tie the ones to send to one delivering row, render."""
        results: dict[str, ChannelResult] = {}
        with session_scope(self._engine) as session:
            live: list[tuple[_Job, Message]] = []
            for job in jobs:
                row = _row(session, job.key)
                if row is not None and row.status in FINAL:
                    results[job.key] = _result_of(row)
                    continue
                if row is None:
                    row = self._new_or_suppressed(session, job)
                    if row.status == SUPPRESSED:
                        results[job.key] = _result_of(row)
                        continue
                live.append((job, row))
            if not live:
                return results, None
            leading_job, leader = next(
                ((job, row) for job, row in live if row.sent_with_id == row.id), live[0]
            )
            group_key = "group:" + hashlib.sha256(leader.idempotency_key.encode()).hexdigest()[:64]
            for _, row in live:
                row.sent_with_id, row.group_key = leader.id, group_key
                session.add(row)
            session.flush()
            ready: _ReadyToSend = self._render_group(session, leader, leading_job)
        return results, (leading_job, ready)

    def _new_or_suppressed(self, session: Session, job: _Job) -> Message:
        invoice = invoice_in_ledger(session, job.invoice_number)
        customer = session.get(Customer, invoice.customer_id)
        assert customer is not None, f"customer of invoice {invoice.number} is in the ledger"
        recipient = customer.email if job.channel == "email" else customer.phone
        row = _new_row(job, invoice, recipient)
        reason = _suppression_reason(invoice, customer, job, [])
        if reason is not None:
            row.status, row.reason = SUPPRESSED, reason
        else:
            row.status = SENDING
        session.add(row)
        session.flush()
        return row

    def _suppress_all(self, jobs: list[_Job], reason: str) -> dict[str, ChannelResult]:
        results: dict[str, ChannelResult] = {}
        with session_scope(self._engine) as session:
            for job in jobs:
                row = _row(session, job.key)
                if row is None:
                    invoice = invoice_in_ledger(session, job.invoice_number)
                    row = _new_row(job, invoice, None)
                    row.status, row.reason = SUPPRESSED, reason
                    session.add(row)
                    session.flush()
                results[job.key] = _result_of(row)
        return results


def _row(session: Session, key: str) -> Message | None:
    return session.exec(select(Message).where(Message.idempotency_key == key)).first()
