"""Calendar facts the policies rely on: IANA time zones, weekends and public holidays.

Pure lookups with no clock: safe inside a Temporal workflow. Holiday tables come from the
`holidays` package and depend only on (country, year), so caching them keeps replays
deterministic.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager, ExitStack, nullcontext
from datetime import date
from functools import lru_cache
from types import ModuleType
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    import holidays as holidays_lib

DEFAULT_WEEKEND = frozenset({5, 6})  # Saturday, Sunday


def load_zone(key: str) -> ZoneInfo:
    """The IANA zone named `key`; ValueError with a readable message if there is none."""
    if not isinstance(key, str) or not key.strip():
        raise ValueError("time zone must be an IANA name like America/New_York")
    try:
        zone = ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: a key naming a folder of the zone database, like "America".
        raise ValueError(
            f"unknown time zone {key!r}: use an IANA name like America/New_York"
        ) from None
    # Temporal's workflow sandbox hands out ZoneInfo objects wrapped in a proxy that datetime
    # refuses as a tzinfo; the zone itself is immutable, so the real object is safe to use.
    return _unproxied(zone)


def _unproxied(zone: ZoneInfo) -> ZoneInfo:
    if type(zone).__name__ != "_RestrictedProxy":  # only the sandbox makes these
        return zone
    try:
        from temporalio.worker.workflow_sandbox._restrictions import RestrictionContext
    except ImportError:  # a temporalio without it; tests/test_policies_sandbox.py would tell
        return zone
    return RestrictionContext.unwrap_if_proxied(zone)


def _temporal_workflow() -> ModuleType | None:
    """temporalio.workflow if Temporal is loaded. Code runs inside a workflow only once it is,
    so without it none of its sandbox's escape hatches are needed, and reading a policy
    (`dunwise policy check`) never pays for importing Temporal."""
    if "temporalio" not in sys.modules:
        return None
    from temporalio import workflow

    return workflow


def _passed_through() -> AbstractContextManager[object]:
    workflow = _temporal_workflow()
    return nullcontext() if workflow is None else workflow.unsafe.imports_passed_through()


def _holidays_module() -> ModuleType:
    # Temporal's workflow sandbox would re-import `holidays` for every workflow run; its tables
    # depend only on (country, year), so the one real module is shared.
    with _passed_through():
        import holidays

    return holidays


@lru_cache(maxsize=1)
def _country_codes(holidays: ModuleType) -> frozenset[str]:
    """The country codes (and aliases like UK) the `holidays` package knows, read from its
    registry: list_supported_countries() would import every country's module to list their
    subdivisions, a fifth of a second that checking a policy does not need."""
    try:
        return frozenset(holidays.registry.EntityLoader.get_country_codes())
    except AttributeError:  # a `holidays` laid out otherwise
        return frozenset(holidays.list_supported_countries())


def canonical_holiday_code(code: str) -> str:
    """Normalise a holiday calendar code: "us" -> "US", "us-ca" -> "US-CA".

    A code is a country the `holidays` package knows, optionally with one of its
    subdivisions after a dash.
    """
    holidays = _holidays_module()
    country, _, subdivision = code.strip().partition("-")
    country = country.upper()
    if country not in _country_codes(holidays):
        raise ValueError(
            f"unknown holidays country {code!r}: use a country code such as US, GB or DE"
        )
    if not subdivision:
        return country
    by_upper = {s.upper(): s for s in getattr(holidays, country).subdivisions}
    if subdivision.upper() not in by_upper:
        raise ValueError(f"{country} has no holiday subdivision {subdivision!r}")
    return f"{country}-{by_upper[subdivision.upper()]}"


@lru_cache(maxsize=1024)
def _holidays_for(code: str, year: int) -> holidays_lib.HolidayBase:
    country, _, subdivision = code.partition("-")
    holidays = _holidays_module()
    # Building a table imports the country's module and reads gettext catalogs, which the
    # workflow sandbox forbids; the result is the same on every run, so that is safe.
    with ExitStack() as unrestricted:
        unrestricted.enter_context(_passed_through())
        if (workflow := _temporal_workflow()) is not None:
            unrestricted.enter_context(workflow.unsafe.sandbox_unrestricted())
        # expand=False: a lookup must never grow the cached table with other years.
        return holidays.country_holidays(
            country, subdiv=subdivision or None, years=year, expand=False
        )


def is_business_day(day: date, holiday_code: str | None) -> bool:
    """True unless `day` is a weekend or a public holiday of the calendar.

    With a country the weekend is that country's (Friday-Saturday in some), and swapped
    working Saturdays count as business days.
    """
    if holiday_code is None:
        return day.weekday() not in DEFAULT_WEEKEND
    return _holidays_for(holiday_code, day.year).is_working_day(day)
