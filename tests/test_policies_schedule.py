"""The reminder schedule: business days, holidays, send windows and time zones."""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.schedule import (
    ScheduledStep,
    build_schedule,
    business_day_on_or_after,
    calendar_zone,
    days_past_due,
    next_send_time,
    window_start,
)
from policies.schema import Calendar, Policy
from tests.test_policies_schema import ZONES, policies, windows

LA = ZoneInfo("America/Los_Angeles")


def policy(*offsets: int, **calendar: Any) -> Policy:
    return Policy.model_validate(
        {
            "name": "test",
            "version": 1,
            "calendar": calendar,
            "steps": [
                {"at": offset, "channels": ["email"], "template": f"step{index}"}
                for index, offset in enumerate(offsets)
            ],
        }
    )


def schedule(
    p: Policy, due_on: date, issued_on: date | None = None, **kwargs: Any
) -> list[ScheduledStep]:
    return build_schedule(
        p,
        issued_on=issued_on or due_on - timedelta(days=30),
        due_on=due_on,
        customer_timezone=kwargs.pop("customer_timezone", "America/Los_Angeles"),
        **kwargs,
    )


def local_dates(steps: list[ScheduledStep]) -> list[date]:
    return [step.local_date for step in steps]


US_BUSINESS = {"business_days": True, "holidays": "US"}


# --- business days ---------------------------------------------------------------------------------


def test_weekend_moves_to_monday_only_with_business_days() -> None:
    friday = date(2026, 5, 1)
    assert local_dates(schedule(policy(0, 1, 2, 3, business_days=True), friday)) == [
        friday,
        date(2026, 5, 4),
        date(2026, 5, 4),
        date(2026, 5, 4),
    ]
    assert local_dates(schedule(policy(0, 1, 2, 3), friday)) == [
        friday,
        date(2026, 5, 2),
        date(2026, 5, 3),
        date(2026, 5, 4),
    ]


def test_steps_landing_on_one_day_keep_policy_order() -> None:
    steps = schedule(policy(1, 2, 3, business_days=True), date(2026, 5, 1))
    assert [step.index for step in steps] == [0, 1, 2]
    assert len({step.send_at for step in steps}) == 1


def test_us_independence_day_observed_on_friday() -> None:
    # 2026-07-04 is a Saturday, observed on Friday 2026-07-03: both are skipped.
    due = date(2026, 7, 2)
    assert local_dates(schedule(policy(0, 1, 2, **US_BUSINESS), due)) == [
        date(2026, 7, 2),
        date(2026, 7, 6),
        date(2026, 7, 6),
    ]
    # Without the holiday calendar only the weekend is skipped.
    assert local_dates(schedule(policy(1, business_days=True), due)) == [date(2026, 7, 3)]


def test_thanksgiving() -> None:
    assert local_dates(schedule(policy(0, **US_BUSINESS), date(2026, 11, 26))) == [
        date(2026, 11, 27)
    ]


def test_christmas_then_weekend() -> None:
    # Friday 2026-12-25, then Saturday and Sunday.
    assert local_dates(schedule(policy(0, **US_BUSINESS), date(2026, 12, 25))) == [
        date(2026, 12, 28)
    ]


def test_business_day_on_or_after() -> None:
    calendar = Calendar(**US_BUSINESS)
    assert business_day_on_or_after(date(2026, 7, 3), calendar) == date(2026, 7, 6)
    assert business_day_on_or_after(date(2026, 7, 6), calendar) == date(2026, 7, 6)
    assert business_day_on_or_after(date(2026, 7, 4), Calendar()) == date(2026, 7, 4)
    assert business_day_on_or_after(date(2027, 1, 1), calendar) == date(2027, 1, 4)


def test_country_weekend_is_used() -> None:
    # Israel rests on Friday and Saturday: Friday 2026-05-08 moves to Sunday.
    calendar = Calendar(business_days=True, holidays="IL")
    assert business_day_on_or_after(date(2026, 5, 8), calendar) == date(2026, 5, 10)


def test_subdivision_holidays() -> None:
    # Cesar Chavez Day is a California holiday, not a federal one.
    chavez = date(2026, 3, 31)
    ca = Calendar(business_days=True, holidays="US-CA")
    assert business_day_on_or_after(chavez, ca) == date(2026, 4, 1)
    assert business_day_on_or_after(chavez, Calendar(**US_BUSINESS)) == chavez


