"""The invoice workflow's `workflow.patched` ids: each marks a change that added, dropped or
altered commands after histories had been recorded without it. The workflow asks
`takes_change(id)`, never `workflow.patched` itself.

Invariants:
- An id is never renamed, reused or removed while a history recorded before its change may
  still replay (tests/histories hold such runs); a new change gets a new id.
- A bundle marker stands for every change declared above it. A new run records one marker,
  the newest bundle's, the first time it asks, and takes every change in it without a
  marker of its own: each marker costs a `TemporalChangeVersion` search-attribute upsert (a
  write to the server's visibility store), and a run used to record five.
- A run from before replays its own markers: asked first during its replay, a bundle it did
  not record is absent and stays so. A change declared after its bundle is either taken
  with a marker of its own (a step the run reaches after the new code took over) or not.
- A bundle's changes never change; a later change goes below the newest bundle, and a new
  bundle below it stands for it and everything above.
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

EVERY_CHANGE_TO_ENGAGEMENT_WATCH = "every-change-to-engagement-watch"
_TO_ENGAGEMENT_WATCH = frozenset(
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

# A settled invoice is published in the clearing stage it is bound for, with its status and
# balance: one search-attribute upsert where a payment and the clearing made two.
SETTLED_SHOWN_CLEARING = "settled-shown-clearing"
EVERY_CHANGE_TO_SETTLED_SHOWN_CLEARING = "every-change-to-settled-shown-clearing"

# A run whose input carries its schedule (planned by the starter) follows it: no local
# activity plans it at the start.
SCHEDULE_IN_INPUT = "schedule-in-input"
EVERY_CHANGE_TO_SCHEDULE_IN_INPUT = "every-change-to-schedule-in-input"

# Each bundle marker and the changes it stands for, the newest (what new runs record) first.
BUNDLES = {
    EVERY_CHANGE_TO_SCHEDULE_IN_INPUT: _TO_ENGAGEMENT_WATCH
    | {SETTLED_SHOWN_CLEARING, SCHEDULE_IN_INPUT},
    EVERY_CHANGE_TO_SETTLED_SHOWN_CLEARING: _TO_ENGAGEMENT_WATCH | {SETTLED_SHOWN_CLEARING},
    EVERY_CHANGE_TO_ENGAGEMENT_WATCH: _TO_ENGAGEMENT_WATCH,
}


def takes_change(change_id: str) -> bool:
    """Whether this run takes the changed branch of `change_id`."""
    for marker, changes in BUNDLES.items():
        if change_id in changes and workflow.patched(marker):
            return True
    return workflow.patched(change_id)
