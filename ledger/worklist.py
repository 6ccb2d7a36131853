"""The worklist: collector tasks as a collector sees them, most pressing first, read-only.

Callers pass a session; nothing here writes. `ledger.tasks` changes tasks and answers with
the same `TaskView`.

Invariants:

- A task shows as closed when its stored status is closed, else claimed when it has an
  assignee, else open.
- The worklist is one query however long it is: urgent before high before normal before low,
  then the soonest SLA, then the largest balance, then the oldest task.
- A stored priority the policy language does not know is reported as an error, never shown.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session

from ledger.books import LedgerError
from ledger.models import AppUser, CollectorTask, Customer, Invoice, utcnow
from policies.priorities import PRIORITIES, PRIORITY_RANK
from policies.schema import Priority
from vocabulary import TaskStatus

# How urgent a task is, in the policy language's own words (an escalation step's priority).
TaskPriority = Priority

# A days-past-due filter beyond a century is a typo, and would overflow date arithmetic.
DAYS_PAST_DUE_BOUND = 36_500


class UnknownTask(LedgerError):
    pass


class TaskView(BaseModel):
    """One row of a worklist: the task with its invoice, customer and assignee."""

    id: int
    invoice: str
    customer_id: str
    customer_name: str
    segment: str | None
    currency: str
    balance_minor: int
    days_past_due: int  # negative while the invoice is not yet due
    queue: str
    priority: TaskPriority
    due_at: datetime  # the SLA: when the task should be worked by
    status: TaskStatus
    assignee: str | None  # the assignee's email
    breached: bool
    created_at: datetime


def _listing() -> sa.Select:
    return (
        sa.select(
            CollectorTask,
            Invoice.number,
            Invoice.customer_id,
            Customer.name,
            Customer.segment,
            Invoice.currency,
            Invoice.balance_minor,
            Invoice.due_on,
            AppUser.email,
        )
        .join(Invoice, Invoice.id == CollectorTask.invoice_id)
        .join(Customer, Customer.id == Invoice.customer_id)
        .outerjoin(AppUser, AppUser.id == CollectorTask.assignee_id)
    )


def _view(row: sa.Row, today: date) -> TaskView:
    task, number, customer_id, name, segment, currency, balance, due_on, email = row
    if task.priority not in PRIORITY_RANK:
        raise LedgerError(
            f"collector task {task.id} on invoice {number} has priority {task.priority!r}, "
            f"not one of {', '.join(PRIORITIES)}"
        )
    if task.status == TaskStatus.CLOSED:
        status = TaskStatus.CLOSED
    else:
        status = TaskStatus.OPEN if task.assignee_id is None else TaskStatus.CLAIMED
    return TaskView(
        id=task.id,
        invoice=number,
        customer_id=customer_id,
        customer_name=name,
        segment=segment,
        currency=currency,
        balance_minor=balance,
        days_past_due=(today - due_on).days,
        queue=task.queue,
        priority=task.priority,
        due_at=task.due_at,
        status=status,
        assignee=email,
        breached=task.breached_at is not None,
        created_at=task.created_at,
    )


def worklist(
    session: Session,
    *,
    today: date,
    queue: str | None = None,
    segment: str | None = None,
    currency: str | None = None,
    min_days_past_due: int | None = None,
    max_days_past_due: int | None = None,
    assignee_id: int | None = None,
    include_closed: bool = False,
    limit: int = 500,
) -> list[TaskView]:
    """Tasks to work, most pressing first; each filter given narrows the list."""
    if limit < 1:
        raise LedgerError(f"worklist: limit must be at least 1, got {limit}")
    for name, days in (("min", min_days_past_due), ("max", max_days_past_due)):
        if days is not None and abs(days) > DAYS_PAST_DUE_BOUND:
            raise LedgerError(
                f"worklist: {name}_days_past_due {days} is beyond "
                f"{DAYS_PAST_DUE_BOUND} days either way"
            )
    if (
        min_days_past_due is not None
        and max_days_past_due is not None
        and min_days_past_due > max_days_past_due
    ):
        raise LedgerError(
            f"worklist: min_days_past_due {min_days_past_due} is more than "
            f"max_days_past_due {max_days_past_due}"
        )
    statement = _listing()
    if not include_closed:
        statement = statement.where(CollectorTask.status != TaskStatus.CLOSED)
    if queue is not None:
        statement = statement.where(CollectorTask.queue == queue)
    if segment is not None:
        statement = statement.where(Customer.segment == segment)
    if currency is not None:
        statement = statement.where(Invoice.currency == currency)
    # Days past due at least n: due on or before today - n; at most n: due on or after it.
    if min_days_past_due is not None:
        statement = statement.where(Invoice.due_on <= today - timedelta(days=min_days_past_due))
    if max_days_past_due is not None:
        statement = statement.where(Invoice.due_on >= today - timedelta(days=max_days_past_due))
    if assignee_id is not None:
        statement = statement.where(CollectorTask.assignee_id == assignee_id)
    rank = sa.case(PRIORITY_RANK, value=CollectorTask.priority, else_=-1)
    statement = statement.order_by(
        rank.desc(),
        CollectorTask.due_at,
        Invoice.balance_minor.desc(),
        CollectorTask.id,
    ).limit(limit)
    return [_view(row, today) for row in session.exec(statement)]


def get_task(session: Session, task_id: int, *, today: date | None = None) -> TaskView:
    """One task as the worklist shows it (days past due counted to `today`, UTC by default)."""
    row = session.exec(_listing().where(CollectorTask.id == task_id)).first()
    if row is None:
        raise UnknownTask(f"collector task {task_id} does not exist")
    return _view(row, today or utcnow().date())
