"""Disputes and a collector's outcome: what pauses dunning for a disagreement, and what
resumes or stops it.

Invariants:
- A dispute is on the timeline even when the policy does not pause for it; when it does, the
  invoice is disputed in the ledger and no reminder goes out until an outcome.
- An outcome ends any pause (promise, plan, dispute, escalation): "resume" goes back to the
  schedule, "stop" holds the reminders while the invoice waits for payment, until a later
  outcome resumes them. In runs
  since `COLLECTOR_OUTCOME_IN_LEDGER` the ledger is reopened and the collector tasks closed
  before the stage changes, so a reminder sent at once never finds the invoice disputed.
- The older signals (`dispute`, `resolve`) record a refusal on the timeline, never raise.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from vocabulary import InvoiceStatus, TaskOutcome
    from workflows.models import Dispute, InvoiceState, Resolution, Stage
from workflows.invoice_patches import COLLECTOR_OUTCOME_IN_LEDGER, takes_change
from workflows.invoice_requests import InvoiceRequests


class InvoiceDisputes(InvoiceRequests):
    """Dispute and outcome updates, their older signals, and what they do to the invoice."""

    @workflow.update
    async def record_dispute(self, dispute: Dispute) -> InvoiceState:
        async with self._request("dispute") as request_id:
            if request_id is not None:
                await self._dispute(dispute, caller_waits=True)
        return self.state()

    @record_dispute.validator
    def _validate_dispute(self, dispute: Dispute) -> None:
        if self._repeated_request():
            return
        self._require_open("dispute")
        if not dispute.reason.strip():
            raise ValueError("a dispute needs a reason")

    @workflow.update
    async def record_outcome(self, resolution: Resolution) -> InvoiceState:
        """A collector's outcome: resume dunning, or stop it and wait for payment."""
        async with self._request(resolution.action) as request_id:
            if request_id is not None:
                await self._resolve(resolution, caller_waits=True)
        return self.state()

    @record_outcome.validator
    def _validate_outcome(self, resolution: Resolution) -> None:
        if self._repeated_request():
            return
        self._require_open(resolution.action)
        if resolution.action not in ("resume", "stop"):
            raise ValueError(f"an outcome is resume or stop, got {resolution.action!r}")
        if resolution.action == "resume" and self.s.stage == Stage.SCHEDULED:
            raise ValueError("dunning is not paused: nothing to resume")
        if resolution.action == "stop" and self.s.stage == Stage.STOPPED:
            raise ValueError("dunning is already stopped")

    # Signals from before disputes and outcomes were updates: kept so that older callers and
    # the histories of invoices in flight still work. A refusal is recorded, never raised.
    @workflow.signal
    async def dispute(self, dispute: Dispute) -> None:
        async with self._ledger_turn():
            try:
                await self._dispute(dispute)
            except ApplicationError as err:
                self._record("dispute_refused", err.message)

    @workflow.signal
    async def resolve(self, resolution: Resolution) -> None:
        async with self._ledger_turn():
            try:
                await self._resolve(resolution)
            except ApplicationError as err:
                self._record("outcome_refused", err.message)

    async def _dispute(self, dispute: Dispute, *, caller_waits: bool = False) -> None:
        if self._settled():
            return
        self._record("dispute", dispute.reason)
        if self.invoice.policy.on_dispute == "pause":
            self._pause_for(Stage.DISPUTED)
            await self._set_status(
                InvoiceStatus.DISPUTED, dispute.reason, caller_waits, actor=dispute.actor
            )

    async def _resolve(self, resolution: Resolution, *, caller_waits: bool = False) -> None:
        if self._settled():
            return
        stopped = resolution.action == "stop"
        if takes_change(COLLECTOR_OUTCOME_IN_LEDGER):
            # The ledger first: the main loop wakes on the stage change and may send at once,
            # and the sending activity must not find the invoice still disputed.
            await self._reopen(resolution, caller_waits)
            outcome = TaskOutcome.STOPPED if stopped else TaskOutcome.RESUMED
            await self._close_tasks(outcome, resolution.note, resolution.actor, caller_waits)
            self._end_pause(stopped, resolution)
            return
        self._end_pause(stopped, resolution)
        await self._reopen(resolution, caller_waits)

    def _end_pause(self, stopped: bool, resolution: Resolution) -> None:
        self.s.promise = None
        self.s.paused_until = None
        self.s.plan = None  # a collector's outcome ends a payment plan too
        self._set_stage(Stage.STOPPED if stopped else Stage.SCHEDULED)
        self._record("dunning_stopped" if stopped else "resumed", resolution.note or "")

    async def _reopen(self, resolution: Resolution, caller_waits: bool) -> None:
        if self.s.status in (InvoiceStatus.DISPUTED, InvoiceStatus.PAUSED):
            await self._set_status(
                InvoiceStatus.OPEN, resolution.note, caller_waits, resolution.actor
            )
