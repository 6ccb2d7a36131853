"""next_send_time: when a step that fell due during a pause may go out."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from policies.calendars import is_business_day
from policies.schedule import next_send_time
from policies.schema import Calendar

NEW_YORK = ZoneInfo("America/New_York")
US_BUSINESS = Calendar(
    timezone="customer", business_days=True, holidays="US", send_window="09:00-17:00"
)


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=NEW_YORK)


def test_inside_the_window_on_a_business_day_is_now():
    assert next_send_time(US_BUSINESS, NEW_YORK, at(2026, 3, 17, 11, 30)) == at(2026, 3, 17, 11, 30)


def test_before_the_window_waits_for_its_start():
    assert next_send_time(US_BUSINESS, NEW_YORK, at(2026, 3, 17, 6, 0)) == at(2026, 3, 17, 9, 0)


def test_after_the_window_waits_for_the_next_business_morning():
    # Friday evening -> Monday morning.
    assert next_send_time(US_BUSINESS, NEW_YORK, at(2026, 3, 20, 17, 0)) == at(2026, 3, 23, 9, 0)


def test_skips_a_holiday():
    # Wednesday 2026-11-25 evening -> Thanksgiving Thursday is off -> Friday 11-27.
    assert next_send_time(US_BUSINESS, NEW_YORK, at(2026, 11, 25, 18, 0)) == at(2026, 11, 27, 9, 0)


def test_without_business_days_weekends_count():
    calendar = Calendar(timezone="customer", send_window="09:00-17:00")
    assert next_send_time(calendar, NEW_YORK, at(2026, 3, 21, 20, 0)) == at(2026, 3, 22, 9, 0)


@given(st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31)))
def test_always_inside_a_window_of_a_business_day_and_never_earlier(naive: datetime):
    now = naive.replace(tzinfo=NEW_YORK)
    moment = next_send_time(US_BUSINESS, NEW_YORK, now).astimezone(NEW_YORK)
    assert moment >= now
    assert is_business_day(moment.date(), "US")
    assert US_BUSINESS.send_window.start <= moment.time() < US_BUSINESS.send_window.end
