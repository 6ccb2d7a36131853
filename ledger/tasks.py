"""Collector tasks at work: claiming, releasing and reassigning, assignment by rule, and the
move of a task past its SLA to a supervisor queue. The worklist, the read side, is
`ledger.worklist`; its names are importable from here too.

Callers pass a session whose transaction they commit (`ledger.db.session_scope`).

Invariants:

- A task's stored status is open or closed (`ledger.lifecycle` opens and closes tasks); an
  open task with an assignee is claimed. The claim lives in `assignee_id` alone, so whatever
  closes an invoice's open tasks closes claimed ones too, and a closed task keeps the name of
  who worked it.
- A task has at most one assignee, who is a console user allowed to work tasks (a collector
  or an admin, not disabled). Only an open task is claimed, released, reassigned or assigned;
  a task claimed by one user is refused to another until it is released or reassigned.
- Every change of assignee or queue writes its audit event in the same savepoint, with the
  assignee (or queue) before and after and the caller's request id when one is given. Asking
  for what already is (claiming one's own task, releasing an unclaimed one, reassigning to the
  assignee, assigning an assigned task, a second breach move) changes and writes nothing.
- A breached task is moved once: it keeps the queue it came from, loses its assignee, goes
  round robin to the supervisor queue's members (not back to whoever had it) or stays
  unassigned, and is never moved again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from ledger.books import LedgerError, record_audit
from ledger.models import AppUser, CollectorTask, Invoice, utcnow
from ledger.routing import WORKING_ROLES, working_members

# The read side; the console's callers reach it through this module.
from ledger.worklist import TaskView as TaskView
from ledger.worklist import UnknownTask as UnknownTask
from ledger.worklist import get_task as get_task
from ledger.worklist import worklist as worklist

# Declared in `vocabulary`; callers of the worklist import it here.
from vocabulary import TaskStatus as TaskStatus

QUEUE_MAX_LENGTH = 64
REQUEST_ID_MAX_LENGTH = 100


class TaskRefused(LedgerError):
    """The task cannot be changed that way: closed, claimed by someone else, or the like."""


def claim(
    session: Session, task_id: int, user_id: int, actor: str, *, request_id: str | None = None
) -> TaskView:
    """Take an open task to work; claiming one's own task again changes nothing."""
    _check_request_id(request_id)
    task = _load(session, task_id)
    _check_open(session, task, "claimed")
    user = _worker(session, user_id, f"collector task {task_id}")
    if task.assignee_id == user.id:
        return get_task(session, task_id)
    if task.assignee_id is not None:
        raise TaskRefused(
            f"{_named(session, task)} is already claimed by {_email(session, task.assignee_id)}: "
            "they or an admin must release it first, or an admin reassign it"
        )
    set_assignee(session, task, user, actor, "collector_task_claimed", request_id)
    return get_task(session, task_id)


def release(
    session: Session,
    task_id: int,
    user_id: int,
    actor: str,
    *,
    admin: bool = False,
    request_id: str | None = None,
) -> TaskView:
    """Give a claimed task back to its queue: its assignee may, or an admin."""
    _check_request_id(request_id)
    task = _load(session, task_id)
    _check_open(session, task, "released")
    if task.assignee_id is None:
        return get_task(session, task_id)
    if task.assignee_id != user_id and not admin:
        raise TaskRefused(
            f"{_named(session, task)} is claimed by {_email(session, task.assignee_id)}: "
            "only they or an admin may release it"
        )
    set_assignee(session, task, None, actor, "collector_task_released", request_id)
    return get_task(session, task_id)


def reassign(
    session: Session, task_id: int, to_user_id: int, actor: str, *, request_id: str | None = None
) -> TaskView:
    """Give an open task to another user, claimed or not; to its assignee changes nothing."""
    _check_request_id(request_id)
    task = _load(session, task_id)
    _check_open(session, task, "reassigned")
    user = _worker(session, to_user_id, f"collector task {task_id}")
    if task.assignee_id != user.id:
        set_assignee(session, task, user, actor, "collector_task_reassigned", request_id)
    return get_task(session, task_id)


def assign_round_robin(
    session: Session, task_id: int, queue_members: list[int], *, actor: str = "system"
) -> int:
    """Give an unassigned task to the queue member with the fewest open tasks claimed in its
    queue (ties: the lowest user id); the assignee's id. An assigned task keeps its assignee."""
    task = _load(session, task_id)
    _check_open(session, task, "assigned")
    if task.assignee_id is not None:
        return task.assignee_id
    members = sorted(set(queue_members))
    if not members:
        raise TaskRefused(f"{_named(session, task)}: queue {task.queue!r} has no members")
    users = {user.id: user for user in session.exec(select(AppUser).where(AppUser.id.in_(members)))}
    for member in members:
        _check_worker(users.get(member), member, f"queue {task.queue!r}")
    load = dict(
        session.exec(
            sa.select(CollectorTask.assignee_id, sa.func.count())
            .where(
                CollectorTask.queue == task.queue,
                CollectorTask.status != TaskStatus.CLOSED,
                CollectorTask.assignee_id.in_(members),
            )
            .group_by(CollectorTask.assignee_id)
        ).all()
    )
    chosen = min(members, key=lambda member: (load.get(member, 0), member))
    set_assignee(session, task, users[chosen], actor, "collector_task_assigned", rule="round_robin")
    return chosen


