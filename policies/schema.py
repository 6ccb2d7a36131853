"""The dunning policy language: pydantic models for the YAML that finance ops write.

Every model forbids unknown keys, so a typo is an error rather than a silently ignored
setting. Policies travel inside Temporal workflow inputs, so each field's JSON form
validates back to an equal value; nothing here reads the clock or does I/O on import.

Money and percentages are Decimal, never float: write them as quoted strings ("10.00")
or integers. The YAML loader reads an unquoted 10.50 from its exact text, but a Python
float handed to these models is refused because it has already lost that text.

Everything has a stated bound, so no value can overflow later: names and other slugs at
most 64 characters (the ledger's columns), a version up to 2^31-1, offsets and durations
up to ten years, at most 100 steps and segments, and amounts up to the most every currency
holds in the ledger's 64-bit minor units. Values quoted back in messages are cut short.
"""

from __future__ import annotations

import re
from datetime import time, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema

from ledger.currencies import MAX_AMOUNT_IN_EVERY_CURRENCY
from policies.calendars import canonical_holiday_code, load_zone
from policies.money import to_minor
from policies.priorities import PRIORITIES as PRIORITIES
from policies.priorities import Priority as Priority
from vocabulary import Channel as Channel

CUSTOMER_TIMEZONE = "customer"
MAX_OFFSET_DAYS = 3650  # ten years: anything longer is a typo, and keeps dates in range
MAX_DURATION = timedelta(days=MAX_OFFSET_DAYS)
MAX_SLUG_LENGTH = 64  # policy_name and the like are 64 characters in the ledger
MAX_VERSION = 2**31 - 1  # invoice.policy_version is a 32-bit column
MAX_STEPS = 100
MAX_SEGMENTS = 100
MAX_ZONE_LENGTH = 64
MAX_HOLIDAYS_CODE_LENGTH = 16
_MAX_NUMBER_DIGITS = 9  # in an offset or duration; the bounds above need at most 7
_SHOWN_LENGTH = 40

_SLUG = r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$"
_OFFSET = re.compile(r"([+-]?)([0-9]+)d")
_DURATION = re.compile(r"([0-9]+)([dhm])")
_DURATION_UNITS = {"d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1)}
_WINDOW = re.compile(r"([0-9]{1,2}):([0-9]{2})\s*-\s*([0-9]{1,2}):([0-9]{2})")

OFFSET_MESSAGE = "offset must look like -3d, 0d or +7d"
DURATION_MESSAGE = "duration must look like 2d, 12h or 30m"
WINDOW_MESSAGE = "send window must look like 09:00-17:00"


# --- field types -------------------------------------------------------------------------


def shown(value: object) -> str:
    """`value` as repr() for a message, cut short if long."""
    text = repr(value)
    return text if len(text) <= _SHOWN_LENGTH else f"{text[:_SHOWN_LENGTH]}..."


def _check_slug(value: str) -> str:
    if len(value) > MAX_SLUG_LENGTH:
        raise ValueError(f"{shown(value)} is longer than {MAX_SLUG_LENGTH} characters")
    if not re.fullmatch(_SLUG, value):
        raise ValueError(
            f"{shown(value)} is not a slug: use lowercase letters, digits, '-' or '_' "
            "(like due_today or mid-market)"
        )
    return value


Slug = Annotated[
    str,
    AfterValidator(_check_slug),
    WithJsonSchema({"type": "string", "pattern": _SLUG, "maxLength": MAX_SLUG_LENGTH}),
]


def _parse_offset(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        days = value
    elif (
        isinstance(value, str)
        and (match := _OFFSET.fullmatch(value.strip()))
        and len(match[2]) <= _MAX_NUMBER_DIGITS
    ):
        sign, digits = match.groups()
        days = -int(digits) if sign == "-" else int(digits)
    else:
        raise ValueError(f"{OFFSET_MESSAGE}, not {shown(value)}")
    if abs(days) > MAX_OFFSET_DAYS:
        raise ValueError(
            f"offset {shown(value)} is more than {MAX_OFFSET_DAYS} days from the due date"
        )
    return days


DayOffset = Annotated[
    int,
    BeforeValidator(_parse_offset),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer"},
                {"type": "string", "pattern": r"^[+-]?\d+d$"},
            ],
            "description": "days from the due date: -3d before, 0d on, +7d after",
        }
    ),
]


