"""The benchmark's baseline: a workflow shaped like one invoice's lifecycle that does nothing.

It has the timers and activities one real invoice used and takes its payment as an update,
so driving it costs what Temporal itself costs; the gap to a real invoice is dunwise's own
work (ledger, rendering, ERP journal, search attributes, pydantic payloads).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

from child_process import stop_when_orphaned
from worker import MAX_CONCURRENT_ACTIVITIES, PAYLOAD_VISITS_AT_ONCE, SERVING_RUNNER
from worker_processes import kept_processes

ACTIVITY_TIMEOUT = timedelta(seconds=30)
# How long after its start each benchmark invoice's first reminder falls due; the baseline's
# fired timers last as long, so both pay the dev server's timer resolution alike.
TIMER = timedelta(seconds=1)
# Both drivers pay this long after the start: after the first reminder went out.
PAY_AFTER = TIMER + timedelta(milliseconds=500)


@dataclass(frozen=True)
class Shape:
    """What one real invoice's history held."""

    timers_fired: int
    timers_canceled: int  # waits that the payment cut short, like the wait for the next step
    activities: int  # the first runs inside the payment update, like apply_payment


@activity.defn
def noop(step: int) -> int:
    return step


@workflow.defn
class BaselineWorkflow:
    @workflow.init
    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.paid = False

    @workflow.run
    async def run(self, shape: Shape) -> int:
        for _ in range(shape.timers_fired):
            await workflow.sleep(TIMER)
        for _ in range(shape.timers_canceled):
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: self.paid, timeout=timedelta(days=1))
        await workflow.wait_condition(lambda: self.paid)
        for step in range(1, shape.activities):
            await workflow.execute_activity(noop, step, start_to_close_timeout=ACTIVITY_TIMEOUT)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return shape.activities

    @workflow.update
    async def pay(self) -> None:
        if self.shape.activities:
            await workflow.execute_activity(noop, 0, start_to_close_timeout=ACTIVITY_TIMEOUT)
        self.paid = True


# The baseline runs as dunwise's workflows do in a serving worker, with build_worker's
# activity slots and payload visits.
BASELINE_RUNNER = SERVING_RUNNER


def baseline_worker(
    client: Client, task_queue: str, *, workflows: bool, activities: bool
) -> Worker:
    """The baseline's worker, shaped as dunwise's: both sides, or one."""
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[BaselineWorkflow] if workflows else [],
        workflow_runner=BASELINE_RUNNER,
        activities=[noop] if activities else [],
        activity_executor=ThreadPoolExecutor(max_workers=MAX_CONCURRENT_ACTIVITIES),
        max_concurrent_activities=MAX_CONCURRENT_ACTIVITIES,
        max_workflow_task_external_storage_concurrency=PAYLOAD_VISITS_AT_ONCE,
    )


async def serve_activities(address: str, task_queue: str, parent: int) -> None:
    """The baseline's activities alone, as `dunwise worker --activities-only` serves dunwise's,
    until stopped or orphaned (a benchmark killed outright)."""
    client = await Client.connect(address)
    async with baseline_worker(client, task_queue, workflows=False, activities=True):
        await stop_when_orphaned(parent)


async def run_baseline(client: Client, task_queue: str, shape: Shape, name: str) -> None:
    """One baseline workflow driven as the benchmark drives an invoice: start, pay, result."""
    handle = await client.start_workflow(
        BaselineWorkflow.run, shape, id=f"baseline-{name}", task_queue=task_queue
    )
    await asyncio.sleep(PAY_AFTER.total_seconds())
    await handle.execute_update(BaselineWorkflow.pay)
    await handle.result()


@contextlib.asynccontextmanager
async def baseline_workers(
    client: Client, task_queue: str, activity_processes: int
) -> AsyncIterator[None]:
    """The baseline's worker, split as dunwise's is."""
    address = client.service_client.config.target_host
    serve = [sys.executable, str(Path(__file__)), address, task_queue, str(os.getpid())]
    async with (
        kept_processes([serve] * activity_processes, dict(os.environ)),
        baseline_worker(client, task_queue, workflows=True, activities=not activity_processes),
    ):
        yield


if __name__ == "__main__":
    asyncio.run(serve_activities(sys.argv[1], sys.argv[2], int(sys.argv[3])))
