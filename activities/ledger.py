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
    CollectorOutcome,
    CollectorTaskRequest,
    LedgerBalance,
    PaymentApplication,
    StatusChange,
    TimelineBatch,
)
from ledger import lifecycle, operations, timeline
from ledger.db import session_scope
from ledger.models import Invoice

T = TypeVar("T")


def invoice_in_ledger(session: Session, number: str) -> Invoice:
    """The invoice by its number; a non-retryable InvoiceNotFound when the ledger has none."""
    invoice = session.exec(select(Invoice).where(Invoice.number == number)).first()
    if invoice is None:
        raise ApplicationError(
            f"invoice {number} is not in the ledger", type="InvoiceNotFound", non_retryable=True
        )
    return invoice


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
        return self._run(lambda session: operations.apply_adjustment(session, request))

    @activity.defn
    def set_status(self, request: StatusChange) -> LedgerBalance:
        return self._run(lambda session: lifecycle.set_status(session, request))

    @activity.defn
    def open_collector_task(self, request: CollectorTaskRequest) -> int:
        return self._run(lambda session: lifecycle.open_collector_task(session, request))

    @activity.defn
    def close_collector_tasks(self, request: CollectorOutcome) -> int:
        return self._run(lambda session: lifecycle.close_collector_tasks(session, request))

    @activity.defn
    def record_timeline(self, batch: TimelineBatch) -> int:
        return self._run(lambda session: timeline.record_timeline(session, batch))
