"""When each step of a policy runs for one invoice.

A pure function of (policy, dates, customer time zone): it runs inside Temporal workflows,
so it never reads the clock; callers pass `workflow.now()` as `not_before`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from policies.calendars import is_business_day, load_zone
from policies.schema import CUSTOMER_TIMEZONE, Calendar, Policy, Step

# More consecutive days off than any real calendar has; a guard against looping forever.
_MAX_DAYS_OFF = 60


@dataclass(frozen=True)
class ScheduledStep:
    index: int  # position of the step in policy.steps
    step: Step
    send_at: datetime  # timezone-aware, in UTC
    local_date: date  # the date in the calendar's zone


def calendar_zone(calendar: Calendar, customer_timezone: str) -> ZoneInfo:
    """The zone whose wall clock the send window is read on."""
    if calendar.timezone == CUSTOMER_TIMEZONE:
        return load_zone(customer_timezone)
    return load_zone(calendar.timezone)


def business_day_on_or_after(day: date, calendar: Calendar) -> date:
    """`day` itself, or with business_days the first day from it that is not off."""
    if not calendar.business_days:
        return day
    for shift in range(_MAX_DAYS_OFF):
        candidate = day + timedelta(days=shift)
        if is_business_day(candidate, calendar.holidays):
            return candidate
    raise ValueError(f"no business day within {_MAX_DAYS_OFF} days of {day}")


def build_schedule(
    policy: Policy,
    *,
    issued_on: date,
    due_on: date,
    customer_timezone: str,
    not_before: datetime | None = None,
) -> list[ScheduledStep]:
    """Every step still to run, ordered by send time (then by position in the policy).

    A step runs on due date + offset, moved to a business day if the calendar asks, at the
    start of the send window. Dropped: steps whose own date is before the invoice was
    issued, and steps whose send time is before `not_before` (already past on import).
    """
    if due_on < issued_on:
        raise ValueError(f"due date {due_on} is before issue date {issued_on}")
    if not_before is not None and not_before.utcoffset() is None:
        raise ValueError("not_before must be timezone-aware")
    zone = calendar_zone(policy.calendar, customer_timezone)
    schedule: list[ScheduledStep] = []
    for index, step in enumerate(policy.steps):
        day = due_on + timedelta(days=step.at)
        if day < issued_on:
            continue
        send_at = first_window(day, policy.calendar, zone)
        if not_before is not None and send_at < not_before:
            continue
        schedule.append(ScheduledStep(index, step, send_at, send_at.astimezone(zone).date()))
    return sorted(schedule, key=lambda scheduled: (scheduled.send_at, scheduled.index))


def first_window(day: date, calendar: Calendar, zone: ZoneInfo) -> datetime:
    """The start of the first send window on `day` or later that messages may go out in."""
    for shift in range(_MAX_DAYS_OFF):
        candidate = business_day_on_or_after(day + timedelta(days=shift), calendar)
        start = window_start(candidate, calendar, zone)
        if start is not None:
            return start
    raise ValueError(f"no send window within {_MAX_DAYS_OFF} days of {day}")


def window_start(day: date, calendar: Calendar, zone: ZoneInfo) -> datetime | None:
    """The start of the send window on `day` in `zone`, as a UTC datetime.

    If a daylight-saving jump skips the start, the window opens when the clocks jump; if
    it skips the whole window (02:00-02:30 on the night clocks go forward), there is no
    window that day and the answer is None.
    """
    window = calendar.send_window
    start = datetime.combine(day, window.start, tzinfo=zone)
    if _reads_as(start.astimezone(UTC), zone) == start.replace(tzinfo=None):
        return start.astimezone(UTC)
    opens = _clocks_jump_over(start)
    local = opens.astimezone(zone)
    if local.date() != day or local.time() >= window.end:
        return None
    return opens


def _reads_as(moment: datetime, zone: ZoneInfo) -> datetime:
    """The wall clock in `zone` at `moment`, without its zone."""
    return moment.astimezone(zone).replace(tzinfo=None)


def _clocks_jump_over(local: datetime) -> datetime:
    """The instant the clocks jump over `local`, a wall time that does not exist."""
    assert isinstance(local.tzinfo, ZoneInfo)
    zone, wall = local.tzinfo, local.replace(tzinfo=None)
    # Read with the offsets before and after the jump, `local` gives one instant on each
    # side of it; bisect to the first whole second whose wall clock is past `wall`.
    low, high = sorted(int(local.replace(fold=fold).timestamp()) for fold in (0, 1))
    while high - low > 1:
        middle = (low + high) // 2
        if _reads_as(datetime.fromtimestamp(middle, UTC), zone) > wall:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def days_past_due(due_on: date, now: datetime, zone: ZoneInfo) -> int:
    """Whole days since the due date on the customer's calendar; 0 until it has passed."""
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return max(0, (now.astimezone(zone).date() - due_on).days)


def next_send_time(calendar: Calendar, zone: ZoneInfo, now: datetime) -> datetime:
    """The first moment from `now` at which a late step may go out.

    `now` itself when it is inside the send window of a day messages may go out on;
    otherwise the start of the next such window.
    """
    day = now.astimezone(zone).date()
    for shift in range(_MAX_DAYS_OFF):
        candidate = business_day_on_or_after(day + timedelta(days=shift), calendar)
        start = window_start(candidate, calendar, zone)
        if start is None:
            continue
        end = datetime.combine(candidate, calendar.send_window.end, tzinfo=zone)
        if now < start:
            return start
        if now < end:
            return now
    raise ValueError(f"no send window within {_MAX_DAYS_OFF} days of {now}")
