"""InvoiceWorkflow: one invoice from issue to close.

issued -> reminder steps by policy -> escalated (collector task) -> ...
at any time: payment | dispute | promise to pay | credit | void | write-off | outcome
settled -> ERP clearing (retried until it succeeds) -> receipt -> closed

The lifecycle lives here. Its parts are mixins, each on the one before: the state and
helpers all share (`invoice_core.py`), sending reminders (`invoice_reminders.py`), its
collector tasks (`invoice_tasks.py`), the requests that interrupt the lifecycle
(`invoice_requests.py`, `invoice_disputes.py`, `invoice_payments.py`,
`invoice_collector.py`, `invoice_plans.py`), a policy step's work (`invoice_steps.py`), and
clearing, closing and continuing as new (`invoice_closing.py`). Its changes are asked with
`invoice_patches.takes_change`. The workflow continues as new, carrying its whole state, once
its history grows long.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, time, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from policies.schedule import calendar_zone
    from vocabulary import InvoiceStatus
    from workflows import keys
    from workflows.models import (
        InvoiceInput,
        InvoiceProgress,
        InvoiceState,
        Stage,
    )
from workflows.invoice_closing import InvoiceClosing
from workflows.invoice_core import (
    LATE_STEP_TOLERANCE,
    PAUSING_STAGES,
    STAGE_FOR_LEDGER_STATUS,
)
from workflows.invoice_patches import (
    BROKEN_PROMISE_OPENS_TASK,
    PROMISE_AFTER_LAST_STEP,
    takes_change,
)


@workflow.defn
class InvoiceWorkflow(InvoiceClosing):
    @workflow.init
    def __init__(self, invoice: InvoiceInput) -> None:
        self.invoice = invoice
        self.zone = calendar_zone(invoice.policy.calendar, invoice.customer_timezone)
        self.s = invoice.progress or InvoiceProgress(
            balance_minor=invoice.balance_minor,
            status=invoice.status,
            stage=STAGE_FOR_LEDGER_STATUS.get(invoice.status, Stage.SCHEDULED),
            timeline=list(invoice.earlier_timeline),
            timeline_saved=len(invoice.earlier_timeline),
        )
        self.ledger_lock = asyncio.Lock()
        self.timers = set()

    # ----------------------------------------------------------------- lifecycle

    @workflow.run
    async def run(self, invoice: InvoiceInput) -> InvoiceState:
        if invoice.progress is None:
            if invoice.earlier_timeline:
                self._record("restarted", f"from the ledger, which has it {invoice.status}")
            else:
                self._record(
                    "issued",
                    f"due {invoice.due_on}",
                    amount_minor=invoice.balance_minor,
                    at=datetime.combine(invoice.issued_on, time(0), self.zone),
                )
            self._publish()
            self.s.schedule = await self._plan_schedule()
        else:
            self._watch_engagement()  # a wait the run before this one started goes on
        await self._follow_schedule()
        self.s.next_step_at = None
        self._publish()
        await self._wait_until_settled()
        await self._close()
        await workflow.wait_condition(workflow.all_handlers_finished)
        if not self._settled():
            # Money was taken back (a refund, a chargeback) while the invoice closed: it is
            # due again, and a fresh run follows the schedule from now on.
            workflow.continue_as_new(
                self.invoice.model_copy(
                    update={
                        "progress": None,
                        "schedule": None,  # planned afresh from the new run's start
                        "status": self.s.status,
                        "balance_minor": self.s.balance_minor,
                        "earlier_timeline": self.s.timeline,
                    }
                )
            )
        return self.state()

    async def _follow_schedule(self) -> None:
        schedule = self.s.schedule
        while self.s.position < len(schedule):
            planned = schedule[self.s.position]
            step = self._step(planned)
            self.s.next_step_at = planned.send_at
            await self._wait_for_step(planned.send_at)
            if step.sends and self._now() - planned.send_at > LATE_STEP_TOLERANCE:
                # Late after a pause: wait for the send window (and business day) again.
                self.s.next_step_at = await self._next_send_time()
                await self._wait_for_step(self.s.next_step_at)
            if self._settled():
                break
            later = schedule[self.s.position + 1 :]
            if step.sends and later and later[0].send_at <= self._now():
                # After a pause, send only the latest step that fell due, not a burst.
                self._record("skipped", "superseded by a later step", template=step.template)
            else:
                await self._run_step(planned, step)
            self.s.position += 1

    async def _wait_for_step(self, send_at: datetime) -> None:
        """Wait until send_at while honouring pauses; return early once settled."""
        while not self._settled():
            await self._continue_as_new_if_due()
            if self.s.stage == Stage.PAUSED:
                await self._wait_out_promise()
            elif self.s.stage == Stage.ON_PLAN:
                await self._follow_plan()
            elif self.s.stage == Stage.ESCALATED and self.s.sla_watch is not None:
                await self._watch_sla()
            elif self.s.stage in PAUSING_STAGES:
                stage = self.s.stage
                await workflow.wait_condition(
                    lambda s=stage: self.s.stage != s or self._settled() or self._history_full()
                )
            else:
                remaining = send_at - self._now()
                if remaining <= timedelta(0):
                    return
                try:
                    await workflow.wait_condition(
                        lambda: (
                            self.s.stage != Stage.SCHEDULED
                            or self._settled()
                            or self._history_full()
                        ),
                        timeout=remaining,
                    )
                except TimeoutError:
                    return

    async def _wait_until_settled(self) -> None:
        """After the last step only a promise to pay, which ends on a date, needs the clock."""
        while not self._settled():
            await self._continue_as_new_if_due()
            if self.s.stage == Stage.PAUSED and takes_change(PROMISE_AFTER_LAST_STEP):
                await self._wait_out_promise()
                continue
            if self.s.stage == Stage.ON_PLAN:
                await self._follow_plan()
                continue
            if self.s.stage == Stage.ESCALATED and self.s.sla_watch is not None:
                await self._watch_sla()
                continue
            paused = self.s.stage == Stage.PAUSED
            await workflow.wait_condition(
                lambda paused=paused: (
                    self._settled()
                    or (not paused and self.s.stage == Stage.PAUSED)
                    or self.s.stage == Stage.ON_PLAN
                    or (self.s.stage == Stage.ESCALATED and self.s.sla_watch is not None)
                    or self._history_full()
                )
            )

    async def _wait_out_promise(self) -> None:
        s = self.s
        assert s.paused_until is not None and s.promise is not None
        try:
            await workflow.wait_condition(
                lambda: s.stage != Stage.PAUSED or self._settled(),
                timeout=max(s.paused_until - self._now(), timedelta(0)),
            )
            return
        except TimeoutError:
            pass
        promised = s.promise.amount_minor or 0
        kept = s.paid_since_promise_minor >= promised
        self._record(
            "promise_kept" if kept else "promise_broken",
            f"paid {self._money(s.paid_since_promise_minor)} of {self._money(promised)} "
            f"promised by {s.promise.pay_by}",
        )
        # An invoice going back to an escalation has its task open still, unless the promise
        # closed it as the collector's outcome.
        reopen = not kept and (s.stage_after_pause != Stage.ESCALATED or s.promise_closed_tasks)
        broken_by = s.promise.pay_by if reopen else None
        s.promise = None
        s.promise_closed_tasks = False
        s.paused_until = None
        async with self._ledger_turn():
            await self._set_status(InvoiceStatus.OPEN, "promise to pay ended")
            if broken_by is not None and takes_change(BROKEN_PROMISE_OPENS_TASK):
                await self._reopen_task(
                    keys.broken_promise(self.invoice.number, broken_by.isoformat()),
                    f"promise of {broken_by} broken",
                )
        self._set_stage(s.stage_after_pause)
