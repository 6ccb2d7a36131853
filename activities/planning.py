"""Planning: when an invoice's steps run, computed from calendar data.

The schedule depends on the `holidays` and `tzdata` releases installed where it is computed.
Computed in the workflow, an upgrade of either could change it on replay and break invoices
in flight; so it is computed outside and recorded in the workflow's history, where it replays
exactly as it was whatever is installed later: by the starter, which carries it in the
workflow's input (`planned_steps`), or else by these activities, run as local activities.
"""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel
from temporalio import activity

from activities.models import PlannedStep
from policies.schedule import build_schedule, calendar_zone, next_send_time
from policies.schema import Policy


class ScheduleRequest(BaseModel):
    policy: Policy
    issued_on: date
    due_on: date
    customer_timezone: str
    not_before: datetime


class SendTimeRequest(BaseModel):
    policy: Policy
    customer_timezone: str
    now: datetime


def planned_steps(request: ScheduleRequest) -> list[PlannedStep]:
    """Every step still to run, ordered by send time."""
    schedule = build_schedule(
        request.policy,
        issued_on=request.issued_on,
        due_on=request.due_on,
        customer_timezone=request.customer_timezone,
        not_before=request.not_before,
    )
    return [PlannedStep(index=s.index, send_at=s.send_at) for s in schedule]


@activity.defn
def plan_schedule(request: ScheduleRequest) -> list[PlannedStep]:
    """`planned_steps`, for a run whose input carries no schedule."""
    return planned_steps(request)


@activity.defn
def plan_next_send_time(request: SendTimeRequest) -> datetime:
    """The first moment from `now` at which a late step may go out."""
    calendar = request.policy.calendar
    zone = calendar_zone(calendar, request.customer_timezone)
    return next_send_time(calendar, zone, request.now)
