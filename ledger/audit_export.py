"""The audit trail as finance reads it: who changed what and when, before and after, and the
request behind it, as rows or as a CSV file.

Invariants:

- Reading only: rows are copied out of the append-only audit events, never the events
  themselves, and nothing is written.
- Rows come oldest first (by time, then by the order they were written); `since` counts in,
  `until` counts out.
- Before and after come from the event's detail: `before`/`after`, else `from`/`to`, else every
  pair of `<name>_before…`/`<name>_after…` keys (or `<name>_before` with `<name>`), else the
  `changes` of a profile update; amounts in minor units are shown in their currency.
- The request id is the detail's `request_id`, else the caller's request id inside its
  idempotency key, else the idempotency key itself: the id of a change the system made.
- Every CSV cell passes through `ledger.csv_safety`, so no cell is a formula; times are ISO 8601
  in UTC.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session

from ledger.books import LedgerError, load_invoice, money_text
from ledger.csv_safety import SpreadsheetSafeWriter
from ledger.models import AuditEvent, Invoice

CSV_HEADER = ("at", "actor", "action", "invoice", "before", "after", "request_id", "detail")
# Idempotency key forms that end in the caller's request id, "<invoice>:<form>:<request id>"
# (built by workflows.keys; ledger/ imports nothing above it, so the forms are named here).
REQUEST_KEY_FORMS = (
    "payment",
    "adjustment",
    "note",
    "escalated-by-hand",
    "payment-plan",
    "one-off",
)


class AuditRow(BaseModel):
    at: datetime
    actor: str
    action: str
    invoice: str | None  # the invoice number, when the event concerns one invoice
    before: str | None
    after: str | None
    request_id: str | None
    detail: dict[str, Any]


def audit_rows(
    session: Session,
    *,
    invoice_number: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
) -> list[AuditRow]:
    """The audit trail, oldest first: of one invoice, between two moments, the first `limit`."""
    for name, moment in (("since", since), ("until", until)):
        if moment is not None and moment.tzinfo is None:
            raise LedgerError(f"audit export: {name} must be timezone-aware, got {moment}")
    if since is not None and until is not None and since >= until:
        raise LedgerError(f"audit export: since {since} is not before until {until}")
    if limit is not None and limit < 1:
        raise LedgerError(f"audit export: limit must be at least 1, got {limit}")
    statement = sa.select(
        AuditEvent.at, AuditEvent.actor, AuditEvent.action, Invoice.number, AuditEvent.detail
    ).outerjoin(Invoice, Invoice.id == AuditEvent.invoice_id)
    if invoice_number is not None:
        invoice = load_invoice(session, invoice_number)
        statement = statement.where(AuditEvent.invoice_id == invoice.id)
    if since is not None:
        statement = statement.where(AuditEvent.at >= since)
    if until is not None:
        statement = statement.where(AuditEvent.at < until)
    statement = statement.order_by(AuditEvent.at, AuditEvent.id).limit(limit)
    return [_row(*row) for row in session.exec(statement)]


def audit_csv(rows: Iterable[AuditRow]) -> str:
    """The rows as CSV text with a header line; no cell can start a spreadsheet formula."""
    buffer = io.StringIO()
    writer = SpreadsheetSafeWriter(buffer)
    writer.writerow(CSV_HEADER)
    for row in rows:
        writer.writerow(
            (
                row.at.astimezone(UTC).isoformat(),
                row.actor,
                row.action,
                row.invoice,
                row.before,
                row.after,
                row.request_id,
                json.dumps(row.detail, sort_keys=True, ensure_ascii=False),
            )
        )
    return buffer.getvalue()


def request_id_of(detail: dict[str, Any], invoice_number: str | None) -> str | None:
    """The request behind an event: its request id, or what its idempotency key tells."""
    request_id = detail.get("request_id")
    if isinstance(request_id, str) and request_id:
        return request_id
    key = detail.get("idempotency_key")
    if not isinstance(key, str) or not key:
        return None
    for form in REQUEST_KEY_FORMS if invoice_number is not None else ():
        prefix = f"{invoice_number}:{form}:"
        if key.startswith(prefix) and len(key) > len(prefix):
            return key.removeprefix(prefix)
    return key


def before_and_after(detail: dict[str, Any]) -> tuple[str | None, str | None]:
    """What the event changed, as text before and after; (None, None) if it tells no change."""
    for first, second in (("before", "after"), ("from", "to")):
        if first in detail or second in detail:
            return _text(detail.get(first)), _text(detail.get(second))
    currency = detail.get("currency") if isinstance(detail.get("currency"), str) else None
    before: list[str] = []
    after: list[str] = []
    for key in detail:
        if "_before" not in key:
            continue
        name = key.replace("_before", "", 1)
        paired = key.replace("_before", "_after", 1)
        paired = paired if paired in detail else name  # status_before goes with status
        if paired not in detail:
            continue
        label = name.removesuffix("_minor")
        before.append(f"{label}={_value(key, detail[key], currency)}")
        after.append(f"{label}={_value(paired, detail[paired], currency)}")
    changes = detail.get("changes")
    if isinstance(changes, dict):
        for name, change in changes.items():
            if isinstance(change, list) and len(change) == 2:
                before.append(f"{name}={_text(change[0]) or ''}")
                after.append(f"{name}={_text(change[1]) or ''}")
    return "; ".join(before) or None, "; ".join(after) or None


def _row(at: datetime, actor: str, action: str, number: str | None, text: str) -> AuditRow:
    try:
        detail = json.loads(text)
    except ValueError:
        detail = None
    if not isinstance(detail, dict):
        # record_audit writes JSON objects; anything else is shown as it was stored.
        detail = {"raw": text}
    before, after = before_and_after(detail)
    return AuditRow(
        at=at,
        actor=actor,
        action=action,
        invoice=number,
        before=before,
        after=after,
        request_id=request_id_of(detail, number),
        detail=detail,
    )


def _value(key: str, value: Any, currency: str | None) -> str:
    if key.endswith("_minor") and currency and isinstance(value, int):
        return money_text(value, currency)
    return _text(value) or ""


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)
