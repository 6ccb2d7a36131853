"""The policy models: what they accept, what they refuse, and that they round-trip."""

from __future__ import annotations

import math
from datetime import time, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from temporalio.contrib.pydantic import pydantic_data_converter

from policies.money import from_minor, to_minor
from policies.schema import AppliesTo, Calendar, Policy, PromiseToPayRule, SendWindow
from policies.steps import Escalation, LateFee, Step, late_fee_minor

POLICY_DIR = Path(__file__).resolve().parent.parent / "policies"
SHIPPED = sorted(POLICY_DIR.glob("*.yaml"))

STANDARD_YAML = """\
name: standard
version: 3
applies_to: {segments: [smb, mid-market], min_balance: "10.00"}
calendar: {timezone: customer, business_days: true, holidays: US, send_window: "09:00-17:00"}
steps:
  - {at: -3d, channels: [email], template: courtesy}
  - {at: 0d, channels: [email, sms], template: due_today}
  - {at: +7d, channels: [email], template: overdue_friendly}
  - {at: +14d, channels: [email, sms], template: overdue_firm, late_fee: {percent: "1.5"}}
  - {at: +30d, escalate: {queue: collections, priority: high, sla: 2d}}
on_dispute: pause
on_promise_to_pay: {grace: 2d}
"""


def minimal(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "test",
        "version": 1,
        "steps": [{"at": "0d", "channels": ["email"], "template": "due_today"}],
    }
    data.update(overrides)
    return data


def errors_of(model: type, data: Any) -> list[tuple[tuple[Any, ...], str]]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return [(tuple(e["loc"]), e["msg"]) for e in caught.value.errors()]


# --- hypothesis strategies (also used by the schedule tests) ----------------------------------

slugs = st.builds(
    str.__add__,
    st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10),
    st.sampled_from(["", "-market", "_today", "-2"]),
)
cents = st.integers(1, 50000).map(lambda amount: str(Decimal(amount).scaleb(-2)))
durations = st.builds(
    lambda count, unit: f"{count}{unit}", st.integers(1, 400), st.sampled_from("dhm")
)
HOLIDAY_COUNTRIES = ["US", "GB", "DE", "FR", "CA", "JP", "IL", "AE", "US-CA", "GB-SCT"]
ZONES = [
    "UTC",
    "America/Los_Angeles",
    "America/New_York",
    "America/Sao_Paulo",
    "America/St_Johns",
    "America/Havana",
    "America/Santiago",
    "Europe/London",
    "Europe/Berlin",
    "Africa/Cairo",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Pacific/Auckland",
    "Pacific/Chatham",
]


@st.composite
def windows(draw: st.DrawFn) -> str:
    start = draw(st.integers(0, 23 * 60 + 58))
    end = draw(st.integers(start + 1, 23 * 60 + 59))
    return f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"


@st.composite
def calendars(draw: st.DrawFn) -> dict[str, Any]:
    business_days = draw(st.booleans())
    return {
        "timezone": draw(st.sampled_from(["customer", *ZONES])),
        "business_days": business_days,
        "holidays": draw(st.sampled_from([None, *HOLIDAY_COUNTRIES])) if business_days else None,
        "send_window": draw(windows()),
    }


@st.composite
def steps(draw: st.DrawFn) -> list[dict[str, Any]]:
    offsets = sorted(draw(st.sets(st.integers(-60, 120), min_size=1, max_size=8)))
    result = []
    for offset in offsets:
        step: dict[str, Any] = {"at": draw(st.sampled_from([offset, f"{offset:+d}d"]))}
        kind = draw(st.sampled_from(["send", "escalate", "both"]))
        if kind != "escalate":
            step["channels"] = draw(st.sampled_from([["email"], ["sms"], ["email", "sms"]]))
            step["template"] = draw(slugs)
        if kind != "send":
            step["escalate"] = {
                "queue": draw(slugs),
                "priority": draw(st.sampled_from(["low", "normal", "high", "urgent"])),
                "sla": draw(durations),
            }
        if draw(st.booleans()):
            step["late_fee"] = draw(
                st.one_of(
                    st.integers(1, 10000).map(lambda p: {"percent": str(Decimal(p).scaleb(-2))}),
                    cents.map(lambda amount: {"fixed": amount}),
                )
            )
        result.append(step)
    return result


