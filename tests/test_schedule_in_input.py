"""A run follows the schedule its starter planned and carried in its input; without one it
plans by a local activity. Either way the schedule is in the history and replays as it was.

Standard policy, invoice due Monday 2026-03-16 in New York (tests/invoice_harness pins the
clock to Monday 2026-03-02): courtesy Fri 03-13, due_today Mon 03-16, overdue_friendly
Mon 03-23, overdue_firm Mon 03-30, escalation Wed 04-15.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from activities.planning import ScheduleRequest, plan_schedule
from invoices import invoice_input
from policies.loader import load_policy
from tests.invoice_harness import HISTORIES, POLICIES, invoice_harness, ledger_invoice, local
from worker import STRICT_RUNNER, WORKFLOWS

DUE = date(2026, 3, 16)
STANDARD = load_policy(POLICIES / "standard.yaml")


def local_activities(history: WorkflowHistory) -> int:
    return sum(
        1
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and event.marker_recorded_event_attributes.marker_name == "core_local_activity"
    )


def reminders(state) -> list[tuple[str | None, datetime]]:
    return [(e.template, e.at) for e in state.timeline if e.event == "reminder"]


async def test_a_run_follows_its_carried_schedule_as_a_run_that_plans_its_own(tmp_path, ledger_url):
    async with invoice_harness(tmp_path, ledger_url) as h:
        carried = await h.start("SCH-CARRIED", due_on=DUE)
        planned = await h.start("SCH-PLANNED", due_on=DUE, planned=False)
        await h.advance_to(local(date(2026, 3, 24), 12))
        carried_state, planned_state = await h.state(carried), await h.state(planned)
        assert list(dict.fromkeys(template for template, _ in reminders(carried_state))) == [
            "courtesy",
            "due_today",
            "overdue_friendly",
        ]
        assert reminders(carried_state) == reminders(planned_state)
        assert carried_state.next_step_at == planned_state.next_step_at == local(date(2026, 3, 30))
        assert local_activities(await carried.fetch_history()) == 0
        assert local_activities(await planned.fetch_history()) == 1
        await h.assert_replays(carried)
        await h.assert_replays(planned)


def test_the_starter_plans_only_the_steps_still_ahead_on_the_workflows_clock():
    invoice = ledger_invoice("SCH-1", "c", STANDARD, due_on=DUE)
    offset = timedelta(days=300)  # the workflow reads its clock as the server's minus this
    server_now = local(date(2026, 3, 20), 12).astimezone(UTC) + offset
    start = invoice_input(
        invoice, "America/New_York", STANDARD, clock_offset=offset, planned_at=server_now
    )
    assert start.schedule is not None
    assert [STANDARD.steps[step.index].template for step in start.schedule][:2] == [
        "overdue_friendly",
        "overdue_firm",
    ]
    assert start.schedule == plan_schedule(
        ScheduleRequest(
            policy=STANDARD,
            issued_on=invoice.issued_on,
            due_on=DUE,
            customer_timezone="America/New_York",
            not_before=server_now - offset,
        )
    )
    assert invoice_input(invoice, "America/New_York", STANDARD).schedule is None


async def test_a_run_recorded_before_the_change_replays_though_its_input_carries_a_schedule():
    """A newer starter's input reached a worker from before the change, which ignored the
    schedule and planned by its local activity: the newer worker replays that run the same."""
    path = HISTORIES / "paid_after_reminders.settled_shown_clearing.json"
    recorded = json.loads(path.read_text())
    started = recorded["events"][0]["workflowExecutionStartedEventAttributes"]
    payload = started["input"]["payloads"][0]
    start = json.loads(base64.b64decode(payload["data"]))
    assert "schedule" not in start
    start["schedule"] = [{"index": 0, "send_at": "2026-03-13T14:00:00Z"}]
    payload["data"] = base64.b64encode(json.dumps(start).encode()).decode()
    history = WorkflowHistory.from_json("invoice-older-worker", json.dumps(recorded))
    assert local_activities(history) >= 1
    await Replayer(
        workflows=WORKFLOWS, workflow_runner=STRICT_RUNNER, data_converter=pydantic_data_converter
    ).replay_workflow(history)


def test_saved_histories_of_runs_with_a_carried_schedule_record_no_planning_activity():
    newest = sorted(Path(HISTORIES).glob("*.schedule_in_input.json"))
    assert newest
    for path in newest:
        history = WorkflowHistory.from_json(path.stem, path.read_text())
        started = history.events[0].workflow_execution_started_event_attributes
        assert b'"schedule":[' in started.input.payloads[0].data, path.name
