"""InvoiceWorkflow: one invoice from issue to close.

issued -> reminder steps by policy -> escalated (collector task) -> ...
at any time: payment | dispute | promise to pay | credit | void | write-off
settled -> ERP clearing (retried until it succeeds) -> receipt -> closed

The ledger is the truth for money (every balance here comes back from a ledger activity);
this workflow is the truth for what happens next.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, time, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.models import (
        AdjustmentApplication,
        CollectorOutcome,
        CollectorTaskRequest,
        ErpClearingRequest,
        LedgerBalance,
        PaymentApplication,
        ReceiptRequest,
        ReminderOutcome,
        ReminderRequest,
        StatusChange,
    )
    from policies.money import from_minor
    from policies.schedule import (
        ScheduledStep,
        build_schedule,
        calendar_zone,
        days_past_due,
        next_send_time,
    )
    from policies.schema import late_fee_minor
    from workflows import search_attributes as sa
    from workflows.models import (
        Adjustment,
        Closure,
        Dispute,
        InvoiceInput,
        InvoiceState,
        PaymentReceived,
        PromiseToPay,
        Resolution,
        Stage,
        TimelineEntry,
    )

LEDGER_TIMEOUT = timedelta(seconds=30)
MESSAGE_TIMEOUT = timedelta(minutes=2)
# Ledger and messaging retry with backoff; their business errors are non-retryable.
SERVICE_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=5))
# The ERP may be down for hours; clearing is retried until it succeeds.
ERP_RETRY = RetryPolicy(maximum_interval=timedelta(hours=1))
LATE_STEP_TOLERANCE = timedelta(minutes=5)
ERP_REJECTED_RETRY_AFTER = timedelta(hours=6)
TERMINAL_STATUSES = frozenset({"paid", "void", "written_off", "closed"})
# Stages in which no reminder goes out until a message moves the invoice on.
PAUSING_STAGES = frozenset({Stage.PAUSED, Stage.DISPUTED, Stage.ESCALATED, Stage.STOPPED})
# Changes that add commands to histories recorded before them (workflow.patched ids).
PROMISE_AFTER_LAST_STEP = "promise-after-last-step"
COLLECTOR_OUTCOME_IN_LEDGER = "collector-outcome-in-ledger"


@workflow.defn
class InvoiceWorkflow:
    @workflow.init
    def __init__(self, invoice: InvoiceInput) -> None:
        self.invoice = invoice
        self.zone = calendar_zone(invoice.policy.calendar, invoice.customer_timezone)
        self.balance_minor = invoice.balance_minor
        self.status = "open"
        self.stage = Stage.SCHEDULED
        self.stage_after_pause = Stage.SCHEDULED
        self.next_step_at: datetime | None = None
        self.paused_until: datetime | None = None
        self.promise: PromiseToPay | None = None
        self.paid_since_promise_minor = 0
        self.received_minor = 0
        self.timeline: list[TimelineEntry] = []
        self.money_lock = asyncio.Lock()

    # ----------------------------------------------------------------- lifecycle

    @workflow.run
    async def run(self, invoice: InvoiceInput) -> InvoiceState:
        self._record(
            "issued",
            f"due {invoice.due_on}",
            amount_minor=invoice.balance_minor,
            at=datetime.combine(invoice.issued_on, time(0), self.zone),
        )
        self._publish()
        schedule = build_schedule(
            invoice.policy,
            issued_on=invoice.issued_on,
            due_on=invoice.due_on,
            customer_timezone=invoice.customer_timezone,
            not_before=self._now(),
        )
        for position, scheduled in enumerate(schedule):
            self.next_step_at = scheduled.send_at
            await self._wait_for_step(scheduled.send_at)
            if scheduled.step.sends and self._now() - scheduled.send_at > LATE_STEP_TOLERANCE:
                # Late after a pause: wait for the send window (and business day) again.
                calendar = self.invoice.policy.calendar
                self.next_step_at = next_send_time(calendar, self.zone, self._now())
                await self._wait_for_step(self.next_step_at)
            if self._settled():
                break
            later = schedule[position + 1 :]
            if scheduled.step.sends and later and later[0].send_at <= self._now():
                # After a pause, send only the latest step that fell due, not a burst.
                self._record(
                    "skipped", "superseded by a later step", template=scheduled.step.template
                )
                continue
            await self._run_step(scheduled)
        self.next_step_at = None
        self._publish()
        await self._wait_until_settled()
        await self._close()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.state()

    async def _wait_for_step(self, send_at: datetime) -> None:
        """Wait until send_at while honouring pauses; return early once settled."""
        while not self._settled():
            if self.stage == Stage.PAUSED:
                await self._wait_out_promise()
            elif self.stage in PAUSING_STAGES:
                stage = self.stage
                await workflow.wait_condition(lambda s=stage: self.stage != s or self._settled())
            else:
                remaining = send_at - self._now()
                if remaining <= timedelta(0):
                    return
                try:
                    await workflow.wait_condition(
                        lambda: self.stage != Stage.SCHEDULED or self._settled(), timeout=remaining
                    )
                except TimeoutError:
                    return

    async def _wait_until_settled(self) -> None:
        """After the last step only a promise to pay, which ends on a date, needs the clock."""
        while not self._settled():
            if self.stage == Stage.PAUSED and workflow.patched(PROMISE_AFTER_LAST_STEP):
                await self._wait_out_promise()
                continue
            paused = self.stage == Stage.PAUSED
            await workflow.wait_condition(
                lambda paused=paused: self._settled() or (not paused and self.stage == Stage.PAUSED)
            )

    async def _wait_out_promise(self) -> None:
        assert self.paused_until is not None and self.promise is not None
        try:
            await workflow.wait_condition(
                lambda: self.stage != Stage.PAUSED or self._settled(),
                timeout=max(self.paused_until - self._now(), timedelta(0)),
            )
            return
        except TimeoutError:
            pass
        promised = self.promise.amount_minor or 0
        kept = self.paid_since_promise_minor >= promised
        self._record(
            "promise_kept" if kept else "promise_broken",
            f"paid {self._money(self.paid_since_promise_minor)} of {self._money(promised)} "
            f"promised by {self.promise.pay_by}",
        )
        self.promise = None
        self.paused_until = None
        await self._set_status("open", "promise to pay ended")
        self._set_stage(self.stage_after_pause)

    async def _run_step(self, scheduled: ScheduledStep) -> None:
        step = scheduled.step
        # The timeline shows the planned moment of a step that ran on time, not the
        # milliseconds a busy worker took to get to it.
        late = self._now() - scheduled.send_at > LATE_STEP_TOLERANCE
        at = self._now() if late else scheduled.send_at
        if step.late_fee is not None and self.balance_minor > 0:
            await self._charge_late_fee(scheduled, at)
        if step.sends:
            await self._send_reminder(scheduled, at)
        if step.escalate is not None:
            await self._escalate(scheduled, at)
        self._publish()

    async def _charge_late_fee(self, scheduled: ScheduledStep, at: datetime) -> None:
        assert scheduled.step.late_fee is not None
        try:
            fee = late_fee_minor(
                scheduled.step.late_fee, self.balance_minor, self.invoice.currency_exponent
            )
        except ValueError as err:
            # A fixed fee finer than the currency allows ("2.50" on a yen invoice).
            self._record("late_fee_skipped", str(err), at=at)
            return
        async with self.money_lock:
            balance = await self._ledger(
                "apply_adjustment",
                AdjustmentApplication(
                    invoice_number=self.invoice.number,
                    kind="late_fee",
                    amount_minor=fee,
                    reason=f"late fee of policy step {scheduled.index}",
                    idempotency_key=f"{self.invoice.number}:late-fee:{scheduled.index}",
                ),
            )
        self._apply_balance(balance)
        self._record("late_fee", amount_minor=fee, at=at)

    async def _send_reminder(self, scheduled: ScheduledStep, at: datetime) -> None:
        assert scheduled.step.template is not None
        try:
            outcome: ReminderOutcome = await workflow.execute_activity(
                "send_reminder",
                ReminderRequest(
                    invoice_number=self.invoice.number,
                    template=scheduled.step.template,
                    channels=list(scheduled.step.channels),
                    step_index=scheduled.index,
                    scheduled_for=scheduled.send_at,
                    idempotency_key=f"{self.invoice.number}:step:{scheduled.index}",
                ),
                result_type=ReminderOutcome,
                start_to_close_timeout=MESSAGE_TIMEOUT,
                retry_policy=SERVICE_RETRY,
            )
        except ActivityError as err:
            # Refused for good (say a template removed after the policy was loaded): the
            # invoice stays collectable, and the timeline says what went wrong.
            self._record("reminder_failed", _reason(err), template=scheduled.step.template, at=at)
            return
        for result in outcome.results:
            self._record(
                "reminder" if result.status == "sent" else f"reminder_{result.status}",
                result.reason or "",
                channel=result.channel,
                template=scheduled.step.template,
                at=at,
            )

    async def _escalate(self, scheduled: ScheduledStep, at: datetime) -> None:
        escalation = scheduled.step.escalate
        assert escalation is not None
        await self._ledger(
            "open_collector_task",
            CollectorTaskRequest(
                invoice_number=self.invoice.number,
                queue=escalation.queue,
                priority=escalation.priority,
                due_at=at + escalation.sla,
                idempotency_key=f"{self.invoice.number}:escalation:{scheduled.index}",
            ),
            result_type=int,
        )
        self._set_stage(Stage.ESCALATED)
        self._record(
            "escalation", f"queue {escalation.queue}, priority {escalation.priority}", at=at
        )
        try:
            await workflow.wait_condition(
                lambda: self.stage != Stage.ESCALATED or self._settled(), timeout=escalation.sla
            )
        except TimeoutError:
            self._record(
                "escalation_sla_breached",
                "no collector outcome within the SLA",
                at=at + escalation.sla,
            )

    async def _close(self) -> None:
        self._set_stage(Stage.CLEARING)
        while True:
            try:
                await workflow.execute_activity(
                    "clear_in_erp",
                    ErpClearingRequest(
                        invoice_number=self.invoice.number,
                        cleared_on=self._now().astimezone(self.zone).date(),
                        idempotency_key=f"{self.invoice.number}:erp-clearing",
                    ),
                    start_to_close_timeout=timedelta(minutes=1),
                    retry_policy=ERP_RETRY,
                )
                break
            except ActivityError as err:
                # Rejected outright (for example a 4xx): keep the invoice open in clearing.
                self._record("erp_rejected", _reason(err))
                await workflow.sleep(ERP_REJECTED_RETRY_AFTER)
        self._record("cleared", "posted to the ERP")
        if self.status == "paid":
            await workflow.execute_activity(
                "send_receipt",
                ReceiptRequest(
                    invoice_number=self.invoice.number,
                    paid_at=self._now(),
                    idempotency_key=f"{self.invoice.number}:receipt",
                ),
                result_type=ReminderOutcome,
                start_to_close_timeout=MESSAGE_TIMEOUT,
                retry_policy=SERVICE_RETRY,
            )
            self._record("receipt")
            await self._set_status("closed", "paid and cleared")
        self._set_stage(Stage.CLOSED)
        self._record("closed", self.status)
        self._publish()

    # ----------------------------------------------------------------- payments and money

    @workflow.update
    async def record_payment(self, payment: PaymentReceived) -> InvoiceState:
        update_id = workflow.current_update_info().id  # type: ignore[union-attr]
        async with self.money_lock:
            balance = await self._ledger(
                "apply_payment",
                PaymentApplication(
                    invoice_number=self.invoice.number,
                    amount_minor=payment.amount_minor,
                    currency=payment.currency,
                    method=payment.method,
                    reference=payment.reference,
                    reason=payment.reason,
                    received_at=payment.received_at or self._now(),
                    idempotency_key=f"{self.invoice.number}:payment:{update_id}",
                    actor=payment.actor,
                ),
            )
        before = self.balance_minor
        self._apply_balance(balance)
        self.paid_since_promise_minor += payment.amount_minor
        self.received_minor += payment.amount_minor
        credit = max(payment.amount_minor - before, 0)
        kind = "full" if balance.balance_minor <= 0 else "partial"
        detail = f"{kind} via {payment.method}"
        if credit:
            detail += f", {self._money(credit)} to credit"
        if payment.reason:
            detail += f": {payment.reason}"
        self._record("payment", detail, amount_minor=payment.amount_minor, at=payment.received_at)
        return self.state()

    @record_payment.validator
    def _validate_payment(self, payment: PaymentReceived) -> None:
        self._require_open("record a payment on")
        if payment.amount_minor <= 0:
            raise ValueError(f"payment amount must be positive, got {payment.amount_minor}")
        if payment.currency != self.invoice.currency:
            raise ValueError(
                f"payment currency {payment.currency} does not match invoice currency "
                f"{self.invoice.currency}"
            )

    @workflow.update
    async def adjust(self, adjustment: Adjustment) -> InvoiceState:
        update_id = workflow.current_update_info().id  # type: ignore[union-attr]
        async with self.money_lock:
            balance = await self._ledger(
                "apply_adjustment",
                AdjustmentApplication(
                    invoice_number=self.invoice.number,
                    kind=adjustment.kind,
                    amount_minor=adjustment.amount_minor,
                    reason=adjustment.reason,
                    idempotency_key=f"{self.invoice.number}:adjustment:{update_id}",
                    actor=adjustment.actor,
                ),
            )
        self._apply_balance(balance)
        self._record(adjustment.kind, adjustment.reason, amount_minor=adjustment.amount_minor)
        return self.state()

    @adjust.validator
    def _validate_adjustment(self, adjustment: Adjustment) -> None:
        self._require_open("adjust")
        if adjustment.kind not in ("credit", "adjustment"):
            raise ValueError(
                f"adjustment kind must be credit or adjustment, got {adjustment.kind!r}"
            )
        if adjustment.kind == "credit" and adjustment.amount_minor >= 0:
            raise ValueError("a credit lowers the balance: its amount must be negative")
        if adjustment.amount_minor == 0:
            raise ValueError("adjustment amount must not be zero")
        if not adjustment.reason.strip():
            raise ValueError("an adjustment needs a reason")

    @workflow.update
    async def void(self, closure: Closure) -> InvoiceState:
        return await self._close_out("void", closure)

    @void.validator
    def _validate_void(self, closure: Closure) -> None:
        self._require_open("void")
        if self.received_minor:
            raise ValueError("invoice has payments; issue a credit instead of voiding")
        self._require_reason(closure)

    @workflow.update
    async def write_off(self, closure: Closure) -> InvoiceState:
        return await self._close_out("write_off", closure)

    @write_off.validator
    def _validate_write_off(self, closure: Closure) -> None:
        self._require_open("write off")
        if self.balance_minor <= 0:
            raise ValueError("nothing to write off: the balance is zero")
        self._require_reason(closure)

    async def _close_out(self, kind: str, closure: Closure) -> InvoiceState:
        async with self.money_lock:
            amount = -self.balance_minor
            balance = await self._ledger(
                "apply_adjustment",
                AdjustmentApplication(
                    invoice_number=self.invoice.number,
                    kind=kind,
                    amount_minor=amount,
                    reason=closure.reason,
                    idempotency_key=f"{self.invoice.number}:{kind}",
                    actor=closure.actor,
                ),
            )
        self._apply_balance(balance)
        self._record(kind, closure.reason, amount_minor=amount)
        return self.state()

    # ----------------------------------------------------------------- pauses and collectors

    @workflow.update
    async def promise_to_pay(self, promise: PromiseToPay) -> InvoiceState:
        promise = promise.model_copy(
            update={"amount_minor": promise.amount_minor or self.balance_minor}
        )
        self._pause_for(Stage.PAUSED)
        self.promise = promise
        self.paid_since_promise_minor = 0
        end_of_day = datetime.combine(promise.pay_by + timedelta(days=1), datetime.min.time())
        self.paused_until = end_of_day.replace(tzinfo=self.zone) + (
            self.invoice.policy.on_promise_to_pay.grace
        )
        self._record(
            "promise_to_pay",
            f"by {promise.pay_by}" + (f": {promise.note}" if promise.note else ""),
            amount_minor=promise.amount_minor,
        )
        await self._set_status("paused", f"promise to pay by {promise.pay_by}")
        return self.state()

    @promise_to_pay.validator
    def _validate_promise(self, promise: PromiseToPay) -> None:
        self._require_open("record a promise on")
        today = self._now().astimezone(self.zone).date()
        if promise.pay_by < today:
            raise ValueError(f"promise date {promise.pay_by} is in the past (today is {today})")
        if promise.amount_minor is not None and not 0 < promise.amount_minor <= self.balance_minor:
            raise ValueError(
                f"promised amount must be between 1 and the balance {self.balance_minor}, "
                f"got {promise.amount_minor}"
            )

    @workflow.signal
    async def dispute(self, dispute: Dispute) -> None:
        if self._settled():
            return
        self._record("dispute", dispute.reason)
        if self.invoice.policy.on_dispute == "pause":
            self._pause_for(Stage.DISPUTED)
            await self._set_status("disputed", dispute.reason)

    @workflow.signal
    async def resolve(self, resolution: Resolution) -> None:
        """A collector's outcome: resume dunning, or stop it and wait for payment."""
        if self._settled():
            return
        stopped = resolution.action == "stop"
        if workflow.patched(COLLECTOR_OUTCOME_IN_LEDGER):
            # The ledger first: the main loop wakes on the stage change and may send at once,
            # and the sending activity must not find the invoice still disputed.
            await self._reopen(resolution.note)
            await self._ledger(
                "close_collector_tasks",
                CollectorOutcome(
                    invoice_number=self.invoice.number,
                    outcome="stopped" if stopped else "resumed",
                    note=resolution.note,
                    actor=resolution.actor,
                ),
                result_type=int,
            )
            self._end_pause(stopped, resolution)
            return
        self._end_pause(stopped, resolution)
        await self._reopen(resolution.note)

    def _end_pause(self, stopped: bool, resolution: Resolution) -> None:
        self.promise = None
        self.paused_until = None
        self._set_stage(Stage.STOPPED if stopped else Stage.SCHEDULED)
        self._record("dunning_stopped" if stopped else "resumed", resolution.note or "")

    async def _reopen(self, reason: str | None) -> None:
        if self.status in ("disputed", "paused"):
            await self._set_status("open", reason)

    # ----------------------------------------------------------------- queries

    @workflow.query
    def state(self) -> InvoiceState:
        return InvoiceState(
            number=self.invoice.number,
            customer_id=self.invoice.customer_id,
            currency=self.invoice.currency,
            balance_minor=self.balance_minor,
            status=self.status,
            stage=self.stage,
            next_step_at=self.next_step_at,
            paused_until=self.paused_until,
            promise=self.promise,
            policy_name=self.invoice.policy.name,
            policy_version=self.invoice.policy.version,
            days_past_due=days_past_due(self.invoice.due_on, self._now(), self.zone),
            timezone=self.zone.key,
            timeline=list(self.timeline),
        )

    @workflow.query
    def get_timeline(self) -> list[TimelineEntry]:
        return list(self.timeline)

    # ----------------------------------------------------------------- internals

    def _now(self) -> datetime:
        return workflow.now() - self.invoice.clock_offset

    def _money(self, amount_minor: int) -> str:
        return f"{from_minor(amount_minor, self.invoice.currency_exponent)} {self.invoice.currency}"

    def _settled(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def _require_open(self, action: str) -> None:
        if self._settled():
            raise ValueError(f"cannot {action} invoice {self.invoice.number}: it is {self.status}")

    @staticmethod
    def _require_reason(closure: Closure) -> None:
        if not closure.reason.strip():
            raise ValueError("a reason is required")

    def _pause_for(self, stage: Stage) -> None:
        if self.stage in (Stage.SCHEDULED, Stage.ESCALATED, Stage.STOPPED):
            self.stage_after_pause = self.stage
        self._set_stage(stage)

    def _set_stage(self, stage: Stage) -> None:
        self.stage = stage
        self._publish()

    def _apply_balance(self, balance: LedgerBalance) -> None:
        self.balance_minor = balance.balance_minor
        self.status = balance.status
        self._publish()

    async def _set_status(self, status: str, reason: str | None) -> None:
        balance = await self._ledger(
            "set_status",
            StatusChange(invoice_number=self.invoice.number, status=status, reason=reason),
        )
        self.status = balance.status
        self._publish()

    async def _ledger(self, activity: str, request: Any, result_type: type = LedgerBalance) -> Any:
        try:
            return await workflow.execute_activity(
                activity,
                request,
                result_type=result_type,
                start_to_close_timeout=LEDGER_TIMEOUT,
                retry_policy=SERVICE_RETRY,
            )
        except ActivityError as err:
            # Surface the ledger's own message (for example a currency mismatch) to the caller.
            raise ApplicationError(_reason(err), type="LedgerRejected", non_retryable=True) from err

    def _record(
        self,
        event: str,
        detail: str = "",
        *,
        channel: str | None = None,
        template: str | None = None,
        amount_minor: int | None = None,
        at: datetime | None = None,
    ) -> None:
        self.timeline.append(
            TimelineEntry(
                at=at or self._now(),
                event=event,
                detail=detail,
                channel=channel,
                template=template,
                amount_minor=amount_minor,
            )
        )

    def _publish(self) -> None:
        workflow.upsert_search_attributes(
            [
                sa.STATUS.value_set(self.status),
                sa.STAGE.value_set(self.stage.value),
                sa.DAYS_PAST_DUE.value_set(
                    days_past_due(self.invoice.due_on, self._now(), self.zone)
                ),
                sa.CUSTOMER.value_set(self.invoice.customer_id),
                sa.AMOUNT_DUE.value_set(self.balance_minor),
            ]
        )


def _reason(err: ActivityError) -> str:
    """The activity's own message, without Temporal's wrapping."""
    cause = err.cause
    return cause.message if isinstance(cause, ApplicationError) else str(err)
