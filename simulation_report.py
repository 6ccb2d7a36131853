"""What a what-if simulation returns, and how it reads for finance ops.

Events are the invoices' timeline entries (and refused payments), each at its moment in the
customer's timezone, to the minute; amounts are formatted in the invoice's currency.
`format_timeline` lists them day by day and ends with a summary.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from activities.currency import format_money
from ledger.import_rows import InvoiceRow
from workflows.models import InvoiceState, Stage, TimelineEntry


@dataclass(frozen=True)
class SimulationEvent:
    invoice: str
    at: datetime  # in the customer's timezone
    event: str
    channel: str | None
    template: str | None
    detail: str
    amount: str | None

    def as_json(self) -> str:
        record = asdict(self)
        record["at"] = self.at.isoformat()
        return json.dumps(record)


@dataclass(frozen=True)
class SimulationResult:
    events: list[SimulationEvent]
    final_states: list[InvoiceState]
    outbox: Path


def timeline_event(
    number: str, entry: TimelineEntry, row: InvoiceRow, currency: str
) -> SimulationEvent:
    return SimulationEvent(
        invoice=number,
        at=entry.at.astimezone(ZoneInfo(row.timezone)).replace(second=0, microsecond=0),
        event=entry.event,
        channel=entry.channel,
        template=entry.template,
        detail=entry.detail,
        amount=format_money(entry.amount_minor, currency)
        if entry.amount_minor is not None
        else None,
    )


def format_timeline(result: SimulationResult) -> str:
    """A readable, day-by-day timeline for finance ops, with a summary."""
    lines: list[str] = []
    current_day: date | None = None
    for event in result.events:
        day = event.at.date()
        if day != current_day:
            lines.append("")
            lines.append(day.strftime("%a %Y-%m-%d"))
            current_day = day
        what = event.event.replace("_", " ")
        if event.channel:
            what += f" by {event.channel}"
        if event.template:
            what += f" ({event.template})"
        extra = " ".join(part for part in (event.amount, event.detail) if part)
        lines.append(f"  {event.at:%H:%M %Z}  {event.invoice:<14} {what:<38} {extra}".rstrip())
    lines.append("")
    lines.append(_summary(result))
    return "\n".join(lines).lstrip("\n")


def _summary(result: SimulationResult) -> str:
    counts: dict[str, int] = {}
    for event in result.events:
        key = event.event + (f" by {event.channel}" if event.channel else "")
        counts[key] = counts.get(key, 0) + 1
    open_states = [s for s in result.final_states if s.stage != Stage.CLOSED]
    parts = [f"{len(result.final_states)} invoices"]
    parts += [f"{count} {key.replace('_', ' ')}" for key, count in sorted(counts.items())]
    parts.append(f"{len(open_states)} still open")
    return "Summary: " + ", ".join(parts) + f"\nRendered messages: {result.outbox}"
