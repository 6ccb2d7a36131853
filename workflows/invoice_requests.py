"""The invoice workflow's requests about money and promises (payments, adjustments, void,
write-off, promise to pay), and the handling of a request every update shares. Disputes and
collector outcomes are `workflows.invoice_disputes`.

Invariants:
- Every request that changes the ledger holds `ledger_lock` and checks the invoice again under
  it: what its validator saw may have changed while it waited. A refusal goes back to the
  caller and leaves the state as it was; no handler ever fails the workflow.
- A request id (Temporal's update id) is handled once: a repeat returns the state. Recent ids
  are remembered across continue-as-new; the ledger's idempotency keys are built from them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from datetime import datetime, time, timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.ledger import LedgerActivities
    from activities.models import (
        AdjustmentApplication,
        PaymentApplication,
    )
    from vocabulary import COLLECTOR_ADJUSTMENTS, AdjustmentKind, InvoiceStatus, TaskOutcome
    from workflows import keys
    from workflows.models import (
        Adjustment,
        Closure,
        InvoiceState,
        PaymentReceived,
        PromiseToPay,
        Stage,
    )
from workflows.invoice_core import (
    REMEMBERED_REQUESTS,
    Refused,
    caller_request_id,
)
from workflows.invoice_patches import (
    PROMISE_CLOSES_TASK,
    SERIALIZED_LEDGER_WRITES,
    takes_change,
)
from workflows.invoice_tasks import InvoiceTasks


class InvoiceRequests(InvoiceTasks):
    """Updates, validators and signals of InvoiceWorkflow."""

    # ----------------------------------------------------------------- payments and money

    @workflow.update
    async def record_payment(self, payment: PaymentReceived) -> InvoiceState:
        async with self._request("record a payment on") as request_id:
            if request_id is None:
                return self.state()
            balance = await self._ledger(
                LedgerActivities.apply_payment,
                PaymentApplication(
                    invoice_number=self.invoice.number,
                    amount_minor=payment.amount_minor,
                    currency=payment.currency,
                    method=payment.method,
                    reference=payment.reference,
                    reason=payment.reason,
                    received_at=payment.received_at or self._now(),
                    idempotency_key=keys.payment(self.invoice.number, request_id),
                    actor=payment.actor,
                ),
                caller_waits=True,
            )
        before = self.s.balance_minor
        self._apply_balance(balance)
        self._payment_landed_or_failed(payment.reference)
        self.s.paid_since_promise_minor += payment.amount_minor
        if self.s.plan is not None:
            self.s.plan.paid_minor += payment.amount_minor
        self.s.received_minor += payment.amount_minor
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
        if self._repeated_request():
            return
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
        async with self._request("adjust") as request_id:
            if request_id is None:
                return self.state()
            balance = await self._ledger(
                LedgerActivities.apply_adjustment,
                AdjustmentApplication(
                    invoice_number=self.invoice.number,
                    kind=adjustment.kind,
                    amount_minor=adjustment.amount_minor,
                    reason=adjustment.reason,
                    idempotency_key=keys.adjustment(self.invoice.number, request_id),
                    actor=adjustment.actor,
                ),
                caller_waits=True,
            )
        self._apply_balance(balance)
        self._record(adjustment.kind, adjustment.reason, amount_minor=adjustment.amount_minor)
        return self.state()

    @adjust.validator
    def _validate_adjustment(self, adjustment: Adjustment) -> None:
        if self._repeated_request():
            return
        self._require_open("adjust")
        if adjustment.kind not in COLLECTOR_ADJUSTMENTS:
            raise ValueError(
                f"adjustment kind must be credit or adjustment, got '{adjustment.kind}'"
            )
        if adjustment.kind == AdjustmentKind.CREDIT and adjustment.amount_minor >= 0:
            raise ValueError("a credit lowers the balance: its amount must be negative")
        if adjustment.amount_minor == 0:
            raise ValueError("adjustment amount must not be zero")
        if not adjustment.reason.strip():
            raise ValueError("an adjustment needs a reason")

    @workflow.update
    async def void(self, closure: Closure) -> InvoiceState:
        return await self._close_out(AdjustmentKind.VOID, closure)

    @void.validator
    def _validate_void(self, closure: Closure) -> None:
        if self._repeated_request():
            return
        self._require_open("void")
        if self.s.received_minor:
            raise ValueError("invoice has payments; issue a credit instead of voiding")
        self._require_reason(closure)

    @workflow.update
    async def write_off(self, closure: Closure) -> InvoiceState:
        return await self._close_out(AdjustmentKind.WRITE_OFF, closure)

    @write_off.validator
    def _validate_write_off(self, closure: Closure) -> None:
        if self._repeated_request():
            return
        self._require_open("write off")
        if self.s.balance_minor <= 0:
            raise ValueError("nothing to write off: the balance is zero")
        self._require_reason(closure)

    async def _close_out(self, kind: AdjustmentKind, closure: Closure) -> InvoiceState:
        async with self._request(kind.replace("_", " ")) as request_id:
            if request_id is None:
                return self.state()
            amount = -self.s.balance_minor
            balance = await self._ledger(
                LedgerActivities.apply_adjustment,
                AdjustmentApplication(
                    invoice_number=self.invoice.number,
                    kind=kind,
                    amount_minor=amount,
                    reason=closure.reason,
                    idempotency_key=keys.closure(self.invoice.number, kind),
                    actor=closure.actor,
                ),
                caller_waits=True,
            )
        self._apply_balance(balance)
        self._record(kind, closure.reason, amount_minor=amount)
        return self.state()

    # ----------------------------------------------------------------- promises

    @workflow.update
    async def promise_to_pay(self, promise: PromiseToPay) -> InvoiceState:
        async with self._request("record a promise on") as request_id:
            if request_id is None:
                return self.state()
            s = self.s
            promise = promise.model_copy(
                update={"amount_minor": promise.amount_minor or s.balance_minor}
            )
            self._pause_for(Stage.PAUSED)
            s.promise = promise
            s.paid_since_promise_minor = 0
            end_of_day = datetime.combine(promise.pay_by + timedelta(days=1), time(0))
            s.paused_until = end_of_day.replace(tzinfo=self.zone) + (
                self.invoice.policy.on_promise_to_pay.grace
            )
            self._record(
                "promise_to_pay",
                f"by {promise.pay_by}" + (f": {promise.note}" if promise.note else ""),
                amount_minor=promise.amount_minor,
            )
            await self._set_status(
                InvoiceStatus.PAUSED,
                f"promise to pay by {promise.pay_by}",
                True,
                actor=promise.actor,
            )
            if takes_change(PROMISE_CLOSES_TASK):
                # The promise is the collector's outcome; a broken one reopens a task.
                await self._close_tasks(
                    TaskOutcome.PROMISE, promise.note, promise.actor, caller_waits=True
                )
                s.promise_closed_tasks = True
        return self.state()

    @promise_to_pay.validator
    def _validate_promise(self, promise: PromiseToPay) -> None:
        if self._repeated_request():
            return
        self._require_open("record a promise on")
        if self.s.plan is not None:
            raise ValueError(
                f"invoice {self.invoice.number} is on a payment plan: its installments are "
                "the promise"
            )
        today = self._now().astimezone(self.zone).date()
        if promise.pay_by < today:
            raise ValueError(f"promise date {promise.pay_by} is in the past (today is {today})")
        balance = self.s.balance_minor
        if promise.amount_minor is not None and not 0 < promise.amount_minor <= balance:
            raise ValueError(
                f"promised amount must be between 1 and the balance {balance}, "
                f"got {promise.amount_minor}"
            )

    # ----------------------------------------------------------------- requests

    @asynccontextmanager
    async def _request(self, action: str) -> AsyncIterator[str | None]:
        """One caller's request, holding the invoice's ledger lock.

        Yields the request id, or None when that id was handled already (the caller gets the
        state as it is). The invoice is checked again under the lock: what the validator saw
        may have changed while the request waited. A refusal leaves the state as it was.
        """
        request_id = _request_id()
        async with self.ledger_lock:
            before = self.s.model_copy(deep=True)
            try:
                if request_id in self.s.handled_requests:
                    yield None
                    return
                if self._settled():
                    raise Refused(self._closed_message(action))
                yield request_id
                remembered = [*self.s.handled_requests, request_id]
                self.s.handled_requests = remembered[-REMEMBERED_REQUESTS:]
            except BaseException:
                published = (self.s.status, self.s.stage, self.s.balance_minor)
                self.s = before
                if published != (before.status, before.stage, before.balance_minor):
                    self._publish()
                raise

    def _ledger_turn(self) -> AbstractAsyncContextManager[Any]:
        """The ledger lock, for writes that histories recorded before it made without it."""
        if takes_change(SERIALIZED_LEDGER_WRITES):
            return self.ledger_lock
        return nullcontext()

    def _repeated_request(self) -> bool:
        return _request_id() in self.s.handled_requests


def _request_id() -> str:
    """The caller's request id: the id of the update being handled."""
    request_id = caller_request_id()
    assert request_id is not None, "only update handlers and validators have a request id"
    return request_id
