"""CustomerWorkflow: one customer's reminders, gathered into as few messages as the day needs.

An invoice workflow whose reminder step falls due calls the activity `request_reminder`: a
reminder with nothing to gather or limit goes out at once; otherwise the activity hands it
to the customer's coordinator (signal-with-start) and the invoice waits for the answer (signal
`reminder_sent`). The coordinator:

- gathers the reminders of one group (the customer's invoices due the same day under the same
  policy step: the activity names the group and the invoices it expects) until every expected
  invoice has arrived or the gathering window has passed since the first, then sends them as
  one message per channel (activity `send_grouped_reminder`) and answers each invoice;
- keeps the customer's contact limit: at most `daily_limit` reminders a day on a channel, the
  day counted in the customer's zone by the reminders' own send times (so simulations of past
  dates count their own days); a reminder over the limit is recorded as suppressed;
- ends after a day without reminders, when nothing it counted can matter any more; the next
  reminder starts a new run. It continues as new, carrying its state, when its history grows.

Nothing waits by sleeping in an activity: gathering is a durable timer here.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, FailureError

with workflow.unsafe.imports_passed_through():
    from activities.grouped_messages import GroupedMessagingActivities
    from activities.models import (
        CoordinatorStart,
        CoordinatorState,
        GatheredReminder,
        GroupedOutcome,
        GroupedReminder,
        ReminderDue,
        ReminderSent,
    )
    from policies.calendars import load_zone
    from vocabulary import MessageStatus
from workflows.invoice_core import MESSAGE_TIMEOUT, SERVICE_RETRY, activity_reason

COORDINATOR_ID_PREFIX = "customer-"
# After a day with no reminder the day's counts can no longer limit anything.
IDLE_LIFETIME = timedelta(days=1)
HISTORY_EVENTS_BOUND = 2_000


def coordinator_id(customer_id: str) -> str:
    return f"{COORDINATOR_ID_PREFIX}{customer_id}"


@workflow.defn
class CustomerWorkflow:
    @workflow.init
    def __init__(self, start: CoordinatorStart) -> None:
        self.start = start
        self.s = start.carried or CoordinatorState()
        self.arrivals = 0
        self.timers = 0
        self.fired: set[int] = set()
        self.pending: set[asyncio.Future[None]] = set()  # the timers' tasks, kept referenced

    @workflow.signal
    def reminder_due(self, due: ReminderDue) -> None:
        if any(
            w.due.reminder.idempotency_key == due.reminder.idempotency_key for w in self.s.waiting
        ):
            return  # a retried request: already gathered
        self.s.waiting.append(GatheredReminder(due=due, arrived_at=workflow.now()))
        self.arrivals += 1

    @workflow.query
    def waiting(self) -> list[str]:
        return [w.due.reminder.invoice_number for w in self.s.waiting]

    @workflow.run
    async def run(self, start: CoordinatorStart) -> None:
        while True:
            if not self.s.waiting:
                if workflow.info().get_current_history_length() > HISTORY_EVENTS_BOUND:
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    workflow.continue_as_new(self.start.model_copy(update={"carried": self.s}))
                idle = self._timer(IDLE_LIFETIME)
                await workflow.wait_condition(
                    lambda idle=idle: bool(self.s.waiting) or idle in self.fired
                )
                if not self.s.waiting:
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    if not self.s.waiting:
                        return
                continue
            group, wait = self._next_group()
            if group:
                await self._send(group)
                continue
            window = self._timer(wait)
            await workflow.wait_condition(
                lambda seen=self.arrivals, window=window: (
                    self.arrivals != seen or window in self.fired
                )
            )

    def _timer(self, delay: timedelta) -> int:
        """A timer that is never cancelled, only outlived: its number is in `fired` once it
        has. (A cancelled timer that fired meanwhile strands the run on the time-skipping
        test server, temporalio/sdk-java#3088.)"""
        self.timers += 1
        number = self.timers

        async def sleep() -> None:
            await workflow.sleep(delay)
            self.fired.add(number)

        self.pending.add(asyncio.ensure_future(sleep()))
        return number

    def _next_group(self) -> tuple[list[GatheredReminder], timedelta]:
        """The first group ready to go (all expected arrived, or its window over); else how
        long until the soonest window ends."""
        now = workflow.now()
        groups: dict[str, list[GatheredReminder]] = {}
        for waiting in self.s.waiting:
            key = waiting.due.group or waiting.due.reminder.idempotency_key
            groups.setdefault(key, []).append(waiting)
        soonest = self.start.window
        for members in groups.values():
            arrived = {m.due.reminder.invoice_number for m in members}
            expected = set(members[0].due.expected)
            window_left = members[0].arrived_at + self.start.window - now
            if expected <= arrived or window_left <= timedelta(0):
                return members, timedelta(0)
            soonest = min(soonest, window_left)
        return [], soonest

    async def _send(self, group: list[GatheredReminder]) -> None:
        reminders = [w.due.reminder for w in group]
        first = reminders[0]
        zone = load_zone(group[0].due.customer_timezone)
        day = first.scheduled_for.astimezone(zone).date()
        channels = list(dict.fromkeys(c for r in reminders for c in r.channels))
        limit = self.start.daily_limit
        limited = [c for c in channels if limit and self.s.sent.get(c, {}).get(day, 0) >= limit]
        error = None
        try:
            outcome = await workflow.execute_activity_method(
                GroupedMessagingActivities.send_grouped_reminder,
                GroupedReminder(reminders=reminders, limited_channels=limited),
                start_to_close_timeout=MESSAGE_TIMEOUT,
                retry_policy=SERVICE_RETRY,
            )
        except ActivityError as err:
            outcome, error = GroupedOutcome(outcomes={}), activity_reason(err)
        for channel in channels:
            if any(
                result.channel == channel and result.status == MessageStatus.SENT
                for answer in outcome.outcomes.values()
                for result in answer.results
            ):
                counts = self.s.sent.setdefault(channel, {})
                counts[day] = counts.get(day, 0) + 1
        # Only today's counts still matter.
        self.s.sent = {
            c: {d: n for d, n in days.items() if d >= day} for c, days in self.s.sent.items()
        }
        keys = {r.idempotency_key for r in reminders}
        self.s.waiting = [w for w in self.s.waiting if w.due.reminder.idempotency_key not in keys]
        await asyncio.gather(*(self._answer(w.due, outcome, error) for w in group))

    async def _answer(self, due: ReminderDue, outcome: GroupedOutcome, error: str | None) -> None:
        key = due.reminder.idempotency_key
        answer = ReminderSent(idempotency_key=key, outcome=outcome.outcomes.get(key), error=error)
        try:
            await workflow.get_external_workflow_handle(due.invoice_workflow_id).signal(
                "reminder_sent", answer
            )
        except FailureError as err:  # an invoice that ended meanwhile needs no answer
            workflow.logger.info("reminder answer for %s not delivered: %s", key, err)
