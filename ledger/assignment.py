"""The rule that gives a newly opened collector task its assignee.

`ledger.lifecycle.open_collector_task` applies it once, when it writes a new task (never for
a repeated idempotency key), with the invoice row locked, after closing the invoice's other
open tasks with outcome `superseded` (one open task per invoice). In this order:

1. The new task takes over the assignee of the most recent task it superseded if that user
   can still work tasks.
2. Otherwise the customer's owner (`ledger.routing`), if that email is a user who can work
   tasks.
3. Otherwise round robin among the queue's members who can work tasks
   (`ledger.tasks.assign_round_robin`); members who no longer can are skipped.
4. Otherwise the task stays unassigned, for a collector to claim.

Each assignment writes its audit event `collector_task_assigned` (before, after, and which
rule chose).
"""

from __future__ import annotations

from sqlmodel import Session

from ledger.models import AppUser, CollectorTask, Invoice
from ledger.routing import can_work_tasks, working_members, working_owner
from ledger.tasks import assign_round_robin, set_assignee

ACTOR = "system"


def assign_new_task(
    session: Session, task: CollectorTask, invoice: Invoice, superseded: CollectorTask | None
) -> int | None:
    """Give `task` its assignee by the rule, `superseded` being the most recent open task it
    replaced; the assignee's id, or None when it stays unassigned."""
    if superseded is not None and superseded.assignee_id is not None:
        user = session.get(AppUser, superseded.assignee_id)
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
