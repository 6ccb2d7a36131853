"""The steps of a dunning policy: what each one does when it falls due.

A step sends a reminder (channels and a template, both or neither), escalates to a
collector, or both; either may charge a late fee. Channels are listed once each. A late fee
is a percentage of the balance or a fixed amount, exactly one of them, and comes to whole
minor units of the invoice's currency (`late_fee_minor`).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext

from pydantic import Field, field_validator, model_validator

from policies.fields import (
    DayOffset,
    Duration,
    Percent,
    PolicyModel,
    PositiveAmount,
    Slug,
    refuse_duplicates,
)
from policies.money import to_minor
from policies.priorities import Priority
from vocabulary import Channel


class LateFee(PolicyModel):
    """A fee added to the balance when the step runs: a percentage or a fixed amount."""

    percent: Percent | None = Field(None, description="percent of the balance")
    fixed: PositiveAmount | None = Field(None, description='amount in major units, like "25.00"')

    @model_validator(mode="after")
    def _exactly_one(self) -> LateFee:
        if (self.percent is None) == (self.fixed is None):
            raise ValueError("a late fee needs exactly one of percent or fixed")
        return self


class Escalation(PolicyModel):
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


class Step(PolicyModel):
    """One step of the dunning sequence: send a reminder, escalate, or both."""

    at: DayOffset
    channels: list[Channel] = Field(default_factory=list)
    template: Slug | None = Field(None, description="message template name")
    late_fee: LateFee | None = None
    escalate: Escalation | None = None

    @field_validator("channels")
    @classmethod
    def _unique_channels(cls, channels: list[str]) -> list[str]:
        refuse_duplicates(channels, "channel")
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