@st.composite
def policy_data(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "name": draw(slugs),
        "version": draw(st.integers(1, 1000)),
        "applies_to": {
            "segments": sorted(draw(st.sets(slugs, max_size=3))),
            "min_balance": draw(cents),
        },
        "calendar": draw(calendars()),
        "steps": draw(steps()),
        "on_dispute": draw(st.sampled_from(["pause", "continue"])),
        "on_promise_to_pay": {"grace": draw(st.sampled_from(["0d", "2d", "36h", "90m"]))},
    }


policies = policy_data().map(Policy.model_validate)


# --- the shipped standard policy ----------------------------------------------------------------


def test_standard_yaml_is_shipped_exactly() -> None:
    assert (POLICY_DIR / "standard.yaml").read_text(encoding="utf-8") == STANDARD_YAML


def test_standard_policy_is_accepted_with_its_meaning() -> None:
    policy = Policy.model_validate(yaml.safe_load(STANDARD_YAML))
    assert policy.name == "standard"
    assert policy.version == 3
    assert policy.applies_to == AppliesTo(segments=["smb", "mid-market"], min_balance="10.00")
    assert policy.applies_to.min_balance == Decimal("10.00")
    assert policy.calendar == Calendar(
        timezone="customer",
        business_days=True,
        holidays="US",
        send_window=SendWindow(start=time(9), end=time(17)),
    )
    assert [step.at for step in policy.steps] == [-3, 0, 7, 14, 30]
    assert [step.sends for step in policy.steps] == [True, True, True, True, False]
    assert policy.steps[1].channels == ["email", "sms"]
    assert policy.steps[3].late_fee == LateFee(percent=Decimal("1.5"))
    assert policy.steps[4].escalate == Escalation(
        queue="collections", priority="high", sla=timedelta(days=2)
    )
    assert policy.on_dispute == "pause"
    assert policy.on_promise_to_pay == PromiseToPayRule(grace=timedelta(days=2))


def test_defaults() -> None:
    policy = Policy.model_validate(minimal())
    assert policy.applies_to == AppliesTo(segments=[], min_balance=Decimal(0))
    assert policy.calendar.timezone == "customer"
    assert policy.calendar.business_days is False
    assert policy.calendar.holidays is None
    assert str(policy.calendar.send_window) == "09:00-17:00"
    assert policy.on_dispute == "pause"
    assert policy.on_promise_to_pay.grace == timedelta(days=2)
    assert Escalation(queue="collections").sla == timedelta(days=2)
    assert Escalation(queue="collections").priority == "normal"


def test_models_are_frozen() -> None:
    policy = Policy.model_validate(minimal())
    with pytest.raises(ValidationError):
        policy.version = 2  # type: ignore[misc]


# --- round trips ----------------------------------------------------------------------------------


def assert_round_trips(policy: Policy) -> None:
    assert Policy.model_validate_json(policy.model_dump_json()) == policy
    assert Policy.model_validate(policy.model_dump(mode="json")) == policy
    assert Policy.model_validate(policy.model_dump()) == policy


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: path.name)
def test_shipped_policies_round_trip(path: Path) -> None:
    assert_round_trips(Policy.model_validate(yaml.safe_load(path.read_text(encoding="utf-8"))))


@settings(max_examples=150, deadline=None)
@given(policies)
def test_any_policy_round_trips(policy: Policy) -> None:
    assert_round_trips(policy)


def test_json_form_is_readable() -> None:
    dumped = Policy.model_validate(yaml.safe_load(STANDARD_YAML)).model_dump(mode="json")
    assert dumped["applies_to"]["min_balance"] == "10.00"
    assert dumped["calendar"]["send_window"] == "09:00-17:00"
    assert dumped["steps"][3]["late_fee"]["percent"] == "1.5"
    assert dumped["steps"][4]["escalate"]["sla"] == "2d"
    assert dumped["on_promise_to_pay"]["grace"] == "2d"


async def test_temporal_pydantic_converter_round_trip() -> None:
    policy = Policy.model_validate(yaml.safe_load(STANDARD_YAML))
    payloads = await pydantic_data_converter.encode([policy])
    assert await pydantic_data_converter.decode(payloads, [Policy]) == [policy]


