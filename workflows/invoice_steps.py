"""A policy step's work: the schedule of steps, and running one that fell due.

A step may charge a late fee, send a reminder (`workflows.invoice_reminders`) and escalate to
a collector, in that order. Waiting for a step, and skipping the ones a pause overtook, is
the lifecycle's (`workflows.invoice`).

Invariants:
- A step's ledger writes carry keys built from the invoice and the step's index, so a retried
  step charges and opens nothing twice.
- A late fee the ledger refuses, or one finer than the currency allows, is skipped and told
  on the timeline; the step goes on.
- An escalated invoice waits for a collector's outcome for the step's SLA; past it the task
  moves to the supervisor queue (in runs since `SLA_MOVES_TASK`).
- A run follows the schedule its input carries (planned by the starter, in runs since
  `SCHEDULE_IN_INPUT`); without one it plans by a local activity (in runs since
  `SCHEDULE_FROM_ACTIVITY`); older runs compute it in the workflow, as they did when recorded.
"""

from __future__ import annotations

from datetime import datetime

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.ledger import LedgerActivities
    from activities.models import (
        AdjustmentApplication,
        CollectorTaskRequest,
        PlannedStep,
        TaskBreach,
    )
    from activities.planning import (
        ScheduleRequest,
        SendTimeRequest,
        plan_next_send_time,
        plan_schedule,
    )
    from policies.schedule import build_schedule, next_send_time
    from policies.steps import Step, late_fee_minor
    from vocabulary import AdjustmentKind
    from workflows import keys
    from workflows.models import Stage
from workflows.invoice_core import (
    LATE_STEP_TOLERANCE,
    PLANNING_TIMEOUT,
)
from workflows.invoice_patches import (
    SCHEDULE_FROM_ACTIVITY,
    SCHEDULE_IN_INPUT,
    SLA_MOVES_TASK,
    takes_change,
)
from workflows.invoice_plans import InvoicePlans


class InvoiceSteps(InvoicePlans):
    """Planning the invoice's policy steps and running each one."""

    async def _plan_schedule(self) -> list[PlannedStep]:
        invoice = self.invoice
        if invoice.schedule is not None and takes_change(SCHEDULE_IN_INPUT):
            return invoice.schedule
        if takes_change(SCHEDULE_FROM_ACTIVITY):
            return await workflow.execute_local_activity(
                plan_schedule,
                ScheduleRequest(
                    policy=invoice.policy,
                    issued_on=invoice.issued_on,
                    due_on=invoice.due_on,
                    customer_timezone=invoice.customer_timezone,
                    not_before=self._now(),
                ),
                start_to_close_timeout=PLANNING_TIMEOUT,
            )
        schedule = build_schedule(
            invoice.policy,
            issued_on=invoice.issued_on,
            due_on=invoice.due_on,
            customer_timezone=invoice.customer_timezone,
            not_before=self._now(),
        )
        return [PlannedStep(index=s.index, send_at=s.send_at) for s in schedule]

    async def _next_send_time(self) -> datetime:
        if takes_change(SCHEDULE_FROM_ACTIVITY):
            return await workflow.execute_local_activity(
                plan_next_send_time,
                SendTimeRequest(
                    policy=self.invoice.policy,
                    customer_timezone=self.invoice.customer_timezone,
                    now=self._now(),
                ),
                start_to_close_timeout=PLANNING_TIMEOUT,
            )
        return next_send_time(self.invoice.policy.calendar, self.zone, self._now())

    async def _run_step(self, planned: PlannedStep, step: Step) -> None:
        # The timeline shows the planned moment of a step that ran on time, not the
        # milliseconds a busy worker took to get to it.
        late = self._now() - planned.send_at > LATE_STEP_TOLERANCE
        at = self._now() if late else planned.send_at
        if step.late_fee is not None and self.s.balance_minor > 0:
            await self._charge_late_fee(planned, step, at)
        if step.sends:
            await self._send_reminder(planned, step, at)
        if step.escalate is not None:
            await self._escalate(planned, step, at)
        self._publish()

    async def _charge_late_fee(self, planned: PlannedStep, step: Step, at: datetime) -> None:
        assert step.late_fee is not None
        try:
            fee = late_fee_minor(
                step.late_fee, self.s.balance_minor, self.invoice.currency_exponent
            )
        except ValueError as err:
            # A fixed fee finer than the currency allows ("2.50" on a yen invoice).
            self._record("late_fee_skipped", str(err), at=at)
            return
        async with self.ledger_lock:
            try:
                balance = await self._ledger(
                    LedgerActivities.apply_adjustment,
                    AdjustmentApplication(
                        invoice_number=self.invoice.number,
                        kind=AdjustmentKind.LATE_FEE,
                        amount_minor=fee,
                        reason=f"late fee of policy step {planned.index}",
                        idempotency_key=keys.late_fee(self.invoice.number, planned.index),
                    ),
                )
            except ApplicationError as err:
                # The ledger refused it (say past its limit): the invoice goes on without it.
                self._record("late_fee_skipped", err.message, at=at)
                return
        self._apply_balance(balance)
        self._record(AdjustmentKind.LATE_FEE, amount_minor=fee, at=at)

    async def _escalate(self, planned: PlannedStep, step: Step, at: datetime) -> None:
        escalation = step.escalate
        assert escalation is not None
        async with self._ledger_turn():
            await self._ledger(
                LedgerActivities.open_collector_task,
                CollectorTaskRequest(
                    invoice_number=self.invoice.number,
                    queue=escalation.queue,
                    priority=escalation.priority,
                    due_at=at + escalation.sla,
                    idempotency_key=keys.escalation(self.invoice.number, planned.index),
                ),
            )
        self._set_stage(Stage.ESCALATED)
        self._record(
            "escalation", f"queue {escalation.queue}, priority {escalation.priority}", at=at
        )
        try:
            await workflow.wait_condition(
                lambda: self.s.stage != Stage.ESCALATED or self._settled(), timeout=escalation.sla
            )
        except TimeoutError:
            self._record(
                "escalation_sla_breached",
                "no collector outcome within the SLA",
                at=at + escalation.sla,
            )
            if takes_change(SLA_MOVES_TASK):
                # The task goes to the supervisor queue, unassigned, marked breached.
                async with self._ledger_turn():
                    await self._ledger(
                        LedgerActivities.breach_collector_task,
                        TaskBreach(
                            task_key=keys.escalation(self.invoice.number, planned.index),
                            supervisor_queue=escalation.breach_queue,
                            at=at + escalation.sla,
                        ),
                    )
