"""`InlineExecutor`: a worker's sync activities run on its event loop, one at a time, with
their activity context, and a failure reaches the workflow as from a thread pool."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from temporalio import activity, workflow
from temporalio.client import WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import Worker

from temporal_client import time_skipping_environment
from worker import SERVING_RUNNER, InlineExecutor

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