# --- steps ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "days"),
    [("-3d", -3), ("0d", 0), ("+7d", 7), ("7d", 7), ("-0d", 0), (" +14d ", 14), (30, 30), (-3, -3)],
)
def test_offsets(written: Any, days: int) -> None:
    assert Step(at=written, escalate={"queue": "collections"}).at == days


@pytest.mark.parametrize(
    "written", ["7", "3 days", "d", "+-3d", "7D", "1w", True, 7.5, None, "99999d"]
)
def test_bad_offsets(written: Any) -> None:
    [(loc, message)] = errors_of(Step, {"at": written, "escalate": {"queue": "collections"}})
    assert loc == ("at",)
    assert "offset" in message


def test_step_must_send_or_escalate() -> None:
    assert Step(at=0, channels=["email"], template="due_today").sends
    assert not Step(at=0, escalate={"queue": "collections"}).sends
    assert Step(at=0, channels=["sms"], template="firm", escalate={"queue": "collections"}).sends
    cases = {
        "a step with channels needs a template": {"at": 0, "channels": ["email"]},
        "a step with a template needs channels": {"at": 0, "template": "due_today"},
        "a step must send (channels and template) or escalate": {"at": 0},
    }
    for expected, data in cases.items():
        [(loc, message)] = errors_of(Step, data)
        assert loc == () and message == f"Value error, {expected}"


def test_channels() -> None:
    [(loc, message)] = errors_of(Step, {"at": 0, "channels": ["email", "fax"], "template": "t"})
    assert loc == ("channels", 1)
    assert message == "Input should be 'email' or 'sms'"
    [(loc, message)] = errors_of(Step, {"at": 0, "channels": ["sms", "sms"], "template": "t"})
    assert loc == ("channels",) and "listed twice" in message


@pytest.mark.parametrize("template", ["Due Today", "due today", "-due", "due_", "", "../x"])
def test_template_must_be_a_slug(template: str) -> None:
    [(loc, message)] = errors_of(Step, {"at": 0, "channels": ["email"], "template": template})
    assert loc == ("template",) and "slug" in message


def test_steps_must_increase_and_every_offender_is_reported() -> None:
    data = minimal(
        steps=[
            {"at": "1d", "escalate": {"queue": "a"}},
            {"at": "1d", "escalate": {"queue": "b"}},
            {"at": "5d", "escalate": {"queue": "c"}},
            {"at": "-2d", "escalate": {"queue": "d"}},
        ]
    )
    assert errors_of(Policy, data) == [
        (
            ("steps", 1, "at"),
            "steps must be in increasing order of `at`: +1d is not after the step before (+1d)",
        ),
        (
            ("steps", 3, "at"),
            "steps must be in increasing order of `at`: -2d is not after the step before (+5d)",
        ),
    ]


def test_steps_cannot_be_empty() -> None:
    [(loc, _)] = errors_of(Policy, minimal(steps=[]))
    assert loc == ("steps",)


# --- late fees, escalation, promises ---------------------------------------------------------------


def test_late_fee_needs_exactly_one_kind() -> None:
    assert LateFee(fixed="25.00").fixed == Decimal("25.00")
    for data in ({}, {"percent": "1", "fixed": "2.00"}):
        [(_, message)] = errors_of(LateFee, data)
        assert "exactly one of percent or fixed" in message


@pytest.mark.parametrize("percent", ["0", "-1", "100.01", "abc"])
def test_late_fee_percent_bounds(percent: str) -> None:
    [(loc, _)] = errors_of(LateFee, {"percent": percent})
    assert loc == ("percent",)


def test_late_fee_percent_may_be_100() -> None:
    assert LateFee(percent="100").percent == Decimal(100)


@pytest.mark.parametrize("amount", [1.5, 10.0])
def test_floats_are_refused_for_money(amount: float) -> None:
    [(loc, message)] = errors_of(LateFee, {"fixed": amount})
    assert loc == ("fixed",) and "quoted decimal strings" in message
    [(loc, _)] = errors_of(AppliesTo, {"min_balance": amount})
    assert loc == ("min_balance",)


@pytest.mark.parametrize(
    ("written", "duration"),
    [
        ("2d", timedelta(days=2)),
        ("12h", timedelta(hours=12)),
        ("30m", timedelta(minutes=30)),
        (timedelta(hours=36), timedelta(hours=36)),
    ],
)
def test_escalation_sla(written: Any, duration: timedelta) -> None:
    assert Escalation(queue="collections", sla=written).sla == duration


