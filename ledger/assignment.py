"""The rule that gives a newly opened collector task its assignee.

`ledger.lifecycle.open_collector_task` applies it once, when it writes a new task (never for
a repeated idempotency key), with the invoice row locked, in this order:

1. One open task per invoice: the invoice's other open tasks close with outcome `superseded`,
   and the new task takes over the assignee of the most recent of them if that user can
   still work tasks.
2. Otherwise the customer's owner (`ledger.routing`), if that email is a user who can work
   tasks.
3. Otherwise round robin among the queue's members who can work tasks
   (`ledger.tasks.assign_round_robin`); members who no longer can are skipped.
4. Otherwise the task stays unassigned, for a collector to claim.

Each change writes its audit event: `collector_task_closed` for a superseded task,
`collector_task_assigned` (before, after, and which rule chose) for the assignee.
"""

from __future__ import annotations

from sqlmodel import Session, select

from ledger.books import record_audit
from ledger.models import AppUser, CollectorTask, Invoice, utcnow
from ledger.routing import can_work_tasks, working_members, working_owner
from ledger.tasks import TaskStatus, assign_round_robin, set_assignee
from vocabulary import TaskOutcome

SUPERSEDED = TaskOutcome.SUPERSEDED.value
ACTOR = "system"


def assign_new_task(session: Session, task: CollectorTask, invoice: Invoice) -> int | None:
    """Supersede the invoice's other open tasks and give `task` its assignee by the rule; the
    assignee's id, or None when it stays unassigned."""
    previous = _supersede(session, task, invoice)
    if previous is not None and previous.assignee_id is not None:
        user = session.get(AppUser, previous.assignee_id)
        if can_work_tasks(user):
            set_assignee(
                session, task, user, ACTOR, "collector_task_assigned", rule="previous_task"
            )
            return user.id
    owner = working_owner(session, invoice.customer_id)
    if owner is not None:
        set_assignee(session, task, owner, ACTOR, "collector_task_assigned", rule="owner")
        return owner.id
    members = working_members(session, task.queue)
    if members:
        return assign_round_robin(session, task.id, members, actor=ACTOR)
    return None


def _supersede(session: Session, task: CollectorTask, invoice: Invoice) -> CollectorTask | None:
    """Close the invoice's open tasks other than `task`; the most recent of them, if any."""
    others = session.exec(
        select(CollectorTask)
        .where(
            CollectorTask.invoice_id == invoice.id,
            CollectorTask.status != TaskStatus.CLOSED,
            CollectorTask.id != task.id,
        )
        .order_by(CollectorTask.created_at.desc(), CollectorTask.id.desc())
    ).all()
    now = utcnow()
    for other in others:
        other.status, other.outcome, other.closed_at = TaskStatus.CLOSED.value, SUPERSEDED, now
        session.add(other)
        record_audit(
            session,
            ACTOR,
            "collector_task_closed",
            invoice.id,
            {"task_id": other.id, "outcome": SUPERSEDED, "note": None, "superseded_by": task.id},
        )
    session.flush()
    return others[0] if others else None
