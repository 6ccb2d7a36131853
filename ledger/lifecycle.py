"""An invoice's lifecycle apart from money: status changes and collector tasks, each audited.

Temporal activities call these with a session whose transaction the caller commits
(`ledger.db.session_scope`).

Invariants:

- Paid, void and written off come from money changes (`ledger.operations`,
  `ledger.adjustments`); `set_status` only marks paid an invoice awaiting payment whose
  balance is already zero. Closed is final.
- Setting the current status, or closing tasks that are already closed, changes nothing, so a
  retried request is harmless; a collector task opens once per idempotency key.
- An invoice has at most one open collector task: a new one supersedes the others and gets
  its assignee by the rule of `ledger.assignment`, once, when it is written.
- Nothing is left to collect on a paid, void or written-off invoice: its open tasks are closed.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from ledger.assignment import assign_new_task
from ledger.books import (
    AWAITING_PAYMENT,
    IdempotencyConflict,
    InvalidStatusChange,
    LedgerError,
    balance_of,
    load_invoice,
    money_text,
    record_audit,
    write_once,
)
from ledger.models import CollectorTask, Invoice, InvoiceStatus, utcnow
from ledger.requests import (
    Closing,
    CollectorOutcome,
    CollectorTaskRequest,
    InvoiceClosed,
    LedgerBalance,
    StatusChange,
)
from ledger.timeline import TimelineConflict, record_timeline
from policies.priorities import PRIORITY_RANK
from vocabulary import TERMINAL_STATUSES, AdjustmentKind, TaskOutcome, TaskStatus

# Status changes that move no money. Paid, void and written off come from money operations.
_TRANSITIONS: dict[InvoiceStatus, frozenset[InvoiceStatus]] = {
    InvoiceStatus.OPEN: frozenset({InvoiceStatus.DISPUTED, InvoiceStatus.PAUSED}),
    InvoiceStatus.DISPUTED: frozenset({InvoiceStatus.OPEN, InvoiceStatus.PAUSED}),
    InvoiceStatus.PAUSED: frozenset({InvoiceStatus.OPEN, InvoiceStatus.DISPUTED}),
    InvoiceStatus.PAID: frozenset({InvoiceStatus.CLOSED}),
    InvoiceStatus.VOID: frozenset({InvoiceStatus.CLOSED}),
    InvoiceStatus.WRITTEN_OFF: frozenset({InvoiceStatus.CLOSED}),
    InvoiceStatus.CLOSED: frozenset(),
}


def close_invoice(session: Session, closing: Closing) -> InvoiceClosed:
    """Close the invoice and store its timeline together. A timeline the ledger refuses (it
    holds another workflow's story for the invoice) does not keep the invoice open."""
    if closing.timeline.invoice_number != closing.status.invoice_number:
        raise LedgerError(
            f"closing invoice {closing.status.invoice_number}: the timeline given is of invoice "
            f"{closing.timeline.invoice_number}"
        )
    invoice = _change_status(session, closing.status)
    balance = balance_of(session, invoice)
    try:
        # The invoice is locked and its id known: the timeline need not look it up again.
        record_timeline(session, closing.timeline, invoice_id=invoice.id)
    except TimelineConflict as conflict:  # refused before anything was written
        return InvoiceClosed(balance=balance, timeline_refused=str(conflict))
    return InvoiceClosed(balance=balance)


def set_status(session: Session, req: StatusChange) -> LedgerBalance:
    """Dispute, pause, resume or close an invoice; setting the current status changes nothing."""
    return balance_of(session, _change_status(session, req))


def _change_status(session: Session, req: StatusChange) -> Invoice:
    """The invoice, locked, in the status `req` asks for (`set_status`)."""
    number = req.invoice_number
    try:
        target = InvoiceStatus(req.status)
    except ValueError:
        raise InvalidStatusChange(
            f"invoice {number}: unknown status {req.status!r}; "
            f"use one of {', '.join(s.value for s in InvoiceStatus)}"
        ) from None
    invoice = load_invoice(session, number, for_update=True)
    current = InvoiceStatus(invoice.status)
    if target == current:
        return invoice
    if target in (InvoiceStatus.VOID, InvoiceStatus.WRITTEN_OFF):
        kind = AdjustmentKind.VOID if target == InvoiceStatus.VOID else AdjustmentKind.WRITE_OFF
        raise InvalidStatusChange(
            f"invoice {number}: {target} changes money; apply an adjustment of kind '{kind}'"
        )
    if target == InvoiceStatus.PAID:
        allowed = current in AWAITING_PAYMENT and invoice.balance_minor == 0
        if not allowed:
            raise InvalidStatusChange(
                f"invoice {number} cannot be marked paid: it is {current} with "
                f"{money_text(invoice.balance_minor, invoice.currency)} outstanding"
            )
    elif target not in _TRANSITIONS[current]:
        raise InvalidStatusChange(f"invoice {number} is {current}: it cannot become {target}")
    invoice.status = target
    invoice.updated_at = utcnow()
    record_audit(
        session,
        req.actor,
        "status_changed",
        invoice.id,
        _with_request_id(
            {"from": str(current), "to": str(target), "reason": req.reason}, req.request_id
        ),
    )
    session.flush()
    return invoice


def open_collector_task(session: Session, req: CollectorTaskRequest) -> int:
    """Open a task for a collector on the invoice; the task id, the same for a repeated key."""
    number = req.invoice_number
    if req.due_at.tzinfo is None:
        raise LedgerError(f"collector task for invoice {number}: due_at must be timezone-aware")

    def write() -> int:
        # Locked, so two tasks opening on one invoice at once queue up: one supersedes the other.
        invoice = load_invoice(session, number, for_update=True)
        task = CollectorTask(
            invoice_id=invoice.id,
            queue=req.queue,
            priority=req.priority,
            due_at=req.due_at,
            idempotency_key=req.idempotency_key,
        )
        session.add(task)
        session.flush()
        record_audit(
            session,
            "system",
            "collector_task_opened",
            invoice.id,
            {
                "idempotency_key": req.idempotency_key,
                "task_id": task.id,
                "queue": req.queue,
                "priority": req.priority,
                "due_at": req.due_at.isoformat(),
            },
        )
        # One open task per invoice: the others give way to this one, the most recent first.
        superseded = close_open_tasks(
            session,
            invoice,
            TaskOutcome.SUPERSEDED.value,
            "system",
            sparing=task,
            detail={"superseded_by": task.id},
        )
        session.flush()  # round robin counts the open tasks
        assign_new_task(session, task, invoice, superseded[0] if superseded else None)
        return int(task.id)

    def repeat(task: CollectorTask) -> int:
        invoice = load_invoice(session, number)
        if task.invoice_id != invoice.id:
            raise IdempotencyConflict(
                f"collector task key {req.idempotency_key!r} was already used for another "
                f"invoice, not {number}"
            )
        return int(task.id)

    return write_once(session, CollectorTask, req.idempotency_key, write, repeat)


def raise_task_priority(session: Session, req: CollectorTaskRequest) -> int:
    """Make the invoice's open collector task at least `req.priority` urgent, or open one with
    it when none is open; the task's id. A task already as urgent is left as it is."""
    invoice = load_invoice(session, req.invoice_number, for_update=True)
    task = session.exec(
        select(CollectorTask)
        .where(CollectorTask.invoice_id == invoice.id, CollectorTask.status == TaskStatus.OPEN)
        .order_by(CollectorTask.created_at.desc(), CollectorTask.id.desc())
    ).first()
    if task is None:
        return open_collector_task(session, req)
    if PRIORITY_RANK.get(task.priority, -1) < PRIORITY_RANK[req.priority]:
        detail = {"task_id": task.id, "from": task.priority, "to": req.priority}
        task.priority = req.priority
        session.add(task)
        record_audit(session, "system", "collector_task_priority_raised", invoice.id, detail)
        session.flush()
    return int(task.id)


def close_collector_tasks(session: Session, req: CollectorOutcome) -> int:
    """Close the invoice's open collector tasks with the collector's outcome; how many.

    Closing tasks that are already closed changes nothing, so a retried request is harmless.
    """
    if not req.outcome.strip():
        raise LedgerError(f"invoice {req.invoice_number}: a collector outcome must be named")
    invoice = load_invoice(session, req.invoice_number, for_update=True)
    closed = close_open_tasks(
        session,
        invoice,
        req.outcome,
        req.actor,
        note=req.note,
        detail=_with_request_id({}, req.request_id),
    )
    return len(closed)


def close_tasks_if_settled(session: Session, invoice: Invoice, actor: str) -> None:
    # Nothing is left to collect on a paid, void or written-off invoice.
    if invoice.status in TERMINAL_STATUSES:
        close_open_tasks(session, invoice, TaskOutcome(invoice.status), actor)


# An invoice's open tasks, all but the one spared (if any), the most recent first. Built once:
# every escalation runs it.
_OPEN_TASKS = (
    select(CollectorTask)
    .where(
        CollectorTask.invoice_id == sa.bindparam("invoice_id"),
        CollectorTask.status == TaskStatus.OPEN,
        sa.or_(
            sa.bindparam("sparing", type_=sa.Integer).is_(None),
            CollectorTask.id != sa.bindparam("sparing", type_=sa.Integer),
        ),
    )
    .order_by(CollectorTask.created_at.desc(), CollectorTask.id.desc())
)


def close_open_tasks(
    session: Session,
    invoice: Invoice,
    outcome: str,
    actor: str,
    *,
    note: str | None = None,
    sparing: CollectorTask | None = None,
    detail: dict[str, Any] | None = None,
) -> list[CollectorTask]:
    """Close the invoice's open collector tasks, all but `sparing`, with the outcome; each gets
    its `collector_task_closed` audit event, with `detail` added. The tasks closed, the most
    recent first."""
    tasks = session.exec(
        _OPEN_TASKS, params={"invoice_id": invoice.id, "sparing": sparing.id if sparing else None}
    ).all()
    now = utcnow()
    for task in tasks:
        task.status, task.outcome, task.closed_at = TaskStatus.CLOSED.value, outcome[:32], now
        if note:
            task.note = note[:2000]
        session.add(task)
        record_audit(
            session,
            actor,
            "collector_task_closed",
            invoice.id,
            {"task_id": task.id, "outcome": outcome, "note": note, **(detail or {})},
        )
    return list(tasks)


def _with_request_id(detail: dict[str, Any], request_id: str | None) -> dict[str, Any]:
    return detail if request_id is None else {**detail, "request_id": request_id}