@pytest.mark.parametrize("written", ["0m", "2 days", "2", "1w", "-1d", 48, timedelta(seconds=5)])
def test_bad_sla(written: Any) -> None:
    [(loc, _)] = errors_of(Escalation, {"queue": "collections", "sla": written})
    assert loc == ("sla",)


def test_durations_serialize_in_the_largest_exact_unit() -> None:
    for written, dumped in [
        ("2d", "2d"),
        ("48h", "2d"),
        ("36h", "36h"),
        ("90m", "90m"),
        ("0m", "0d"),
    ]:
        assert PromiseToPayRule(grace=written).model_dump(mode="json") == {"grace": dumped}


def test_escalation_priority_and_queue() -> None:
    [(loc, _)] = errors_of(Escalation, {"queue": "collections", "priority": "highest"})
    assert loc == ("priority",)
    [(loc, _)] = errors_of(Escalation, {"queue": "Key Accounts"})
    assert loc == ("queue",)


# --- calendar -------------------------------------------------------------------------------------


def test_calendar_zones() -> None:
    assert Calendar(timezone="Europe/Berlin").timezone == "Europe/Berlin"
    for zone in ["Mars/Olympus", "America", "", "../../etc/passwd", "customers"]:
        [(loc, message)] = errors_of(Calendar, {"timezone": zone})
        assert loc == ("timezone",) and "time zone" in message


def test_calendar_holidays() -> None:
    assert Calendar(business_days=True, holidays="us").holidays == "US"
    assert Calendar(business_days=True, holidays="us-ca").holidays == "US-CA"
    assert Calendar(business_days=True, holidays="NO").holidays == "NO"
    for code, expected in [("XX", "unknown holidays country"), ("US-ZZ", "no holiday subdivision")]:
        [(loc, message)] = errors_of(Calendar, {"business_days": True, "holidays": code})
        assert loc == ("holidays",) and expected in message
    [(loc, message)] = errors_of(Calendar, {"holidays": "US"})
    assert loc == () and "business_days: true" in message


@pytest.mark.parametrize(
    ("written", "start", "end"),
    [
        ("09:00-17:00", time(9), time(17)),
        ("8:30 - 18:00", time(8, 30), time(18)),
        ("00:00-23:59", time(0), time(23, 59)),
    ],
)
def test_send_window(written: str, start: time, end: time) -> None:
    window = SendWindow.model_validate(written)
    assert (window.start, window.end) == (start, end)
    assert SendWindow(start=start, end=end) == window


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("17:00-09:00", "must end after it starts"),
        ("09:00-09:00", "must end after it starts"),
        ("9-5", "must look like 09:00-17:00"),
        ("25:00-26:00", "not a time of day"),
        ("09:00", "must look like 09:00-17:00"),
        ("09:60-10:00", "not a time of day"),
    ],
)
def test_bad_send_window(written: str, expected: str) -> None:
    [(loc, message)] = errors_of(Calendar, {"send_window": written})
    assert loc == ("send_window",) and expected in message


def test_send_window_refuses_seconds() -> None:
    [(_, message)] = errors_of(SendWindow, {"start": time(9, 0, 30), "end": time(17)})
    assert "hours and minutes" in message


# --- applies_to and the policy itself ----------------------------------------------------------------


