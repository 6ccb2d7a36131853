"""What one message to send is: a `MessageJob`, built from a reminder or receipt request.

A job is one message on one channel; its key is the request's idempotency key with the
channel appended, so a request for several channels makes one job, and one outbox row, per
channel. Reminders are checked before any job is built: an unknown channel or template is
refused for good, since no retry can send it. Whether a job must not go out (paid meanwhile,
opted out, no address) is decided from the ledger by `suppression_reason`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo

from temporalio.exceptions import ApplicationError

from activities.models import ReceiptRequest, ReminderRequest
from activities.rendering import PaymentLine, available_templates
from activities.template_files import is_template
from ledger.books import AWAITING_PAYMENT
from ledger.consent import opted_out, undeliverable
from ledger.models import Customer, Invoice, InvoiceStatus
from vocabulary import CHANNELS

RECEIPT_TEMPLATE = "receipt"


@dataclass(frozen=True)
class MessageJob:
    invoice_number: str
    template: str
    channel: str
    key: str
    as_of: datetime
    is_receipt: bool
    step_index: int | None = None
    one_off: bool = False  # a collector's message: never grouped, sent while dunning waits


def reminder_job(req: ReminderRequest, channel: str) -> MessageJob:
    """The reminder `req` on `channel`."""
    return MessageJob(
        invoice_number=req.invoice_number,
        template=req.template,
        channel=channel,
        key=f"{req.idempotency_key}:{channel}",
        as_of=req.scheduled_for,
        is_receipt=False,
        step_index=req.step_index,
        one_off=req.one_off,
    )


def receipt_job(req: ReceiptRequest) -> MessageJob:
    """The receipt `req`: always one email."""
    return MessageJob(
        invoice_number=req.invoice_number,
        template=RECEIPT_TEMPLATE,
        channel="email",
        key=f"{req.idempotency_key}:email",
        as_of=req.paid_at,
        is_receipt=True,
    )


def check_reminder(req: ReminderRequest) -> None:
    """Refuse for good a reminder no retry can send: an unknown channel or template."""
    unknown = [channel for channel in req.channels if channel not in CHANNELS]
    if unknown:
        raise ApplicationError(
            f"reminder for invoice {req.invoice_number}: unknown channel(s) {unknown}; "
            f"expected {list(CHANNELS)}",
            type="UnknownChannel",
            non_retryable=True,
        )
    _require_template(req.template)


def _require_template(template: str) -> None:
    if not is_template(template):
        raise ApplicationError(
            f"no message template named {template!r}; "
            f"available: {', '.join(sorted(available_templates()))}",
            type="UnknownTemplate",
            non_retryable=True,
        )


def suppression_reason(
    invoice: Invoice,
    customer: Customer,
    job: MessageJob,
    payments: list[PaymentLine],
    sms_quiet_hours: str = "",
) -> str | None:
    """Why `job` must not go out now, or None if it may."""
    if job.is_receipt:
        if not payments:
            return "no payments recorded for this invoice"
    else:
        # A collector may write while dunning waits (a promise, a plan, a dispute).
        sendable = AWAITING_PAYMENT if job.one_off else {InvoiceStatus.OPEN}
        if invoice.status not in sendable:
            return f"invoice is {invoice.status}"
        if invoice.balance_minor <= 0:
            return "nothing is due on this invoice"
    # An opt-out stops reminders. An email receipt records a transaction and goes out
    # regardless; a number that replied STOP gets no SMS at all, as carriers require.
    if opted_out(customer, job.channel) and not (job.is_receipt and job.channel == "email"):
        return f"customer opted out of {job.channel}"
    if job.channel == "email" and not customer.email:
        return "no email address on file"
    if job.channel == "sms" and not customer.phone:
        return "no phone number on file"
    # A provider could not deliver there: sending again would only hurt the sender's name.
    why = undeliverable(customer, job.channel)
    if why is not None:
        return f"{job.channel} address undeliverable: {why}"[:200]
    if job.channel == "sms" and in_quiet_hours(job.as_of, customer.timezone, sms_quiet_hours):
        return f"quiet hours for SMS ({sms_quiet_hours} in {customer.timezone})"
    return None


def in_quiet_hours(moment: datetime, timezone: str, quiet_hours: str) -> bool:
    """Whether `moment` falls in "HH:MM-HH:MM" of the day in `timezone` (none when empty)."""
    if not quiet_hours:
        return False
    start, end = (time.fromisoformat(part) for part in quiet_hours.split("-"))
    local = moment.astimezone(ZoneInfo(timezone)).time()
    return (start <= local or local < end) if start > end else start <= local < end
