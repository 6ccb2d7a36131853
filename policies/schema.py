"""The dunning policy language: pydantic models for the YAML that finance ops write.

This module holds the policy document: the policy, whom it applies to, its calendar and send
window, and the promise-to-pay rule. The steps are `policies.steps`; the field types (slugs,
offsets, durations, amounts) and the bounds are `policies.fields`.

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
from decimal import Decimal
from typing import Any, Literal

from pydantic import (
    Field,
    GetJsonSchemaHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema

from policies.calendars import canonical_holiday_code, load_zone
from policies.fields import (
    CUSTOMER_TIMEZONE,
    MAX_HOLIDAYS_CODE_LENGTH,
    MAX_SEGMENTS,
    MAX_STEPS,
    MAX_VERSION,
    MAX_ZONE_LENGTH,
    Duration,
    NonNegativeAmount,
    PolicyModel,
    Slug,
    format_offset,
    refuse_duplicates,
    shown,
)
from policies.priorities import PRIORITIES as PRIORITIES
from policies.priorities import Priority as Priority
from policies.steps import Step
from vocabulary import Channel as Channel

_WINDOW = re.compile(r"([0-9]{1,2}):([0-9]{2})\s*-\s*([0-9]{1,2}):([0-9]{2})")
WINDOW_MESSAGE = "send window must look like 09:00-17:00"


class SendWindow(PolicyModel):
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


class AppliesTo(PolicyModel):
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
        refuse_duplicates(segments, "segment")
        return segments


class Calendar(PolicyModel):
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


class PromiseToPayRule(PolicyModel):
    """What happens after a customer promises to pay."""

    grace: Duration = Field(
        timedelta(days=2),
        description="extra time after the promised date, like 2d",
        json_schema_extra={"default": "2d"},
    )


class EngagementRule(PolicyModel):
    """What happens when a customer reads a reminder or opens its pay link and does not pay."""

    unpaid_after: Duration = Field(
        timedelta(days=2),
        description="time after the first open or click without a payment, like 2d",
        json_schema_extra={"default": "2d"},
    )
    priority: Priority = Field("high", description="the collector task's priority then")


class Policy(PolicyModel):
    """A dunning policy: the reminder steps for an invoice, relative to its due date."""

    name: Slug
    version: int = Field(ge=1, le=MAX_VERSION, strict=True)
    applies_to: AppliesTo = Field(default_factory=AppliesTo)
    calendar: Calendar = Field(default_factory=Calendar)
    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)
    on_dispute: Literal["pause", "continue"] = "pause"
    on_promise_to_pay: PromiseToPayRule = Field(default_factory=PromiseToPayRule)
    on_engagement_without_payment: EngagementRule = Field(default_factory=EngagementRule)

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
                    {"at": format_offset(step.at), "previous": format_offset(before.at)},
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