def test_applies_to() -> None:
    assert AppliesTo(min_balance=10).min_balance == Decimal(10)
    [(loc, _)] = errors_of(AppliesTo, {"min_balance": "-1.00"})
    assert loc == ("min_balance",)
    [(loc, message)] = errors_of(AppliesTo, {"segments": ["smb", "smb"]})
    assert loc == ("segments",) and "listed twice" in message


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        (minimal(nmae="x"), ("nmae",)),
        (minimal(applies_to={"segment": ["smb"]}), ("applies_to", "segment")),
        (minimal(calendar={"time_zone": "UTC"}), ("calendar", "time_zone")),
        (
            minimal(steps=[{"at": 0, "channels": ["email"], "tempalte": "x"}]),
            ("steps", 0, "tempalte"),
        ),
        (
            minimal(steps=[{"at": 0, "escalate": {"queue": "q", "sla2": "1d"}}]),
            ("steps", 0, "escalate", "sla2"),
        ),
        (
            minimal(steps=[{"at": 0, "escalate": {"queue": "q"}, "late_fee": {"pct": "1"}}]),
            ("steps", 0, "late_fee", "pct"),
        ),
        (minimal(on_promise_to_pay={"grace": "1d", "days": 2}), ("on_promise_to_pay", "days")),
    ],
)
def test_unknown_keys_are_errors(data: dict[str, Any], loc: tuple[Any, ...]) -> None:
    assert (loc, "Extra inputs are not permitted") in errors_of(Policy, data)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "Standard Policy"),
        ("version", 0),
        ("version", "3"),
        ("version", True),
        ("on_dispute", "ignore"),
    ],
)
def test_bad_policy_fields(field: str, value: Any) -> None:
    [(loc, _)] = errors_of(Policy, minimal(**{field: value}))
    assert loc == (field,)


# --- money ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("percent", "balance", "fee"),
    [
        ("1.5", 100000, 1500),
        ("1.5", 1050, 16),
        ("1.5", 1030, 15),
        ("0.5", 100, 1),
        ("0.5", 300, 2),
        ("0.5", 99, 0),
        ("100", 12345, 12345),
        ("1.5", 0, 0),
        ("1.5", -500, 0),
    ],
)
def test_late_fee_percent_rounds_half_up(percent: str, balance: int, fee: int) -> None:
    assert late_fee_minor(LateFee(percent=percent), balance) == fee


@given(st.decimals("0.001", "100", places=3), st.integers(0, 10**15))
def test_late_fee_percent_matches_exact_arithmetic(percent: Decimal, balance: int) -> None:
    exact = Fraction(balance) * Fraction(percent) / 100
    assert late_fee_minor(LateFee(percent=percent), balance) == math.floor(exact + Fraction(1, 2))


def test_late_fee_fixed() -> None:
    assert late_fee_minor(LateFee(fixed="25.00"), 100000) == 2500
    assert late_fee_minor(LateFee(fixed="25"), 0, currency_exponent=0) == 25
    assert late_fee_minor(LateFee(fixed="1.5"), 100, currency_exponent=3) == 1500
    with pytest.raises(ValueError, match="more decimals than the currency allows"):
        late_fee_minor(LateFee(fixed="2.50"), 100, currency_exponent=0)


@pytest.mark.parametrize(
    ("amount", "exponent", "minor"),
    [
        ("12.34", 2, 1234),
        (Decimal("12.3"), 2, 1230),
        ("12", 2, 1200),
        (" 7.00 ", 2, 700),
        ("25.00", 0, 25),
        ("1.234", 3, 1234),
        ("-1.50", 2, -150),
        (5, 2, 500),
        ("123456789012345678901234567890.12", 2, 12345678901234567890123456789012),
    ],
)
def test_to_minor(amount: Any, exponent: int, minor: int) -> None:
    assert to_minor(amount, exponent) == minor
    assert from_minor(minor, exponent) == Decimal(str(amount).strip())


def test_to_minor_refuses_what_it_cannot_represent() -> None:
    with pytest.raises(
        ValueError, match=r"12\.345 has more decimals than the currency allows \(at most 2"
    ):
        to_minor("12.345")
    with pytest.raises(ValueError, match="no decimal places"):
        to_minor("5.5", 0)
    with pytest.raises(ValueError, match="not a decimal amount"):
        to_minor("12,34")
    with pytest.raises(ValueError, match="not a finite amount"):
        to_minor("Infinity")
    with pytest.raises(TypeError, match="float"):
        to_minor(12.34)  # type: ignore[arg-type]


@given(st.integers(-(10**20), 10**20), st.integers(0, 4))
def test_to_minor_inverts_from_minor(minor: int, exponent: int) -> None:
    assert to_minor(from_minor(minor, exponent), exponent) == minor
    assert to_minor(str(from_minor(minor, exponent)), exponent) == minor


def test_half_up_is_not_bankers_rounding() -> None:
    # Decimal rounds half-even by default: 2.5 would become 2.
    assert late_fee_minor(LateFee(percent="50"), 5) == 3
    assert late_fee_minor(LateFee(percent="50"), 7) == 4
