"""The invoice workflow's `workflow.patched` ids: each marks a change that added, dropped or
altered commands after histories had been recorded without it. The workflow asks
`takes_change(id)`, never `workflow.patched` itself.

Invariants:
- An id is never renamed, reused or removed while a history recorded before its change may
  still replay (tests/histories hold such runs); a new change gets a new id.
- A run started on code that knows `EVERY_CHANGE_ABOVE` records that one marker, the first
  time it asks, and takes every change in `BUNDLED` without a marker of its own. Each
  marker costs a `TemporalChangeVersion` search-attribute upsert (a write to the server's
  visibility store), and a run used to record five. A run from before replays its own
  markers: asked first during its replay, `EVERY_CHANGE_ABOVE` is absent and stays so.
- A change made after `EVERY_CHANGE_ABOVE` gets its own id below it, outside `BUNDLED`: runs
  that recorded `EVERY_CHANGE_ABOVE` before it existed must not take it on replay.
"""

from temporalio import workflow

# Changes that add commands to histories recorded before them.
PROMISE_AFTER_LAST_STEP = "promise-after-last-step"
COLLECTOR_OUTCOME_IN_LEDGER = "collector-outcome-in-ledger"
SCHEDULE_FROM_ACTIVITY = "schedule-from-activity"
TIMELINE_IN_LEDGER = "timeline-in-ledger"
SERIALIZED_LEDGER_WRITES = "serialized-ledger-writes"
SLA_MOVES_TASK = "sla-moves-task"
BROKEN_PROMISE_OPENS_TASK = "broken-promise-opens-task"
MANUAL_ESCALATION_SLA = "manual-escalation-sla"
PLAN_IN_LEDGER = "plan-in-ledger"
PROMISE_CLOSES_TASK = "promise-closes-task"
CUSTOMER_COORDINATOR = "customer-coordinator"
# Waiting for the customer's coordinator lets its timer run out rather than cancel it: no
# CancelTimer in the history.
COORDINATOR_WAIT_UNCANCELLED = "coordinator-wait-uncancelled"
# Search attributes upserted only when they change: fewer commands than older histories hold.
PUBLISH_CHANGES_ONLY = "publish-changes-only"
# A paid invoice is closed and its timeline saved by one ledger activity, not two.
CLOSE_IN_ONE_STEP = "close-in-one-step"
# A reminder read or its pay link opened, and no payment in time: the invoice's priority rises.
ENGAGEMENT_WATCH = "engagement-watch"

# Stands for every id in BUNDLED in runs that recorded it. Never add to BUNDLED: ids added
# later go below, each with its own marker.
EVERY_CHANGE_ABOVE = "every-change-to-engagement-watch"
BUNDLED = frozenset(
    {
        PROMISE_AFTER_LAST_STEP,
        COLLECTOR_OUTCOME_IN_LEDGER,
        SCHEDULE_FROM_ACTIVITY,
        TIMELINE_IN_LEDGER,
        SERIALIZED_LEDGER_WRITES,
        SLA_MOVES_TASK,
        BROKEN_PROMISE_OPENS_TASK,
        MANUAL_ESCALATION_SLA,
        PLAN_IN_LEDGER,
        PROMISE_CLOSES_TASK,
        CUSTOMER_COORDINATOR,
        COORDINATOR_WAIT_UNCANCELLED,
        PUBLISH_CHANGES_ONLY,
        CLOSE_IN_ONE_STEP,
        ENGAGEMENT_WATCH,
    }
)


def takes_change(change_id: str) -> bool:
    """Whether this run takes the changed branch of `change_id`."""
    if change_id in BUNDLED and workflow.patched(EVERY_CHANGE_ABOVE):
        return True
    return workflow.patched(change_id)
