"""How an invoice's reminder goes out: handed to the customer's coordinator, which may send it
in one message with the customer's other invoices, or (in runs from before the coordinator,
and for a collector's one-off message) through the messaging activity on its own.

Invariants:
- The invoice waits for the coordinator's answer to the reminder it handed over, and to
  that one only (`s.awaiting_reminder`): a late answer to an earlier reminder is ignored.
- Without an answer within `COORDINATOR_ANSWER_TIMEOUT` the invoice goes on; the timeline
  says the reminder failed. The wait's timer runs out rather than being cancelled.
- A reminder refused for good leaves the invoice collectable; every channel's outcome is
  on the timeline.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.coordination import CoordinationActivities
    from activities.messaging import MessagingActivities
    from activities.models import (
        PlannedStep,
        ReminderDue,
        ReminderOutcome,
        ReminderRequest,
        ReminderSent,
    )
    from policies.schema import Step
    from vocabulary import MessageStatus
    from workflows import keys
from workflows.invoice_core import (
    MESSAGE_TIMEOUT,
    SERVICE_RETRY,
    InvoiceCore,
    activity_reason,
)
from workflows.invoice_patches import (
    COORDINATOR_WAIT_UNCANCELLED,
    CUSTOMER_COORDINATOR,
    takes_change,
)

# The coordinator answers within its gathering window and a send; past this something is
# wrong with it, and the invoice goes on (the timeline says so) rather than wait for good.
COORDINATOR_ANSWER_TIMEOUT = timedelta(hours=1)


class CoordinatorRefused(Exception):
    """The customer's coordinator could not send the reminder at all."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def send_refusal(err: ActivityError | CoordinatorRefused) -> str:
    """Why a reminder could not be sent, for the timeline."""
    return err.reason if isinstance(err, CoordinatorRefused) else activity_reason(err)


class InvoiceReminders(InvoiceCore):
    """Sending the invoice's reminders, alone or through the customer's coordinator."""

    async def _send_reminder(self, planned: PlannedStep, step: Step, at: datetime) -> None:
        assert step.template is not None
        request = ReminderRequest(
            invoice_number=self.invoice.number,
            template=step.template,
            channels=list(step.channels),
            step_index=planned.index,
            scheduled_for=planned.send_at,
            idempotency_key=keys.reminder(self.invoice.number, planned.index),
        )
        try:
            if takes_change(CUSTOMER_COORDINATOR):
                outcome = await self._send_through_coordinator(request)
            else:
                outcome = await self._send(request)
        except (ActivityError, CoordinatorRefused) as err:
            # Refused for good (say a template removed after the policy was loaded): the
            # invoice stays collectable, and the timeline says what went wrong.
            self._record("reminder_failed", send_refusal(err), template=step.template, at=at)
            return
        self._record_outcome("reminder", outcome, step.template, at=at)

    def _record_outcome(
        self,
        event: str,
        outcome: ReminderOutcome,
        template: str,
        sent_detail: str = "",
        at: datetime | None = None,
    ) -> None:
        """Each channel's result on the timeline: `event` if sent (with `sent_detail`, or what
        the activity said, such as the invoices it went out with), else `event_<status>`."""
        for result in outcome.results:
            sent = result.status == MessageStatus.SENT
            self._record(
                event if sent else f"{event}_{result.status}",
                (sent_detail if sent else "") or result.reason or "",
                channel=result.channel,
                template=template,
                at=at,
            )

    async def _send(self, request: ReminderRequest) -> ReminderOutcome:
        """The messaging activity: one message per channel, once per idempotency key."""
        return await workflow.execute_activity_method(
            MessagingActivities.send_reminder,
            request,
            start_to_close_timeout=MESSAGE_TIMEOUT,
            retry_policy=SERVICE_RETRY,
        )

    async def _send_through_coordinator(self, request: ReminderRequest) -> ReminderOutcome:
        """Hand the reminder to the customer's coordinator, which may send it in one message
        with the customer's other invoices, and wait for its answer."""
        key = request.idempotency_key
        self.s.awaiting_reminder, self.s.reminder_answer = key, None
        requested = await workflow.execute_activity_method(
            CoordinationActivities.request_reminder,
            ReminderDue(
                reminder=request,
                customer_id=self.invoice.customer_id,
                customer_timezone=self.invoice.customer_timezone,
                invoice_workflow_id=workflow.info().workflow_id,
            ),
            start_to_close_timeout=MESSAGE_TIMEOUT,
            retry_policy=SERVICE_RETRY,
        )
        if requested.sent_alone is not None:
            self.s.awaiting_reminder = None
            return requested.sent_alone
        try:
            answered = await self._coordinator_answered()
        finally:
            self.s.awaiting_reminder = None
        if not answered:
            raise CoordinatorRefused("no answer from the customer's coordinator")
        answer, self.s.reminder_answer = self.s.reminder_answer, None
        assert answer is not None
        if answer.outcome is None:
            raise CoordinatorRefused(answer.error or "the coordinator could not send it")
        return answer.outcome

    async def _coordinator_answered(self) -> bool:
        """Wait for the coordinator's answer; False if none came within its timeout."""
        if not takes_change(COORDINATOR_WAIT_UNCANCELLED):
            try:
                await workflow.wait_condition(
                    lambda: self.s.reminder_answer is not None, timeout=COORDINATOR_ANSWER_TIMEOUT
                )
            except TimeoutError:
                return False
            return True
        timer = self._timer(COORDINATOR_ANSWER_TIMEOUT)
        await workflow.wait_condition(lambda: self.s.reminder_answer is not None or timer.done())
        return self.s.reminder_answer is not None

    def _timer(self, delay: timedelta) -> asyncio.Task[None]:
        """A timer that is never cancelled, only outlived: done once it has fired. (A
        cancelled timer that fired meanwhile can strand the run on the time-skipping test
        server.) It stays referenced until then."""
        timer = asyncio.create_task(workflow.sleep(delay))
        self.timers.add(timer)
        timer.add_done_callback(self.timers.discard)
        return timer

    @workflow.signal
    def reminder_sent(self, answer: ReminderSent) -> None:
        if answer.idempotency_key == self.s.awaiting_reminder:
            self.s.reminder_answer = answer
