"""Payment plans: installments by date that add up to the balance, offered by a collector.

Invariants:
- While a plan runs the invoice is paused (ledger status `paused`, stage `on_plan`): no
  reminder goes out. Each installment is checked at the end of its due day plus the policy's
  promise grace: everything due by then must have been paid since the plan began.
- A missed installment breaks the plan: dunning resumes at once and a collector task opens by
  itself. A plan paid in full settles the invoice like any payment.
- The ledger keeps the plan, for the payer's portal, from its offer until it ends, however
  it ends (kept, broken, or cancelled when the invoice leaves the plan otherwise).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.ledger import LedgerActivities
    from activities.models import PaymentPlanEnd, PaymentPlanRecord, PlanOutcome
    from vocabulary import InvoiceStatus, TaskOutcome
    from workflows import keys
    from workflows.models import InvoiceState, PaymentPlan, PaymentPlanOffer, Stage
from workflows.invoice_collector import InvoiceCollectorRequests
from workflows.invoice_patches import PLAN_IN_LEDGER, takes_change

# A plan can be offered while the invoice is dunned, with a collector, stopped, or waiting on a
# promise to pay (which the plan replaces).
PLANNABLE_STAGES = frozenset({Stage.SCHEDULED, Stage.ESCALATED, Stage.STOPPED, Stage.PAUSED})


class InvoicePlans(InvoiceCollectorRequests):
    @workflow.update
    async def offer_plan(self, offer: PaymentPlanOffer) -> InvoiceState:
        async with self._request("offer a payment plan on") as request_id:
            if request_id is None:
                return self.state()
            installments = offer.installments
            # A plan takes the place of a promise to pay.
            self.s.promise = None
            self.s.paused_until = None
            self.s.plan = PaymentPlan(installments=installments)
            self._pause_for(Stage.ON_PLAN)
            detail = (
                f"{len(installments)} installments from {installments[0].due_on} "
                f"to {installments[-1].due_on}" + (f": {offer.note}" if offer.note else "")
            )
            self._record("payment_plan", detail, amount_minor=self.s.balance_minor)
            await self._set_status(
                InvoiceStatus.PAUSED,
                f"payment plan of {len(installments)}",
                True,
                actor=offer.actor,
            )
            if takes_change(PLAN_IN_LEDGER):
                self.s.plan.ledger_key = keys.payment_plan(self.invoice.number, request_id)
                await self._ledger(
                    LedgerActivities.record_payment_plan,
                    PaymentPlanRecord(
                        invoice_number=self.invoice.number,
                        installments=installments,
                        note=offer.note,
                        actor=offer.actor,
                        idempotency_key=self.s.plan.ledger_key,
                    ),
                    caller_waits=True,
                )
            # The plan is the collector's outcome: the invoice's open tasks close with it.
            await self._close_tasks(TaskOutcome.PLAN, offer.note, offer.actor, caller_waits=True)
        return self.state()

    @offer_plan.validator
    def _validate_plan(self, offer: PaymentPlanOffer) -> None:
        if self._repeated_request():
            return
        self._require_open("offer a payment plan on")
        if self.s.stage not in PLANNABLE_STAGES:
            raise ValueError(
                f"invoice {self.invoice.number} is {self.s.stage.value.replace('_', ' ')}: "
                "settle that first"
            )
        today = self._now().astimezone(self.zone).date()
        dates = [installment.due_on for installment in offer.installments]
        if dates[0] < today:
            raise ValueError(f"installments[0].due_on {dates[0]} is in the past (today is {today})")
        for index, (before, after) in enumerate(zip(dates, dates[1:], strict=False), start=1):
            if after <= before:
                raise ValueError(f"installments[{index}].due_on {after} is not after {before}")
        total = sum(installment.amount_minor for installment in offer.installments)
        if total != self.s.balance_minor:
            raise ValueError(
                f"the installments add up to {self._money(total)}; the balance is "
                f"{self._money(self.s.balance_minor)}"
            )

    async def _follow_plan(self) -> None:
        """Check each installment when it falls due; return when the plan ends either way."""
        s = self.s
        while s.plan is not None and s.stage == Stage.ON_PLAN and not self._settled():
            plan = s.plan
            installment = plan.installments[plan.kept]
            try:
                await workflow.wait_condition(
                    lambda: s.stage != Stage.ON_PLAN or self._settled(),
                    timeout=max(self._checked_at(installment.due_on) - self._now(), timedelta(0)),
                )
                # Paid off early, or taken elsewhere by a collector (who may have ended s.plan).
                paid = self._settled() and s.status == InvoiceStatus.PAID
                outcome = PlanOutcome.KEPT if paid else PlanOutcome.CANCELLED
                await self._end_plan_in_ledger(plan, outcome)
                return
            except TimeoutError:
                pass
            due = sum(i.amount_minor for i in plan.installments[: plan.kept + 1])
            if plan.paid_minor >= due:
                plan.kept += 1
                self._record(
                    "installment_kept",
                    f"{plan.kept} of {len(plan.installments)}, due {installment.due_on}",
                    amount_minor=installment.amount_minor,
                )
                if plan.kept == len(plan.installments):
                    await self._end_plan(broken_on=None)
                continue
            self._record(
                "plan_broken",
                f"paid {self._money(plan.paid_minor)} of {self._money(due)} "
                f"due by {installment.due_on}",
            )
            await self._end_plan(broken_on=installment.due_on)

    def _checked_at(self, due_on: date) -> datetime:
        end_of_day = datetime.combine(due_on + timedelta(days=1), time(0)).replace(tzinfo=self.zone)
        return end_of_day + self.invoice.policy.on_promise_to_pay.grace

    async def _end_plan(self, broken_on: date | None) -> None:
        """Back to dunning; a missed installment puts the invoice on a worklist again."""
        if self.s.plan is not None:
            outcome = PlanOutcome.KEPT if broken_on is None else PlanOutcome.BROKEN
            await self._end_plan_in_ledger(self.s.plan, outcome)
        self.s.plan = None
        async with self._ledger_turn():
            await self._set_status(InvoiceStatus.OPEN, "payment plan ended")
            if broken_on is not None:
                await self._reopen_task(
                    keys.broken_plan(self.invoice.number, broken_on.isoformat()),
                    f"installment of {broken_on} missed",
                )
        self._set_stage(Stage.SCHEDULED)

    async def _end_plan_in_ledger(self, plan: PaymentPlan, outcome: PlanOutcome) -> None:
        if plan.ledger_key is None:
            return  # offered before plans were kept in the ledger, or ended there already
        key, plan.ledger_key = plan.ledger_key, None
        async with self._ledger_turn():
            await self._ledger(
                LedgerActivities.end_payment_plan,
                PaymentPlanEnd(invoice_number=self.invoice.number, plan_key=key, outcome=outcome),
            )
