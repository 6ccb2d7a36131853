"""The invoice's collector tasks in the ledger, as its workflow reopens and closes them.

Invariants:
- A task reopened by the workflow (a broken promise or plan) goes to the queue of the
  policy's first escalation step, else `DEFAULT_QUEUE`, at high priority, due
  `BROKEN_PROMISE_SLA` from now; its idempotency key comes from the caller, so a replayed
  or retried reopening opens one task.
- Closing records the collector's outcome on every open task of the invoice, with the request
  id of the update being handled (if any), for the audit trail.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.ledger import LedgerActivities
    from activities.models import CollectorOutcome, CollectorTaskRequest
    from vocabulary import TaskOutcome
from workflows.invoice_core import caller_request_id
from workflows.invoice_reminders import InvoiceReminders

# The time a collector has for the task a broken promise reopens.
BROKEN_PROMISE_SLA = timedelta(days=2)
# A queue for tasks an invoice's policy does not name (it has no escalation step).
DEFAULT_QUEUE = "collections"


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
