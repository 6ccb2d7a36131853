"""The invoice's collector tasks in the ledger, as its workflow reopens and closes them.

Invariants:
- A task reopened by the workflow (a broken promise or plan) goes to the queue of the
  policy's first escalation step, else `DEFAULT_QUEUE`, at high priority, due
  `BROKEN_PROMISE_SLA` from now; its idempotency key comes from the caller, so a replayed
  or retried reopening opens one task.
- Closing records the collector's outcome on every open task of the invoice, with the request
  id of the update being handled (if any), for the audit trail.
- A reminder read or its pay link opened starts one wait of the policy's
  `on_engagement_without_payment.unpaid_after`; if then the invoice is still due, no payment
  came since and it is not on hold (a promise, a plan, a dispute, a payment on its way), its
  open task becomes at least the rule's priority (or a task opens with it), the
  `DunwisePriority` search attribute says so, and it never happens twice for the invoice.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.ledger import LedgerActivities
    from activities.models import CollectorOutcome, CollectorTaskRequest
    from vocabulary import TaskOutcome
    from workflows import keys
    from workflows.models import Stage
from workflows.invoice_core import caller_request_id
from workflows.invoice_reminders import InvoiceReminders

# The time a collector has for the task a broken promise reopens.
BROKEN_PROMISE_SLA = timedelta(days=2)
# A queue for tasks an invoice's policy does not name (it has no escalation step).
DEFAULT_QUEUE = "collections"
# Where the invoice may still be chased: not on hold for a promise, plan, dispute or payment.
CHASED_STAGES = frozenset({Stage.SCHEDULED, Stage.ESCALATED, Stage.STOPPED})


class InvoiceTasks(InvoiceReminders):
    """Reopening and closing the invoice's collector tasks."""

    def _policy_queue(self) -> str:
        """The queue of the policy's first escalation step, else the default queue."""
        for step in self.invoice.policy.steps:
            if step.escalate is not None:
                return step.escalate.queue
        return DEFAULT_QUEUE

    async def _reopen_task(
        self, idempotency_key: str, why: str, event: str = "task_reopened"
    ) -> None:
        """A broken promise or plan, or an address that cannot be reached, puts the invoice
        (back) on a collector's worklist."""
        queue = self._policy_queue()
        await self._ledger(
            LedgerActivities.open_collector_task,
            CollectorTaskRequest(
                invoice_number=self.invoice.number,
                queue=queue,
                priority="high",
                due_at=self._now() + BROKEN_PROMISE_SLA,
                idempotency_key=idempotency_key,
            ),
        )
        self._record(event, f"{why}: queue {queue}")

    async def _close_tasks(
        self, outcome: TaskOutcome, note: str | None, actor: str, caller_waits: bool = False
    ) -> None:
        """The invoice's open collector tasks close with a collector's outcome."""
        await self._ledger(
            LedgerActivities.close_collector_tasks,
            CollectorOutcome(
                invoice_number=self.invoice.number,
                outcome=outcome,
                note=note,
                actor=actor,
                request_id=caller_request_id(),
            ),
            caller_waits=caller_waits,
        )

    def _watch_engagement(self) -> None:
        """Wait for a payment after the customer first engaged; see the module's invariants."""
        s = self.s
        if s.engaged_at is None or s.raised_priority is not None or self._settled():
            return
        # Kept on the instance: a task only weakly referenced may be collected mid-wait.
        self._engagement_watch = asyncio.create_task(
            self._raise_priority_if_unpaid(s.engaged_at, s.received_minor)
        )

    async def _raise_priority_if_unpaid(self, engaged_at: datetime, received_minor: int) -> None:
        rule = self.invoice.policy.on_engagement_without_payment
        await workflow.sleep(max(engaged_at + rule.unpaid_after - self._now(), timedelta(0)))
        s = self.s
        paid_since = s.received_minor > received_minor
        if self._settled() or paid_since or s.stage not in CHASED_STAGES or s.raised_priority:
            return
        s.raised_priority = rule.priority
        queue = self._policy_queue()
        try:
            async with self._ledger_turn():
                await self._ledger(
                    LedgerActivities.raise_task_priority,
                    CollectorTaskRequest(
                        invoice_number=self.invoice.number,
                        queue=queue,
                        priority=rule.priority,
                        due_at=self._now() + BROKEN_PROMISE_SLA,
                        idempotency_key=keys.engaged_unpaid(self.invoice.number),
                    ),
                )
        except ApplicationError as refused:
            self._record("priority_not_raised", refused.message)
            return
        since = engaged_at.date().isoformat()
        self._record(
            "priority_raised", f"read or opened on {since} and not paid: {rule.priority}, {queue}"
        )
        self._publish()