def move_breached(
    session: Session, task_id: int, supervisor_queue: str, now: datetime, *, actor: str = "system"
) -> bool:
    """Mark an open task past its SLA breached and move it to the supervisor queue, round robin
    to that queue's members who can work tasks (never back to whoever had it), else
    unassigned; whether it moved. A task already breached or closed is left as it is."""
    if now.tzinfo is None:
        raise LedgerError(f"collector task {task_id}: the breach time must be timezone-aware")
    if not supervisor_queue.strip() or len(supervisor_queue) > QUEUE_MAX_LENGTH:
        raise TaskRefused(
            f"collector task {task_id}: the supervisor queue must be 1 to "
            f"{QUEUE_MAX_LENGTH} characters, got {supervisor_queue!r}"
        )
    task = _load(session, task_id)
    if task.breached_at is not None or task.status == TaskStatus.CLOSED:
        return False
    if now < task.due_at:
        raise TaskRefused(
            f"{_named(session, task)} is due by {task.due_at.isoformat()}: at "
            f"{now.isoformat()} it has not passed its SLA"
        )
    let_breach = task.assignee_id
    before = _email(session, let_breach) if let_breach is not None else None
    with session.begin_nested():
        task.escalated_from_queue, task.queue = task.queue, supervisor_queue
        task.breached_at, task.assignee_id, task.claimed_at = now, None, None
        session.add(task)
        record_audit(
            session,
            actor,
            "collector_task_breached",
            task.invoice_id,
            {
                "task_id": task.id,
                "before": task.escalated_from_queue,
                "after": supervisor_queue,
                "assignee_before": before,
                "due_at": task.due_at.isoformat(),
                "breached_at": now.isoformat(),
            },
        )
        session.flush()
    members = [user for user in working_members(session, supervisor_queue) if user != let_breach]
    if members:
        assign_round_robin(session, task.id, members, actor=actor)
    return True


# --- helpers -------------------------------------------------------------------------------


_TASK_FOR_UPDATE = (
    select(CollectorTask)
    .where(CollectorTask.id == sa.bindparam("task_id"))
    .with_for_update()
    .execution_options(populate_existing=True)
)


def _load(session: Session, task_id: int) -> CollectorTask:
    # Row lock on PostgreSQL so two claims of one task queue up; SQLite serializes writers.
    task = session.exec(_TASK_FOR_UPDATE, params={"task_id": task_id}).first()
    if task is None:
        raise UnknownTask(f"collector task {task_id} does not exist")
    return task


def _named(session: Session, task: CollectorTask) -> str:
    invoice = session.get(Invoice, task.invoice_id)
    return f"collector task {task.id} on invoice {invoice.number if invoice else '?'}"


def _email(session: Session, user_id: int) -> str:
    user = session.get(AppUser, user_id)
    return user.email if user is not None else f"user {user_id}"


def _check_open(session: Session, task: CollectorTask, doing: str) -> None:
    if task.status == TaskStatus.CLOSED:
        raise TaskRefused(f"{_named(session, task)} is closed: it cannot be {doing}")


def _check_request_id(request_id: str | None) -> None:
    if request_id is not None and not 0 < len(request_id) <= REQUEST_ID_MAX_LENGTH:
        raise TaskRefused(
            f"request id must be 1 to {REQUEST_ID_MAX_LENGTH} characters, got {len(request_id)}"
        )


def _worker(session: Session, user_id: int, place: str) -> AppUser:
    user = session.get(AppUser, user_id)
    _check_worker(user, user_id, place)
    return user  # type: ignore[return-value]


def _check_worker(user: AppUser | None, user_id: int, place: str) -> None:
    if user is None:
        raise TaskRefused(f"{place}: user {user_id} does not exist")
    if user.disabled:
        raise TaskRefused(f"{place}: user {user.email} is disabled")
    if user.role not in WORKING_ROLES:
        raise TaskRefused(f"{place}: user {user.email} is a {user.role} and cannot work tasks")


def set_assignee(
    session: Session,
    task: CollectorTask,
    user: AppUser | None,
    actor: str,
    action: str,
    request_id: str | None = None,
    *,
    rule: str | None = None,
) -> None:
    """Give the task to `user` (None: nobody) with its audit event; `rule` names the
    assignment rule that chose, for `ledger.assignment`. Callers check the user may work it."""
    before = _email(session, task.assignee_id) if task.assignee_id is not None else None
    detail: dict[str, Any] = {
        "task_id": task.id,
        "queue": task.queue,
        "before": before,
        "after": user.email if user is not None else None,
    }
    if request_id is not None:
        detail["request_id"] = request_id
    if rule is not None:
        detail["rule"] = rule
    with session.begin_nested():
        task.assignee_id = user.id if user is not None else None
        task.claimed_at = utcnow() if user is not None else None
        task.request_id = request_id
        session.add(task)
        record_audit(session, actor, action, task.invoice_id, detail)
        session.flush()
