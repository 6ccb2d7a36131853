"""The policy language's field types, and the checks its models share.

Each type parses what finance ops write ("-3d", "12h", "10.00") and serialises back to the
same text in JSON, so a policy inside a workflow input validates back to an equal value.
Every value is bounded (see `policies.schema` for the bounds), a float is refused wherever
money or a percentage is expected, and a value quoted back in an error message is cut short
(`shown`). Nothing here reads the clock or does I/O.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)

from ledger.currencies import MAX_AMOUNT_IN_EVERY_CURRENCY

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

OFFSET_MESSAGE = "offset must look like -3d, 0d or +7d"
DURATION_MESSAGE = "duration must look like 2d, 12h or 30m"


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


class PolicyModel(BaseModel):
    """Every model of the policy language: unknown keys are refused, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def format_offset(days: int) -> str:
    return f"{days:+d}d" if days else "0d"


def refuse_duplicates(items: list[str], what: str) -> None:
    seen: set[str] = set()
    for item in items:
        if item in seen:
            raise ValueError(f"{what} {item!r} is listed twice")
        seen.add(item)