# --- time zones and the send window ----------------------------------------------------------------


def test_send_window_start_in_customer_zone_across_dst() -> None:
    p = policy(0)
    cases = {
        date(2026, 1, 15): datetime(2026, 1, 15, 17, 0, tzinfo=UTC),  # PST, UTC-8
        date(2026, 7, 15): datetime(2026, 7, 15, 16, 0, tzinfo=UTC),  # PDT, UTC-7
        date(2026, 3, 8): datetime(2026, 3, 8, 16, 0, tzinfo=UTC),  # spring forward at 02:00
        date(2026, 11, 1): datetime(2026, 11, 1, 17, 0, tzinfo=UTC),  # fall back at 02:00
    }
    for due, expected in cases.items():
        [step] = schedule(p, due)
        assert step.send_at == expected
        assert step.send_at.tzinfo is UTC
        assert step.send_at.astimezone(LA).time() == time(9)
        assert step.local_date == due


def test_named_zone_ignores_the_customer_zone() -> None:
    p = policy(0, timezone="Europe/Berlin", send_window="08:30-12:00")
    [winter] = schedule(p, date(2026, 1, 15), customer_timezone="Asia/Tokyo")
    [summer] = schedule(p, date(2026, 7, 15), customer_timezone="Asia/Tokyo")
    assert winter.send_at == datetime(2026, 1, 15, 7, 30, tzinfo=UTC)
    assert summer.send_at == datetime(2026, 7, 15, 6, 30, tzinfo=UTC)
    assert calendar_zone(p.calendar, "not/a-zone") == ZoneInfo("Europe/Berlin")


def test_local_date_is_the_customers_date() -> None:
    # 09:00 in Auckland is the previous day in UTC.
    [step] = schedule(policy(0), date(2026, 6, 10), customer_timezone="Pacific/Auckland")
    assert step.local_date == date(2026, 6, 10)
    assert step.send_at == datetime(2026, 6, 9, 21, 0, tzinfo=UTC)


def test_window_start_inside_a_dst_gap_opens_when_the_clocks_jump() -> None:
    # 02:30 does not exist in New York on 2026-03-08: at 02:00 the clocks jump to 03:00.
    [step] = schedule(
        policy(0, send_window="02:30-03:15"), date(2026, 3, 8), customer_timezone="America/New_York"
    )
    assert step.send_at == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    assert step.send_at.astimezone(ZoneInfo("America/New_York")).time() == time(3, 0)


def test_a_window_the_clocks_jump_over_moves_to_the_next_day() -> None:
    [step] = schedule(
        policy(0, send_window="02:00-02:30"), date(2026, 3, 8), customer_timezone="America/New_York"
    )
    assert step.local_date == date(2026, 3, 9)
    assert step.send_at.astimezone(ZoneInfo("America/New_York")).time() == time(2, 0)
    late = next_send_time(
        policy(0, send_window="02:00-02:30").calendar,
        ZoneInfo("America/New_York"),
        datetime(2026, 3, 8, 5, tzinfo=UTC),  # 00:00 in New York, the night of the jump
    )
    assert late == datetime(2026, 3, 9, 6, 0, tzinfo=UTC)


# --- dropped steps ------------------------------------------------------------------------------------


def test_steps_before_the_issue_date_are_dropped() -> None:
    due = date(2026, 5, 20)
    steps = schedule(policy(-10, -3, -1, 0, 7), due, issued_on=date(2026, 5, 17))
    assert [step.index for step in steps] == [1, 2, 3, 4]
    assert schedule(policy(-3), due, issued_on=due) == []


def test_steps_already_past_are_dropped() -> None:
    due = date(2026, 5, 20)
    p = policy(-3, 0, 7, 14)
    everything = schedule(p, due)
    # 2026-05-27 09:00 PDT is 16:00 UTC: one minute later that step has gone too.
    at_send = datetime(2026, 5, 27, 16, 0, tzinfo=UTC)
    assert [s.index for s in schedule(p, due, not_before=at_send)] == [2, 3]
    assert [s.index for s in schedule(p, due, not_before=at_send + timedelta(minutes=1))] == [3]
    assert schedule(p, due, not_before=datetime(2026, 5, 1, tzinfo=UTC)) == everything
    assert schedule(p, due, not_before=datetime(2027, 1, 1, tzinfo=UTC)) == []


