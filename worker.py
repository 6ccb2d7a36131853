"""The dunwise worker: every workflow and activity on one task queue.

Workers are stateless; run as many as load needs against the same task queue. A worker may
also take one side only (`WorkerRole`): the workflows (with the pure planning steps they run
as local activities), or the activities, so that each side has a process, and a core, of its
own.
"""

from __future__ import annotations

import asyncio
import warnings
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from datetime import timedelta
from enum import StrEnum

import sqlalchemy as sa
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.coordination import CoordinationActivities
from activities.delivery import Unkept
from activities.erp import ErpActivities
from activities.grouped_messages import GroupedMessagingActivities
from activities.ledger import LedgerActivities
from activities.planning import plan_next_send_time, plan_schedule
from settings import Settings
from workflows.customer import CustomerWorkflow
from workflows.invoice import InvoiceWorkflow

WORKFLOWS = [InvoiceWorkflow, CustomerWorkflow]
# Pure planning the workflows run as local activities, in their own worker.
LOCAL_ACTIVITIES = [plan_schedule, plan_next_send_time]


class WorkerRole(StrEnum):
    ALL = "all"
    WORKFLOWS = "workflows"
    ACTIVITIES = "activities"


# The tests and the replay checks run the workflows in Temporal's sandbox, which re-imports
# their modules for every run and refuses a non-deterministic call (the clock, randomness,
# I/O) anywhere in them. The policy language and the holiday calendars behind it are
# deterministic and load outside the sandbox, once, because `holidays` imports parts of itself
# lazily and reads the local clock and gettext catalogs while doing so.
LIBRARIES_PASSED_THROUGH = ("policies", "holidays", "dateutil", "six")
STRICT_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(*LIBRARIES_PASSED_THROUGH)
)
# A serving worker runs the same code the strict runs checked, without the sandbox: its
# per-run imports and per-payload work cost a sixth of the worker's CPU and a third of its
# memory, and dunwise's workflow modules hold classes and constants only, no state to isolate.
SERVING_RUNNER: WorkflowRunner = UnsandboxedWorkflowRunner()


# Those lazy imports are harmless but the sandbox warns about each on first use.
warnings.filterwarnings(
    "ignore", message=r"Module (holidays|dateutil|six)\b.* was imported after initial workflow load"
)


MAX_CONCURRENT_ACTIVITIES = 32
# No payload lives in external storage: visiting each one on a task of its own, the SDK's
# default, only costs a task per payload on every activation.
PAYLOAD_VISITS_AT_ONCE = 1


class InlineExecutor(ThreadPoolExecutor):
    """Runs each call at once, in the thread that submits it: the worker's event loop.

    A `ThreadPoolExecutor` to the SDK, so sync activities keep their context and cancellation
    as in a pool. An activity that heartbeats would wait on the loop it blocks; none of
    dunwise's does."""

    def __init__(self, slots: int) -> None:
        # As many as the worker's activity slots, which the SDK checks; no thread is started.
        super().__init__(max_workers=slots)

    def submit(self, fn, /, *args, **kwargs) -> Future:  # type: ignore[no-untyped-def]
        done: Future = Future()
        try:
            done.set_result(fn(*args, **kwargs))
        except BaseException as error:  # as a pool's thread hands it to the future
            done.set_exception(error)
        return done


def activities_for(
    engine: sa.Engine,
    settings: Settings,
    client: Client | None = None,
    *,
    keep_messages: bool = True,
    executor: Executor | None = None,
) -> list:
    """Every activity; handing reminders to customers' coordinators needs the client. With
    `keep_messages=False` (a simulation nobody keeps the outbox of) messages are rendered and
    recorded as usual but delivered nowhere. `executor` is the worker's activity executor, where
    the async activities run their ledger work too (None: asyncio's default threads)."""
    ledger = LedgerActivities(engine)
    unkept = None if keep_messages else Unkept()  # None: the channels of the settings
    messaging = GroupedMessagingActivities(engine, settings, email=unkept, sms=unkept)
    erp = ErpActivities(engine, settings)
    coordination = (
        CoordinationActivities(client, engine, settings, messaging, executor) if client else None
    )
    return [
        *([coordination.request_reminder] if coordination else []),
        ledger.apply_payment,
        ledger.apply_adjustment,
        ledger.set_status,
        ledger.close_invoice,
        ledger.open_collector_task,
        ledger.close_collector_tasks,
        ledger.raise_task_priority,
        ledger.record_timeline,
        ledger.record_note,
        ledger.record_payment_plan,
        ledger.end_payment_plan,
        ledger.breach_collector_task,
        messaging.send_reminder,
        messaging.send_receipt,
        messaging.send_grouped_reminder,
        erp.clear_in_erp,
        *LOCAL_ACTIVITIES,
    ]


def build_worker(
    client: Client,
    settings: Settings,
    engine: sa.Engine,
    *,
    max_concurrent_activities: int = MAX_CONCURRENT_ACTIVITIES,
    role: WorkerRole = WorkerRole.ALL,
    keep_messages: bool = True,
    on_event_loop: bool = False,
) -> Worker:
    """The worker of `role`.

    With `on_event_loop`, its activities (`InlineExecutor`) and its workflow activations run
    one at a time on the worker's event loop: only for a worker with no I/O worth overlapping.
    The SDK runs activations there in its debug mode alone, which also turns off its deadlock
    detection: a workflow that blocked would hang the worker instead of failing its task
    after two seconds (to be retried, and to block again)."""
    with_workflows = role is not WorkerRole.ACTIVITIES
    executor = (
        InlineExecutor(max_concurrent_activities)
        if on_event_loop
        else ThreadPoolExecutor(max_workers=max_concurrent_activities)
    )
    activities = (
        LOCAL_ACTIVITIES
        if role is WorkerRole.WORKFLOWS
        else activities_for(
            engine, settings, client, keep_messages=keep_messages, executor=executor
        )
    )
    return Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=WORKFLOWS if with_workflows else [],
        workflow_runner=(STRICT_RUNNER if settings.strict_workflow_sandbox else SERVING_RUNNER),
        activities=activities,
        no_remote_activities=role is WorkerRole.WORKFLOWS,
        activity_executor=executor,
        max_concurrent_activities=max_concurrent_activities,
        max_cached_workflows=settings.workflow_cache_size if with_workflows else 0,
        debug_mode=on_event_loop,
        max_workflow_task_external_storage_concurrency=PAYLOAD_VISITS_AT_ONCE,
        sticky_queue_schedule_to_start_timeout=timedelta(
            seconds=settings.sticky_queue_timeout_seconds
        ),
    )


async def run_worker(
    client: Client, settings: Settings, engine: sa.Engine, role: WorkerRole = WorkerRole.ALL
) -> None:
    async with build_worker(client, settings, engine, role=role):
        await asyncio.Event().wait()


if __name__ == "__main__":
    from starter import main

    main(["run"])
