"""Import invoices from CSV or JSON: validate every row, then apply the whole file or nothing.

The steps, each in its own module: ledger.import_files reads the file into raw records,
ledger.import_rows validates each record into an InvoiceRow (and says how rows are numbered
in errors), ledger.import_checks finds problems across rows and against the ledger; this
module runs them and writes the invoices, their customers and the audit trail.

Nothing is half-written: every check runs before the first write, and the writes happen in
one nested transaction, so a refused import leaves the ledger as it was. Hostile files end
in ImportRejected, never in another exception or a hang.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from ledger.books import record_audit
from ledger.consent import clear_marks_of_changed_addresses
from ledger.import_checks import (
    PolicyFor,
    already_in_ledger,
    choose_policies,
    customer_conflicts,
    duplicate_numbers,
    numbered_rows,
    owners_who_cannot_work,
)
from ledger.import_files import load_records
from ledger.import_rows import (
    CUSTOMER_FIELDS,
    ImportRejected,
    InvoiceRow,
    RowError,
    in_order,
    row_errors,
)
from ledger.models import Customer, Invoice

# Row fields stored under another name on the customer.
_CUSTOMER_COLUMNS = {"customer_name": "name", "owner": "owner_email"}


@dataclass
class ImportReport:
    """What `import_file` did: the invoices it imported and every problem it refused."""

    imported: list[str] = field(default_factory=list)
    refused: list[RowError] = field(default_factory=list)

    @property
    def refused_rows(self) -> list[int]:
        return sorted({error.row for error in self.refused})

    @property
    def ok(self) -> bool:
        return not self.refused


# --- reading and checking ------------------------------------------------------------------


def read_invoice_rows(path: Path) -> list[InvoiceRow]:
    """Every row of a CSV or JSON file, validated; ImportRejected listing each problem."""
    rows, errors = parse_invoice_file(path)
    if errors:
        raise ImportRejected(errors)
    return rows


def parse_invoice_file(path: Path) -> tuple[list[InvoiceRow], list[RowError]]:
    """The rows that passed validation and the errors of those that did not.

    A row with any problem, including one it shares with another row (the same invoice
    number twice, different details for one customer), is left out of the rows returned.
    ImportRejected if the file as a whole cannot be read.
    """
    records, errors = load_records(Path(path))
    rows: list[InvoiceRow] = []
    for row_number, record in records:
        try:
            row = InvoiceRow.model_validate(record)
        except ValidationError as invalid:
            errors.extend(row_errors(row_number, invalid))
            continue
        row._row = row_number
        rows.append(row)
    raw_numbers = [
        (row_number, str(record.get("invoice_number", "")).strip())
        for row_number, record in records
    ]
    errors.extend(duplicate_numbers(raw_numbers))
    errors.extend(customer_conflicts(numbered_rows(rows)))
    refused = {error.row for error in errors}
    return [row for row in rows if row.row not in refused], in_order(errors)


def _check(
    session: Session, numbered: list[tuple[int, InvoiceRow]], policy_for: PolicyFor
) -> tuple[dict[int, tuple[str, int]], list[RowError]]:
    errors = duplicate_numbers([(n, row.invoice_number) for n, row in numbered])
    errors += customer_conflicts(numbered)
    errors += already_in_ledger(session, numbered)
    errors += owners_who_cannot_work(session, numbered)
    policies, policy_errors = choose_policies(numbered, policy_for)
    return policies, in_order(errors + policy_errors)


# --- writing -------------------------------------------------------------------------------


def import_invoices(
    session: Session,
    rows: list[InvoiceRow],
    policy_for: PolicyFor,
    *,
    actor: str = "import",
    source: str | None = None,
) -> list[Invoice]:
    """Insert every invoice (balance = total) and upsert its customer, all or nothing.

    ImportRejected, with nothing written, if an invoice number repeats or is already in the
    ledger, rows of one customer disagree, or `policy_for` refuses a row (ValueError or
    LookupError). An existing customer's contact details are updated from the rows.
    """
    numbered = numbered_rows(rows)
    policies, errors = _check(session, numbered, policy_for)
    if errors:
        raise ImportRejected(errors)
    try:
        with session.begin_nested():
            _upsert_customers(session, numbered, actor, source)
            invoices = _insert_invoices(session, numbered, policies, actor, source)
    except IntegrityError:
        # Another import committed some of these numbers since the check above.
        errors = already_in_ledger(session, numbered)
        if errors:
            raise ImportRejected(errors) from None
        raise
    return invoices


def import_file(
    session: Session,
    path: Path,
    policy_for: PolicyFor,
    partial: bool = False,
    *,
    actor: str = "import",
) -> ImportReport:
    """Import a CSV or JSON file and report what was imported and what was refused.

    By default the file applies whole or not at all: with any problem nothing is imported.
    With `partial=True` the good rows are imported and the bad ones reported.
    """
    path = Path(path)
    try:
        rows, errors = parse_invoice_file(path)
    except ImportRejected as rejected:
        return ImportReport(refused=rejected.errors)
    _, ledger_errors = _check(session, numbered_rows(rows), policy_for)
    errors = in_order(errors + ledger_errors)
    if errors and not partial:
        return ImportReport(refused=errors)
    refused = {error.row for error in errors}
    good = [row for row in rows if row.row not in refused]
    invoices = (
        import_invoices(session, good, policy_for, actor=actor, source=path.name) if good else []
    )
    return ImportReport(imported=[invoice.number for invoice in invoices], refused=errors)


def _upsert_customers(
    session: Session, numbered: list[tuple[int, InvoiceRow]], actor: str, source: str | None
) -> None:
    profiles: dict[str, dict[str, Any]] = {}
    for _, row in numbered:
        profile = profiles.setdefault(row.customer_id, {})
        for name in CUSTOMER_FIELDS:
            value = getattr(row, name)
            if value is not None:
                profile.setdefault(_CUSTOMER_COLUMNS.get(name, name), value)
    for customer_id, profile in profiles.items():
        customer = session.get(Customer, customer_id)
        if customer is None:
            session.add(Customer(id=customer_id, **profile))
            continue
        changes = {
            name: [getattr(customer, name), value]
            for name, value in profile.items()
            if getattr(customer, name) != value
        }
        if changes:
            for name, (_, value) in changes.items():
                setattr(customer, name, value)
            clear_marks_of_changed_addresses(customer, changes)
            record_audit(
                session,
                actor,
                "customer_updated",
                None,
                {"customer_id": customer_id, "changes": changes, "source": source},
            )
    # Customers first: invoices refer to them.
    session.flush()


def _insert_invoices(
    session: Session,
    numbered: list[tuple[int, InvoiceRow]],
    policies: dict[int, tuple[str, int]],
    actor: str,
    source: str | None,
) -> list[Invoice]:
    invoices = []
    for row_number, row in numbered:
        policy_name, policy_version = policies[row_number]
        invoices.append(
            Invoice(
                number=row.invoice_number,
                customer_id=row.customer_id,
                currency=row.currency,
                total_minor=row.amount_minor,
                balance_minor=row.amount_minor,
                issued_on=row.issued_on,
                due_on=row.due_on,
                policy_name=policy_name,
                policy_version=policy_version,
            )
        )
    session.add_all(invoices)
    session.flush()
    for (row_number, row), invoice in zip(numbered, invoices, strict=True):
        record_audit(
            session,
            actor,
            "invoice_imported",
            invoice.id,
            {
                "source": source,
                "row": row_number,
                "customer_id": row.customer_id,
                "currency": row.currency,
                "total_minor": invoice.total_minor,
                "due_on": row.due_on.isoformat(),
                "policy": invoice.policy_name,
                "policy_version": invoice.policy_version,
            },
        )
    session.flush()
    return invoices