def test_bad_arguments() -> None:
    p = policy(0)
    with pytest.raises(ValueError, match="before issue date"):
        schedule(p, date(2026, 5, 1), issued_on=date(2026, 5, 2))
    with pytest.raises(ValueError, match="timezone-aware"):
        schedule(p, date(2026, 5, 1), not_before=datetime(2026, 5, 1))
    with pytest.raises(ValueError, match="unknown time zone"):
        schedule(p, date(2026, 5, 1), customer_timezone="Mars/Olympus")


def test_shipped_standard_policy() -> None:
    from policies.loader import load_policy

    standard = load_policy("policies/standard.yaml")
    # Due Monday 2026-06-29: Independence Day falls inside the first two weeks.
    steps = build_schedule(
        standard,
        issued_on=date(2026, 6, 1),
        due_on=date(2026, 6, 29),
        customer_timezone="America/Chicago",
    )
    assert [(s.index, s.local_date) for s in steps] == [
        (0, date(2026, 6, 26)),
        (1, date(2026, 6, 29)),
        (2, date(2026, 7, 6)),
        (3, date(2026, 7, 13)),
        (4, date(2026, 7, 29)),
    ]
    assert all(s.send_at.astimezone(ZoneInfo("America/Chicago")).time() == time(9) for s in steps)


# --- days past due -------------------------------------------------------------------------------------


def test_days_past_due() -> None:
    due = date(2026, 6, 1)
    assert days_past_due(due, datetime(2026, 5, 20, tzinfo=UTC), LA) == 0
    assert days_past_due(due, datetime(2026, 6, 1, 23, tzinfo=UTC), LA) == 0
    # 03:00 UTC on June 2nd is still June 1st in Los Angeles.
    assert days_past_due(due, datetime(2026, 6, 2, 3, tzinfo=UTC), LA) == 0
    assert days_past_due(due, datetime(2026, 6, 2, 3, tzinfo=UTC), ZoneInfo("UTC")) == 1
    assert days_past_due(due, datetime(2026, 7, 1, 12, tzinfo=UTC), LA) == 30
    with pytest.raises(ValueError, match="timezone-aware"):
        days_past_due(due, datetime(2026, 6, 2), LA)


# --- properties ----------------------------------------------------------------------------------------


@st.composite
def invoices(draw: st.DrawFn, *, not_before: bool | None = None) -> dict[str, Any]:
    """Invoice dates; `not_before` True/False forces a clock time or none, None draws either."""
    issued_on = draw(st.dates(date(2020, 1, 1), date(2035, 12, 31)))
    due_on = issued_on + timedelta(days=draw(st.integers(0, 90)))
    invoice: dict[str, Any] = {
        "issued_on": issued_on,
        "due_on": due_on,
        "customer_timezone": draw(st.sampled_from(ZONES)),
        "not_before": None,
    }
    if not_before is None:
        not_before = draw(st.booleans())
    if not_before:
        earliest = datetime.combine(issued_on, time(), UTC) - timedelta(days=5)
        minutes = draw(st.integers(0, (due_on - issued_on).days * 1440 + 140 * 1440))
        invoice["not_before"] = earliest + timedelta(minutes=minutes)
    return invoice


def wall_clock_exists(day: date, moment: time, zone: ZoneInfo) -> bool:
    local = datetime.combine(day, moment, tzinfo=zone)
    return local.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == local.replace(tzinfo=None)


