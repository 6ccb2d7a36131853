"""The activity that sends an invoice's reminder, or hands it to its customer's coordinator.

A reminder with nothing to gather goes out at once, as one invoice's reminder: its customer
has no other open invoice, or (with no contact limit to keep) none that belongs in its
message. Otherwise the activity names the reminder's group (the customer, currency, due
date, policy, step, template and send day: the reminders that make one message) and the
customer's open invoices the group should wait for, then signals the coordinator, starting
it if it is not running (signal-with-start). A repeated call signals again; the coordinator
gathers a reminder once.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
from concurrent.futures import Executor
from datetime import UTC, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import aliased
from sqlmodel import select
from sqlmodel.sql.expression import SelectOfScalar
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import (
    ApplicationError,
    ApplicationErrorCategory,
    WorkflowAlreadyStartedError,
)

from activities.ledger import invoice_in_ledger
from activities.messaging import MessagingActivities
from activities.models import CoordinatorStart, ReminderDue, ReminderRequest, ReminderRequested
from ledger.db import session_scope
from ledger.models import Invoice, InvoiceStatus
from settings import Settings

COORDINATOR_WORKFLOW = "CustomerWorkflow"
COORDINATOR_ID_PREFIX = "customer-"


class CoordinationActivities:
    def __init__(
        self,
        client: Client,
        engine: sa.Engine,
        settings: Settings,
        messaging: MessagingActivities,
        executor: Executor | None = None,
    ) -> None:
        self._client = client
        self._engine = engine
        self._settings = settings
        self._messaging = messaging
        self._executor = executor  # the worker's activity executor; None: asyncio's default

    @activity.defn
    async def request_reminder(self, due: ReminderDue) -> ReminderRequested:
        # In the activity's context, as `asyncio.to_thread` would run it.
        in_context = contextvars.copy_context().run
        grouping = await asyncio.get_running_loop().run_in_executor(
            self._executor, in_context, self._send_if_alone, due
        )
        if isinstance(grouping, ReminderRequested):
            return grouping
        group, expected = grouping
        settings = self._settings
        coordinator = f"{COORDINATOR_ID_PREFIX}{due.customer_id}"
        try:
            await self._client.start_workflow(
                COORDINATOR_WORKFLOW,
                CoordinatorStart(
                    customer_id=due.customer_id,
                    window=timedelta(seconds=settings.message_group_window_seconds),
                    daily_limit=settings.reminders_per_channel_per_day,
                ),
                id=coordinator,
                task_queue=settings.temporal_task_queue,
                start_signal="reminder_due",
                start_signal_args=[due.model_copy(update={"group": group, "expected": expected})],
            )
        except WorkflowAlreadyStartedError:
            # The coordinator was ending (a quiet day) as the reminder came: neither signalled
            # nor started. Retried, the reminder finds it gone and starts the next one. Said as
            # an ApplicationError, the failure is one every server records: the time-skipping
            # test server refused the SDK's own error, and the activity hung until its timeout.
            # Benign: an expected retry, which the SDK logs at debug level, not as a warning.
            raise ApplicationError(
                f"the coordinator {coordinator} was ending as the reminder of invoice "
                f"{due.reminder.invoice_number} came; trying again",
                type="CoordinatorEnding",
                category=ApplicationErrorCategory.BENIGN,
            ) from None
        return ReminderRequested()

    def _send_if_alone(self, due: ReminderDue) -> ReminderRequested | tuple[str, list[str]]:
        """The reminder sent, if its customer has nothing to gather; else its group and the
        invoices the group waits for. One trip to a thread for both."""
        grouping = self._grouping(due)
        if grouping is None:
            return ReminderRequested(sent_alone=self._messaging.send_reminder(due.reminder))
        return grouping

    def _grouping(self, due: ReminderDue) -> tuple[str, list[str]] | None:
        """The reminder's group and the customer's invoices that belong in it, read in one
        transaction; None when the coordinator has nothing to do for it: the customer has no
        open invoice but this one, or none due with it and no contact limit is set."""
        reminder = due.reminder
        gathering = self._settings.message_group_window_seconds > 0
        limited = bool(self._settings.reminders_per_channel_per_day)
        # Without a contact limit only the invoices due with this one concern the coordinator,
        # and one query tells whether there are any: most reminders go out alone.
        probe = _ANOTHER_DUE_WITH_IT if gathering and not limited else _ANOTHER_REMINDED
        with session_scope(self._engine) as session:
            others = session.exec(
                probe, params={"customer_id": due.customer_id, "number": reminder.invoice_number}
            ).first()
            if others is None:
                return None
            invoice = invoice_in_ledger(session, reminder.invoice_number)
            if not gathering:
                return _group_of(invoice, reminder), []
            siblings = session.exec(
                _SIBLINGS,
                params={
                    "customer_id": invoice.customer_id,
                    "due_on": invoice.due_on,
                    "currency": invoice.currency,
                    "policy_name": invoice.policy_name,
                    "policy_version": invoice.policy_version,
                },
            ).all()
            expected = sorted(set(siblings) | {invoice.number})
            if expected == [invoice.number] and not limited:
                return None  # nothing to gather, and no contact limit to keep
            return _group_of(invoice, reminder), expected


def _group_of(invoice: Invoice, reminder: ReminderRequest) -> str:
    """The key of the reminders that go out in one message with this one."""
    parts = (
        invoice.customer_id,
        invoice.currency,
        str(invoice.due_on),
        f"{invoice.policy_name}@{invoice.policy_version}",
        str(reminder.step_index),
        reminder.template,
        ",".join(sorted(reminder.channels)),
        reminder.scheduled_for.astimezone(UTC).date().isoformat(),
    )
    return "group:" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:64]


def _reminded(customer_id: object, *where: sa.ColumnElement[bool]) -> SelectOfScalar[str]:
    """The numbers of the customer's invoices that reminders go out for (open, with a balance),
    narrowed by `where`."""
    return select(Invoice.number).where(
        Invoice.customer_id == customer_id,
        Invoice.status == InvoiceStatus.OPEN,
        Invoice.balance_minor > 0,
        *where,
    )


# Asked for every reminder, so built once: is another of the customer's invoices reminded?
_ANOTHER_REMINDED = _reminded(
    sa.bindparam("customer_id"), Invoice.number != sa.bindparam("number")
).limit(1)
# And if so, the ones that belong in its message: due the same day, in its currency and policy.
_SIBLINGS = _reminded(
    sa.bindparam("customer_id"),
    Invoice.due_on == sa.bindparam("due_on"),
    Invoice.currency == sa.bindparam("currency"),
    Invoice.policy_name == sa.bindparam("policy_name"),
    Invoice.policy_version == sa.bindparam("policy_version"),
)
# Is another of them reminded with this one? The question above and this one in one query.
_THIS = aliased(Invoice)
_ANOTHER_DUE_WITH_IT = _reminded(
    sa.bindparam("customer_id"),
    _THIS.number == sa.bindparam("number"),
    Invoice.number != _THIS.number,
    Invoice.due_on == _THIS.due_on,
    Invoice.currency == _THIS.currency,
    Invoice.policy_name == _THIS.policy_name,
    Invoice.policy_version == _THIS.policy_version,
).limit(1)
