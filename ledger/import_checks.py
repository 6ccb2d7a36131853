"""Checks on validated invoice rows that look beyond one row: across the file and the ledger.

Each check returns every problem it finds as RowErrors and writes nothing: an invoice number
that repeats in the file or is already in the ledger, rows of one customer that disagree on a
detail both give, an owner who is not a user able to work tasks, and rows the caller's
policy_for refuses. Messages stay short however large the file: a repeated number names only
the first _ROWS_NAMED other rows and counts the rest.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from sqlmodel import Session, select

from ledger.import_rows import CUSTOMER_FIELDS, InvoiceRow, RowError
from ledger.inputs import shown
from ledger.models import AppUser, Invoice
from ledger.routing import WORKING_ROLES

PolicyFor = Callable[["InvoiceRow"], tuple[str, int]]

_LOOKUP_BATCH = 500  # invoice numbers per IN (...) query, well under every driver's limit
_ROWS_NAMED = 5  # other rows listed when an invoice number repeats; the rest are counted


def numbered_rows(rows: list[InvoiceRow]) -> list[tuple[int, InvoiceRow]]:
    """Each row with the row it came from, or its position when it was built in code."""
    return [(row.row if row.row is not None else i, row) for i, row in enumerate(rows, start=1)]


def duplicate_numbers(numbers: list[tuple[int, str]]) -> list[RowError]:
    rows_of: dict[str, list[int]] = defaultdict(list)
    for row_number, number in numbers:
        if number:
            rows_of[number].append(row_number)
    errors = []
    for number, row_numbers in rows_of.items():
        others_count = len(row_numbers) - 1
        for row_number in row_numbers if others_count else ():
            # Only the first few: a number on every row of a big file would be quadratic.
            others = [str(r) for r in row_numbers[: _ROWS_NAMED + 1] if r != row_number]
            where = f"row{'s' if others_count > 1 else ''} {', '.join(others[:_ROWS_NAMED])}"
            if others_count > _ROWS_NAMED:
                where += f" and {others_count - _ROWS_NAMED} more"
            name = number if len(number) <= 64 else shown(number)
            errors.append(
                RowError(row_number, "invoice_number", f"{name} is also on {where} of the file")
            )
    return errors


def customer_conflicts(numbered: list[tuple[int, InvoiceRow]]) -> list[RowError]:
    """Rows of one customer must not disagree on a detail both of them give."""
    first_given: dict[tuple[str, str], tuple[int, Any]] = {}
    errors = []
    for row_number, row in numbered:
        for name in CUSTOMER_FIELDS:
            value = getattr(row, name)
            if value is None:
                continue
            seen = first_given.setdefault((row.customer_id, name), (row_number, value))
            if seen[1] != value:
                errors.append(
                    RowError(
                        row_number,
                        name,
                        f"customer {row.customer_id} has {name} {seen[1]!r} on row {seen[0]}, "
                        f"{value!r} here",
                    )
                )
    return errors


def already_in_ledger(session: Session, numbered: list[tuple[int, InvoiceRow]]) -> list[RowError]:
    numbers = [row.invoice_number for _, row in numbered]
    existing: set[str] = set()
    for start in range(0, len(numbers), _LOOKUP_BATCH):
        batch = numbers[start : start + _LOOKUP_BATCH]
        existing.update(session.exec(select(Invoice.number).where(Invoice.number.in_(batch))))
    return [
        RowError(row_number, "invoice_number", f"{row.invoice_number} is already in the ledger")
        for row_number, row in numbered
        if row.invoice_number in existing
    ]


def owners_who_cannot_work(
    session: Session, numbered: list[tuple[int, InvoiceRow]]
) -> list[RowError]:
    """An owner must be a user who can work tasks: a collector or an admin, not disabled."""
    emails = sorted({row.owner for _, row in numbered if row.owner is not None})
    users: dict[str, AppUser] = {}
    for start in range(0, len(emails), _LOOKUP_BATCH):
        batch = emails[start : start + _LOOKUP_BATCH]
        users.update(
            (u.email, u) for u in session.exec(select(AppUser).where(AppUser.email.in_(batch)))
        )
    errors = []
    for row_number, row in numbered:
        if row.owner is None:
            continue
        user = users.get(row.owner)
        if user is None:
            problem = f"no user {row.owner!r} in the ledger"
        elif user.disabled:
            problem = f"user {user.email} is disabled and cannot work tasks"
        elif user.role not in WORKING_ROLES:
            problem = f"user {user.email} is a {user.role} and cannot work tasks"
        else:
            continue
        errors.append(RowError(row_number, "owner", problem))
    return errors


def choose_policies(
    numbered: list[tuple[int, InvoiceRow]], policy_for: PolicyFor
) -> tuple[dict[int, tuple[str, int]], list[RowError]]:
    chosen: dict[int, tuple[str, int]] = {}
    errors = []
    for row_number, row in numbered:
        try:
            chosen[row_number] = policy_for(row)
        except (ValueError, LookupError) as error:
            errors.append(RowError(row_number, "policy", str(error)))
    return chosen, errors