def _parse_duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        duration = value
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
        # Bounded before multiplying: 99999999999d is beyond what a timedelta holds.
        if len(match[1]) > _MAX_NUMBER_DIGITS:
            raise ValueError(
                f"duration {shown(value)} is longer than {MAX_OFFSET_DAYS} days (ten years)"
            )
        duration = int(match[1]) * _DURATION_UNITS[match[2]]
    else:
        raise ValueError(f"{DURATION_MESSAGE}, not {shown(value)}")
    if duration < timedelta(0) or duration % timedelta(minutes=1):
        raise ValueError(f"{DURATION_MESSAGE}: a whole, non-negative number of minutes")
    if duration > MAX_DURATION:
        raise ValueError(
            f"duration {shown(value) if isinstance(value, str) else duration} is longer than "
            f"{MAX_OFFSET_DAYS} days (ten years)"
        )
    return duration


def _format_duration(value: timedelta) -> str:
    # The largest unit that is exact, so "2d" stays "2d" and 36h stays "36h".
    for unit in ("d", "h", "m"):
        count, rest = divmod(value, _DURATION_UNITS[unit])
        if not rest:
            return f"{count}{unit}"
    raise ValueError(f"{value} is not a whole number of minutes")  # refused on input


Duration = Annotated[
    timedelta,
    BeforeValidator(_parse_duration),
    PlainSerializer(_format_duration, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": r"^\d+[dhm]$"}),
]


def _refuse_float(value: Any) -> Any:
    if isinstance(value, float):
        raise ValueError(
            f'write amounts as quoted decimal strings like "{value}": floats are inexact'
        )
    return value


def _within_money_limit(value: Decimal) -> Decimal:
    # A policy does not know its invoices' currency: the bound holds in all of them.
    if value > MAX_AMOUNT_IN_EVERY_CURRENCY:
        text = str(value)
        text = text if len(text) <= _SHOWN_LENGTH else f"{text[:_SHOWN_LENGTH]}..."
        raise ValueError(
            f"{text} is more than the largest amount the ledger holds in every currency "
            f"({MAX_AMOUNT_IN_EVERY_CURRENCY})"
        )
    return value


# Bounds come before the float check so they show in the JSON Schema.
NonNegativeAmount = Annotated[
    Decimal, Field(ge=0), BeforeValidator(_refuse_float), AfterValidator(_within_money_limit)
]
PositiveAmount = Annotated[
    Decimal, Field(gt=0), BeforeValidator(_refuse_float), AfterValidator(_within_money_limit)
]
Percent = Annotated[Decimal, Field(gt=0, le=100), BeforeValidator(_refuse_float)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- models ------------------------------------------------------------------------------


class SendWindow(_Model):
    """Local hours in which messages may go out; written "09:00-17:00"."""

    start: time
    end: time

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        match = _WINDOW.fullmatch(value.strip())
        if not match:
            raise ValueError(f"{WINDOW_MESSAGE}, not {shown(value)}")
        h1, m1, h2, m2 = (int(part) for part in match.groups())
        if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
            raise ValueError(f"{WINDOW_MESSAGE}: {shown(value)} is not a time of day")
        return {"start": time(h1, m1), "end": time(h2, m2)}

    @model_validator(mode="after")
    def _check(self) -> SendWindow:
        for moment in (self.start, self.end):
            if moment.tzinfo is not None or moment.second or moment.microsecond:
                raise ValueError("send window times are local wall-clock hours and minutes")
        if self.start >= self.end:
            raise ValueError(f"send window must end after it starts, not {self}")
        return self

    @model_serializer(mode="wrap", when_used="json")
    def _to_text(self, handler: Any) -> str:
        return str(self)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "pattern": r"^\d{1,2}:\d{2}\s*-\s*\d{1,2}:\d{2}$",
            "description": "local hours, like 09:00-17:00",
        }

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def _default_window() -> SendWindow:
    return SendWindow(start=time(9), end=time(17))


class AppliesTo(_Model):
    """Which invoices a policy is for."""

    segments: list[Slug] = Field(
        default_factory=list,
        max_length=MAX_SEGMENTS,
        description="customer segments; empty means any segment",
    )
    min_balance: NonNegativeAmount = Field(
        Decimal(0), description='smallest open balance, in major units, like "10.00"'
    )

    @field_validator("segments")
    @classmethod
    def _unique_segments(cls, segments: list[str]) -> list[str]:
        _refuse_duplicates(segments, "segment")
        return segments


class Calendar(_Model):
    """When messages may go out."""

    timezone: str = Field(
        CUSTOMER_TIMEZONE,
        max_length=MAX_ZONE_LENGTH,
        description="'customer' for the customer's own zone, or an IANA zone name",
    )
    business_days: bool = Field(
        False, description="move steps off weekends and holidays to the next business day"
    )
    holidays: str | None = Field(
        None,
        max_length=MAX_HOLIDAYS_CODE_LENGTH,
        description="public holidays of this country code (like US or GB-SCT)",
    )
    send_window: SendWindow = Field(default_factory=_default_window)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value != CUSTOMER_TIMEZONE:
            load_zone(value)
        return value

    @field_validator("holidays")
    @classmethod
    def _known_country(cls, value: str | None) -> str | None:
        return None if value is None else canonical_holiday_code(value)

    @model_validator(mode="after")
    def _holidays_need_business_days(self) -> Calendar:
        if self.holidays is not None and not self.business_days:
            raise ValueError("holidays only apply with business_days: true")
        return self


class LateFee(_Model):
    """A fee added to the balance when the step runs: a percentage or a fixed amount."""

    percent: Percent | None = Field(None, description="percent of the balance")
    fixed: PositiveAmount | None = Field(None, description='amount in major units, like "25.00"')

    @model_validator(mode="after")
    def _exactly_one(self) -> LateFee:
        if (self.percent is None) == (self.fixed is None):
            raise ValueError("a late fee needs exactly one of percent or fixed")
        return self


class Escalation(_Model):
    """Hand the invoice to a human collector."""

    @property
    def breach_queue(self) -> str:
        return self.supervisor_queue or f"{self.queue}-supervisor"

    queue: Slug
    supervisor_queue: Slug | None = Field(
        None, description="where a task past its SLA moves; default <queue>-supervisor"
    )
    priority: Priority = "normal"
    sla: Duration = Field(
        timedelta(days=2),
        description="time the collector has to act, like 2d or 12h",
        json_schema_extra={"default": "2d"},
    )

    @field_validator("sla")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("sla must be longer than zero")
        return value


class Step(_Model):
    """One step of the dunning sequence: send a reminder, escalate, or both."""

    at: DayOffset
    channels: list[Channel] = Field(default_factory=list)
    template: Slug | None = Field(None, description="message template name")
    late_fee: LateFee | None = None
    escalate: Escalation | None = None

    @field_validator("channels")
    @classmethod
    def _unique_channels(cls, channels: list[str]) -> list[str]:
        _refuse_duplicates(channels, "channel")
        return channels

    @model_validator(mode="after")
    def _does_something(self) -> Step:
        if self.channels and self.template is None:
            raise ValueError("a step with channels needs a template")
        if self.template is not None and not self.channels:
            raise ValueError("a step with a template needs channels")
        if not self.sends and self.escalate is None:
            raise ValueError("a step must send (channels and template) or escalate")
        return self

    @property
    def sends(self) -> bool:
        return bool(self.channels) and self.template is not None


class PromiseToPayRule(_Model):
    """What happens after a customer promises to pay."""

    grace: Duration = Field(
        timedelta(days=2),
        description="extra time after the promised date, like 2d",
        json_schema_extra={"default": "2d"},
    )


class Policy(_Model):
    """A dunning policy: the reminder steps for an invoice, relative to its due date."""

    name: Slug
    version: int = Field(ge=1, le=MAX_VERSION, strict=True)
    applies_to: AppliesTo = Field(default_factory=AppliesTo)
    calendar: Calendar = Field(default_factory=Calendar)
    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)
    on_dispute: Literal["pause", "continue"] = "pause"
    on_promise_to_pay: PromiseToPayRule = Field(default_factory=PromiseToPayRule)

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[Step]) -> list[Step]:
        # One error per step out of order, each located at that step's `at`.
        errors = [
            InitErrorDetails(
                type=PydanticCustomError(
                    "steps_order",
                    "steps must be in increasing order of `at`: "
                    "{at} is not after the step before ({previous})",
                    {"at": _format_offset(step.at), "previous": _format_offset(before.at)},
                ),
                loc=(index, "at"),
                input=step.at,
            )
            for index, (before, step) in enumerate(zip(steps, steps[1:], strict=False), start=1)
            if step.at <= before.at
        ]
        if errors:
            raise ValidationError.from_exception_data("steps", errors)
        return steps


def _format_offset(days: int) -> str:
    return f"{days:+d}d" if days else "0d"


def _refuse_duplicates(items: list[str], what: str) -> None:
    seen: set[str] = set()
    for item in items:
        if item in seen:
            raise ValueError(f"{what} {item!r} is listed twice")
        seen.add(item)


# --- money ---------------------------------------------------------------------------------


def late_fee_minor(fee: LateFee, balance_minor: int, currency_exponent: int = 2) -> int:
    """The fee in minor units: a percentage of the balance rounded half-up, or the fixed amount."""
    if fee.fixed is not None:
        return to_minor(fee.fixed, currency_exponent)
    if balance_minor <= 0:
        return 0
    assert fee.percent is not None  # guaranteed by LateFee's validator
    with localcontext() as ctx:
        ctx.prec = 100  # exact for any realistic balance and percentage
        exact = Decimal(balance_minor) * fee.percent / 100
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))
