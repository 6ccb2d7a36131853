"""A worker on its event loop: `InlineExecutor` runs sync activities there, one at a time,
with their activity context, and a failure reaches the workflow as from a thread pool;
`build_worker(on_event_loop=True)` runs an invoice there, workflow and activities, as a
worker with threads does."""

from __future__ import annotations

import threading
import uuid
from datetime import date, timedelta

import pytest
from temporalio import activity, workflow
from temporalio.client import WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import Worker

from temporal_client import time_skipping_environment
from tests.invoice_harness import invoice_harness, local
from worker import SERVING_RUNNER, InlineExecutor
from workflows.invoice import InvoiceWorkflow
from workflows.models import PaymentReceived

ran_on: list[tuple[int, str]] = []  # (thread, activity id) of each call


@activity.defn
def note_thread(fail: bool) -> int:
    ran_on.append((threading.get_ident(), activity.info().activity_id))
    if fail:
        raise ApplicationError("refused on purpose", non_retryable=True)
    return len(ran_on)


@workflow.defn
class TwoCalls:
    @workflow.run
    async def run(self, fail_second: bool) -> list[int]:
        results = []
        for fail in (False, fail_second):
            results.append(
                await workflow.execute_activity(
                    note_thread,
                    fail,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=RetryPolicy(maximum_attempts=1),
                )
            )
        return results


async def _run(fail_second: bool) -> tuple[list[int], int]:
    """The workflow's result on an inline worker, and the event loop's thread."""
    async with await time_skipping_environment() as env:
        queue = f"inline-{uuid.uuid4()}"
        async with Worker(
            env.client,
            task_queue=queue,
            workflows=[TwoCalls],
            activities=[note_thread],
            activity_executor=InlineExecutor(8),
            max_concurrent_activities=8,
            workflow_runner=SERVING_RUNNER,
        ):
            result = await env.client.execute_workflow(
                TwoCalls.run, fail_second, id=f"two-{uuid.uuid4()}", task_queue=queue
            )
            return result, threading.get_ident()


async def test_sync_activities_run_on_the_event_loop_with_their_context():
    ran_on.clear()
    result, loop_thread = await _run(fail_second=False)
    assert result == [1, 2]
    assert [thread for thread, _ in ran_on] == [loop_thread, loop_thread]
    assert [activity_id for _, activity_id in ran_on] == ["1", "2"]


async def test_an_activity_that_fails_inline_fails_as_in_a_pool():
    ran_on.clear()
    with pytest.raises(WorkflowFailureError) as failed:
        await _run(fail_second=True)
    cause = failed.value.cause
    assert isinstance(cause, ActivityError)
    assert isinstance(cause.cause, ApplicationError)
    assert cause.cause.message == "refused on purpose"
    assert len(ran_on) == 2


def test_an_inline_executor_starts_no_thread():
    executor = InlineExecutor(4)
    before = threading.active_count()
    assert executor.submit(lambda a, b: a + b, 2, b=3).result() == 5
    refused = executor.submit(int, "not a number")
    assert isinstance(refused.exception(), ValueError)
    assert threading.active_count() == before
    executor.shutdown()


# The thread pools of a worker with threads: the SDK's for workflow activations, ours for
# activities.
POOL_THREADS = ("temporal_workflow_", "ThreadPoolExecutor-")


async def _remind_and_pay(tmp_path, on_event_loop: bool) -> tuple[list, set[str]]:
    """An invoice reminded three times and paid: its timeline, and the pool threads started."""
    before = {thread.ident for thread in threading.enumerate()}
    async with invoice_harness(tmp_path, on_event_loop=on_event_loop) as h:
        handle = await h.start("LOOP-1", due_on=date(2026, 3, 16))
        await h.advance_to(local(date(2026, 3, 24), 12))
        await handle.execute_update(
            InvoiceWorkflow.record_payment,
            PaymentReceived(amount_minor=100_000, currency="USD", reference="ch_loop"),
        )
        timeline = [(e.event, e.template, e.at) for e in (await handle.result()).timeline]
        # While the worker runs: it ends its own pools as it stops.
        started = {
            thread.name
            for thread in threading.enumerate()
            if thread.ident not in before and thread.name.startswith(POOL_THREADS)
        }
    return timeline, started


async def test_an_invoice_on_the_event_loop_runs_as_with_threads(tmp_path):
    on_loop, loop_threads = await _remind_and_pay(tmp_path / "loop", on_event_loop=True)
    threaded, pool_threads = await _remind_and_pay(tmp_path / "threads", on_event_loop=False)
    reminded = [template for event, template, _ in on_loop if event == "reminder"]
    assert list(dict.fromkeys(reminded)) == ["courtesy", "due_today", "overdue_friendly"]
    assert on_loop[-1][0] == "closed"
    # The same story, and the reminders at the same moments (the payment's is the server's
    # wall-clock moment, which differs by milliseconds).
    assert [(event, template) for event, template, _ in on_loop] == [
        (event, template) for event, template, _ in threaded
    ]
    assert [e for e in on_loop if e[0] == "reminder"] == [e for e in threaded if e[0] == "reminder"]
    assert loop_threads == set()
    assert pool_threads  # what the check above would have seen without the loop
