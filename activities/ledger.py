"""Ledger activities: the workflow's only way to change money or status in the database."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
from sqlmodel import Session, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.models import (
    AdjustmentApplication,
    Closing,
    CollectorOutcome,
    CollectorTaskRequest,
    InvoiceClosed,
    LedgerBalance,
    NoteRequest,
    PaymentApplication,
    PaymentPlanEnd,
    PaymentPlanRecord,
    StatusChange,
    TaskBreach,
    TimelineBatch,
)
from ledger import adjustments, lifecycle, notes, operations, plans, tasks, timeline
from ledger.books import INVOICE_BY_NUMBER
from ledger.db import session_scope
from ledger.models import CollectorTask, Customer, Invoice

T = TypeVar("T")


def invoice_in_ledger(session: Session, number: str) -> Invoice:
    """The invoice by its number; a non-retryable InvoiceNotFound when the ledger has none."""
    invoice = session.exec(INVOICE_BY_NUMBER, params={"number": number}).first()
    if invoice is None:
        raise _not_in_ledger(number)
    return invoice


def _not_in_ledger(number: str) -> ApplicationError:
    return ApplicationError(
        f"invoice {number} is not in the ledger", type="InvoiceNotFound", non_retryable=True
    )


_INVOICE_AND_CUSTOMER = (
    select(Invoice, Customer)
    .outerjoin(Customer, Customer.id == Invoice.customer_id)  # type: ignore[arg-type]
    .where(Invoice.number == sa.bindparam("number"))
)


def invoice_and_customer(session: Session, number: str) -> tuple[Invoice, Customer]:
    """The invoice by its number and its customer, read together; a non-retryable
    InvoiceNotFound or CustomerNotFound when the ledger lacks either."""
    found = session.exec(_INVOICE_AND_CUSTOMER, params={"number": number}).first()
    if found is None:
        raise _not_in_ledger(number)
    invoice, customer = found
    if customer is None:
        raise ApplicationError(
            f"customer {invoice.customer_id} of invoice {invoice.number} is not in the ledger",
            type="CustomerNotFound",
            non_retryable=True,
        )
    return invoice, customer


_TASK_BY_KEY = select(CollectorTask).where(CollectorTask.idempotency_key == sa.bindparam("key"))


class LedgerActivities:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def _run(self, operation: Callable[[Session], T]) -> T:
        try:
            with session_scope(self.engine) as session:
                return operation(session)
        except ValueError as err:
            # A business rule said no: retrying cannot help, so say why and stop.
            raise ApplicationError(str(err), type="LedgerRejected", non_retryable=True) from err

    @activity.defn
    def apply_payment(self, request: PaymentApplication) -> LedgerBalance:
        return self._run(lambda session: operations.apply_payment(session, request))

    @activity.defn
    def apply_adjustment(self, request: AdjustmentApplication) -> LedgerBalance:
        return self._run(lambda session: adjustments.apply_adjustment(session, request))

    @activity.defn
    def set_status(self, request: StatusChange) -> LedgerBalance:
        return self._run(lambda session: lifecycle.set_status(session, request))

    @activity.defn
    def close_invoice(self, closing: Closing) -> InvoiceClosed:
        return self._run(lambda session: lifecycle.close_invoice(session, closing))

    @activity.defn
    def open_collector_task(self, request: CollectorTaskRequest) -> int:
        return self._run(lambda session: lifecycle.open_collector_task(session, request))

    @activity.defn
    def raise_task_priority(self, request: CollectorTaskRequest) -> int:
        """Make the invoice's open task at least this urgent, or open one."""
        return self._run(lambda session: lifecycle.raise_task_priority(session, request))

    @activity.defn
    def close_collector_tasks(self, request: CollectorOutcome) -> int:
        return self._run(lambda session: lifecycle.close_collector_tasks(session, request))

    @activity.defn
    def breach_collector_task(self, request: TaskBreach) -> bool:
        """Move a task past its SLA to the supervisor queue; False if it is closed already."""

        def breach(session: Session) -> bool:
            task = session.exec(_TASK_BY_KEY, params={"key": request.task_key}).first()
            if task is None:
                return False
            return tasks.move_breached(session, task.id, request.supervisor_queue, request.at)

        return self._run(breach)

    @activity.defn
    def record_note(self, request: NoteRequest) -> int:
        return self._run(lambda session: notes.record_note(session, request))

    @activity.defn
    def record_payment_plan(self, request: PaymentPlanRecord) -> int:
        """Keep the plan the payer's portal shows; the plan's id, the same for a repeated key."""
        return self._run(lambda session: plans.record_plan(session, request))

    @activity.defn
    def end_payment_plan(self, request: PaymentPlanEnd) -> bool:
        """End the plan with its outcome; False if it had ended already."""
        return self._run(lambda session: plans.end_plan(session, request))

    @activity.defn
    def record_timeline(self, batch: TimelineBatch) -> int:
        return self._run(lambda session: timeline.record_timeline(session, batch))
