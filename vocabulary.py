"""The domain's words, declared once: invoice statuses, adjustment kinds, collector task
statuses and outcomes, outbox message statuses and channels.

Invariants:

- Standard library only, so every layer may import it: the ledger (which imports nothing
  above it), activities, the workflow sandbox, the portal and the command line.
- A value is what the ledger stores and what workflow histories carry: it never changes once
  written. A StrEnum member equals, hashes and serializes as its value, so a member and its
  string are interchangeable in comparisons, sets, dict keys and JSON.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, get_args


class InvoiceStatus(StrEnum):
    """Where an invoice stands in the ledger."""

    OPEN = "open"
    DISPUTED = "disputed"
    PAUSED = "paused"  # a promise to pay or a payment plan
    PAID = "paid"
    VOID = "void"
    WRITTEN_OFF = "written_off"
    CLOSED = "closed"  # paid and cleared in the ERP


# Still awaiting money: reaching a zero balance makes the invoice paid.
AWAITING_PAYMENT = frozenset({InvoiceStatus.OPEN, InvoiceStatus.DISPUTED, InvoiceStatus.PAUSED})
# The invoice's money no longer changes.
FINAL_STATUSES = frozenset({InvoiceStatus.VOID, InvoiceStatus.WRITTEN_OFF, InvoiceStatus.CLOSED})
# Nothing is left to collect: dunning ends.
TERMINAL_STATUSES = FINAL_STATUSES | {InvoiceStatus.PAID}


class AdjustmentKind(StrEnum):
    """A change to an invoice's balance that is not a payment."""

    CREDIT = "credit"  # a credit note, negative; what passes the balance is customer credit
    LATE_FEE = "late_fee"  # positive
    WRITE_OFF = "write_off"  # the whole balance; the invoice is written off
    VOID = "void"  # the whole balance; the invoice is void
    ADJUSTMENT = "adjustment"  # a signed correction
    REVERSAL = "reversal"  # a refund or chargeback took paid money back


# What a caller may ask the ledger to apply; a reversal comes only from the payment provider.
REQUESTED_ADJUSTMENTS = (
    AdjustmentKind.CREDIT,
    AdjustmentKind.LATE_FEE,
    AdjustmentKind.WRITE_OFF,
    AdjustmentKind.VOID,
    AdjustmentKind.ADJUSTMENT,
)
# What a collector applies as an adjustment; void and write-off are requests of their own.
COLLECTOR_ADJUSTMENTS = (AdjustmentKind.CREDIT, AdjustmentKind.ADJUSTMENT)


class TaskStatus(StrEnum):
    """A collector task's status; only open and closed are stored."""

    OPEN = "open"
    CLAIMED = "claimed"  # shown, never stored: an open task with an assignee
    CLOSED = "closed"


class TaskOutcome(StrEnum):
    """Why a collector task closed: the collector's outcome, or what settled the invoice."""

    RESUMED = "resumed"  # dunning resumed
    STOPPED = "stopped"  # reminders stopped; the invoice waits for payment
    PROMISE = "promise"  # a promise to pay; a broken one reopens a task
    PLAN = "plan"  # a payment plan
    SUPERSEDED = "superseded"  # a newer task on the invoice took over
    # Nothing is left to collect: the invoice's status names the outcome.
    PAID = InvoiceStatus.PAID.value
    VOID = InvoiceStatus.VOID.value
    WRITTEN_OFF = InvoiceStatus.WRITTEN_OFF.value
    CLOSED = InvoiceStatus.CLOSED.value


class MessageStatus(StrEnum):
    """An outbox row's status: sending until its delivery is known."""

    SENDING = "sending"
    SENT = "sent"
    SUPPRESSED = "suppressed"  # not sent on purpose: opted out, no address, nothing owed, ...
    FAILED = "failed"  # the provider refused it for good


# A row in one of these is done: its key never sends again.
FINAL_MESSAGE_STATUSES = frozenset(
    {MessageStatus.SENT, MessageStatus.SUPPRESSED, MessageStatus.FAILED}
)

# A Literal, not an enum, so policy files and API bodies keep their JSON schema.
Channel = Literal["email", "sms"]
CHANNELS: tuple[Channel, ...] = get_args(Channel)


class DeliveryKind(StrEnum):
    """What an email or SMS provider tells of a message after it left."""

    DELIVERED = "delivered"
    OPENED = "opened"
    CLICKED = "clicked"
    BOUNCED = "bounced"
    DROPPED = "dropped"
    SPAM_REPORT = "spamreport"
    UNSUBSCRIBED = "unsubscribed"


DELIVERY_FAILURES = frozenset(
    {DeliveryKind.BOUNCED, DeliveryKind.DROPPED, DeliveryKind.SPAM_REPORT}
)
# The customer read the message or followed its link: a payment should follow.
ENGAGEMENT_KINDS = frozenset({DeliveryKind.OPENED, DeliveryKind.CLICKED})