@settings(max_examples=400, deadline=None)
@given(policies, invoices())
def test_schedule_properties(p: Policy, invoice: dict[str, Any]) -> None:
    steps = build_schedule(p, **invoice)
    zone = calendar_zone(p.calendar, invoice["customer_timezone"])
    window = p.calendar.send_window

    assert steps == build_schedule(p, **invoice)  # deterministic
    assert steps == sorted(steps, key=lambda s: (s.send_at, s.index))
    for scheduled in steps:
        assert scheduled.step == p.steps[scheduled.index]
        assert scheduled.send_at.utcoffset() == timedelta(0)
        assert scheduled.local_date >= invoice["issued_on"]
        if invoice["not_before"] is not None:
            assert scheduled.send_at >= invoice["not_before"]

        local = scheduled.send_at.astimezone(zone)
        assert local.date() == scheduled.local_date
        assert window.start <= local.time() < window.end
        if wall_clock_exists(scheduled.local_date, window.start, zone):
            assert local.time() == window.start
        else:  # the start fell in a daylight-saving gap: sent as the clocks jump over it
            before = (scheduled.send_at - timedelta(seconds=1)).astimezone(zone)
            assert before.date() < local.date() or before.time() < window.start

        own_date = invoice["due_on"] + timedelta(days=scheduled.step.at)
        if p.calendar.business_days:
            assert own_date <= scheduled.local_date <= own_date + timedelta(days=14)
            assert_business_day(scheduled.local_date, p.calendar.holidays)
        else:
            assert scheduled.local_date == own_date


@functools.cache
def holiday_table(code: str, year: int) -> holidays.HolidayBase:
    country, _, subdivision = code.partition("-")
    return holidays.country_holidays(country, subdiv=subdivision or None, years=year)


def is_day_off(day: date, code: str | None) -> bool:
    if code is None:
        return day.weekday() >= 5
    return not holiday_table(code, day.year).is_working_day(day)


def assert_business_day(day: date, code: str | None) -> None:
    assert not is_day_off(day, code), f"{day:%A %Y-%m-%d} is a day off in {code or 'any calendar'}"


@settings(max_examples=200, deadline=None)
@given(policies, invoices(not_before=True))
def test_schedule_keeps_every_step_due_after_issue_and_not_past(
    p: Policy, invoice: dict[str, Any]
) -> None:
    not_before = invoice.pop("not_before")
    everything = build_schedule(p, **invoice)
    assert {s.index for s in everything} == {
        index
        for index, step in enumerate(p.steps)
        if invoice["due_on"] + timedelta(days=step.at) >= invoice["issued_on"]
    }
    later = build_schedule(p, **invoice, not_before=not_before)
    assert later == [s for s in everything if s.send_at >= not_before]


@settings(max_examples=200, deadline=None)
@given(
    st.dates(date(2000, 1, 1), date(2060, 12, 31)),
    st.sampled_from([None, "US", "GB", "DE", "IL", "AE"]),
)
def test_business_day_on_or_after_properties(day: date, code: str | None) -> None:
    calendar = Calendar(business_days=True, holidays=code)
    result = business_day_on_or_after(day, calendar)
    assert day <= result <= day + timedelta(days=14)
    assert_business_day(result, code)
    for skipped in range((result - day).days):
        assert is_day_off(day + timedelta(days=skipped), code)


# Days on which clocks jump forward: at 02:00 (New York, Berlin at 02:00 local), by 30 minutes
# (Lord Howe Island) and at midnight (Santiago).
SPRING_FORWARD = [
    ("America/New_York", date(2026, 3, 8)),
    ("Europe/Berlin", date(2026, 3, 29)),
    ("Australia/Lord_Howe", date(2026, 10, 4)),
    ("America/Santiago", date(2026, 9, 6)),
]


@given(st.sampled_from(SPRING_FORWARD), windows())
def test_windows_on_the_night_the_clocks_jump(day_in_zone: tuple[str, date], window: str) -> None:
    zone_name, day = day_in_zone
    zone = ZoneInfo(zone_name)
    calendar = Calendar.model_validate({"timezone": zone_name, "send_window": window})
    start = window_start(day, calendar, zone)
    wall_start, wall_end = calendar.send_window.start, calendar.send_window.end
    if start is None:  # the clocks jumped over the whole window
        assert not wall_clock_exists(day, wall_start, zone)
        assert not wall_clock_exists(
            day, (datetime.combine(day, wall_end) - timedelta(minutes=1)).time(), zone
        )
        return
    local = start.astimezone(zone)
    assert local.date() == day
    assert wall_start <= local.time() < wall_end
    # The first moment of the window: a second earlier the clock had not reached it.
    before = (start - timedelta(seconds=1)).astimezone(zone)
    assert before.date() < day or before.time() < wall_start
