"""Import invoices from CSV or JSON: validate every row, then apply the whole file or nothing.

Row numbers in errors: for CSV, the line of the file where the record starts (the header is
line 1, so data starts at row 2, as in a spreadsheet); for JSON, the 1-based position of the
object in the list. Problems with the file itself are reported as row 0, field "file".

Hostile files end in ImportRejected, never in another exception or a hang: text fields have
length limits and no control characters, amounts are decimal strings within the 64-bit
limit (ledger.inputs), JSON numbers with a fraction are refused and over-long integers are
not converted, and values quoted back in messages are cut short.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import phonenumbers
from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from ledger.currencies import CURRENCY_EXPONENTS, currency_exponent
from ledger.inputs import (
    SHOWN_LENGTH,
    check_amount_limit,
    check_positive,
    parse_amount,
    parse_date,
    positive_minor_units,
    shown,
)
from ledger.models import Customer, Invoice
from ledger.operations import record_audit
from policies.calendars import load_zone
from policies.money import to_minor

REQUIRED_COLUMNS = (
    "invoice_number",
    "customer_id",
    "customer_name",
    "timezone",
    "currency",
    "amount",
    "issued_on",
    "due_on",
)
# email and phone are columns too, but a file may carry only one of them: each row needs one.
OPTIONAL_COLUMNS = ("email", "phone", "segment", "locale", "policy")

PolicyFor = Callable[["InvoiceRow"], tuple[str, int]]

_LOCALE = re.compile(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*")
# C0 and C1 control characters, DEL included: a NUL is refused by PostgreSQL, a newline or
# an escape sequence in a name would travel into every message and console line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_LOOKUP_BATCH = 500  # invoice numbers per IN (...) query, well under every driver's limit
_ROWS_NAMED = 5  # other rows listed when an invoice number repeats; the rest are counted
_JSON_INT_DIGITS = 40  # longer JSON integers stay Decimal: int() refuses > 4300 digits


class _JsonFraction(str):
    """A JSON number written with a fraction or exponent, kept as the text written."""


def _problem(message: str) -> PydanticCustomError:
    return PydanticCustomError("invoice_row", message)


class InvoiceRow(BaseModel):
    """One invoice to import, validated. Field order matters: later checks read earlier fields."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, coerce_numbers_to_str=True)

    invoice_number: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    customer_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    customer_name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    email: Annotated[EmailStr, StringConstraints(max_length=320)] | None = None
    phone: str | None = Field(None, validate_default=True, max_length=32, description="E.164")
    timezone: Annotated[str, StringConstraints(max_length=64)]
    currency: Annotated[str, StringConstraints(max_length=16)]
    amount: Decimal = Field(description="in major units, e.g. 1234.50")
    issued_on: date
    due_on: date
    segment: Annotated[str, StringConstraints(max_length=64)] | None = None
    locale: Annotated[str, StringConstraints(max_length=16)] | None = None
    policy: Annotated[str, StringConstraints(max_length=64)] | None = None

    _row: int | None = PrivateAttr(None)

    @property
    def row(self) -> int | None:
        """Where the row came from (see the module doc), or None if built in code."""
        return self._row

    @property
    def amount_minor(self) -> int:
        return to_minor(self.amount, currency_exponent(self.currency))

    @field_validator(
        "invoice_number",
        "customer_id",
        "customer_name",
        "timezone",
        "currency",
        "segment",
        "locale",
        "policy",
    )
    @classmethod
    def _no_control_characters(cls, value: str | None) -> str | None:
        if value is not None and (found := _CONTROL.search(value)):
            raise _problem(f"contains the control character U+{ord(found[0]):04X}")
        return value

    @field_validator("phone")
    @classmethod
    def _phone_e164(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            # A failed email is not in info.data: its own error is reported instead.
            if "email" in info.data and info.data["email"] is None:
                raise _problem("no email and no phone: give at least one")
            return None
        if not value.startswith("+"):
            raise _problem(f"{value!r} must start with + and the country code, like +14155552671")
        try:
            parsed = phonenumbers.parse(value, None)
        except phonenumbers.NumberParseException:
            raise _problem(f"{value!r} is not a phone number") from None
        if not phonenumbers.is_valid_number(parsed):
            raise _problem(f"{value!r} is not a valid phone number")
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)

    @field_validator("timezone")
    @classmethod
    def _iana_zone(cls, value: str) -> str:
        try:
            load_zone(value)
        except ValueError as error:
            raise _problem(str(error)) from None
        return value

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        code = value.upper()
        if code not in CURRENCY_EXPONENTS:
            raise _problem(f"unknown currency {value!r}: use an ISO 4217 code like USD, EUR, JPY")
        return code

    @field_validator("amount", mode="before")
    @classmethod
    def _plain_decimal(cls, value: Any) -> Decimal:
        if isinstance(value, _JsonFraction):
            number = value if len(value) <= SHOWN_LENGTH else f"{value[:SHOWN_LENGTH]}..."
            raise _problem(f'{number} is a JSON number: write amounts as strings like "1234.50"')
        try:
            return parse_amount(value)
        except ValueError as err:
            raise _problem(str(err)) from None

    @field_validator("amount")
    @classmethod
    def _amount_fits_currency(cls, value: Decimal, info: ValidationInfo) -> Decimal:
        currency = info.data.get("currency")
        try:
            if currency is None:
                check_positive(value)
                check_amount_limit(value, None)
            else:
                positive_minor_units(value, currency)
        except ValueError as err:
            raise _problem(str(err)) from None
        return value

    @field_validator("issued_on", "due_on", mode="before")
    @classmethod
    def _iso_date(cls, value: Any) -> date:
        try:
            return parse_date(value)
        except ValueError as err:
            raise _problem(str(err)) from None

    @field_validator("due_on")
    @classmethod
    def _due_after_issue(cls, value: date, info: ValidationInfo) -> date:
        issued_on = info.data.get("issued_on")
        if issued_on is not None and value < issued_on:
            raise _problem(f"{value} is before issued_on {issued_on}")
        return value

    @field_validator("locale")
    @classmethod
    def _locale_tag(cls, value: str | None) -> str | None:
        if value is not None and not _LOCALE.fullmatch(value):
            raise _problem(f"{value!r} is not a locale like en, en-US or fr_FR")
        return value


@dataclass(frozen=True)
class RowError:
    """One refused field of one row; `row` as described in the module doc."""

    row: int
    field: str
    message: str

    def __str__(self) -> str:
        if self.row == 0:
            return f"{self.field}: {self.message}"
        return f"row {self.row}, {self.field}: {self.message}"


class ImportRejected(Exception):
    """The import was refused; `errors` lists every problem found, by row."""

    def __init__(self, errors: Iterable[RowError]) -> None:
        self.errors: list[RowError] = _in_order(errors)
        count = len(self.errors)
        lines = "\n".join(str(error) for error in self.errors)
        super().__init__(f"import refused, {count} problem{'s' if count != 1 else ''}:\n{lines}")


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


# --- reading files -------------------------------------------------------------------------


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
    records, errors = _load_records(Path(path))
    rows: list[InvoiceRow] = []
    for row_number, record in records:
        try:
            row = InvoiceRow.model_validate(record)
        except ValidationError as invalid:
            errors.extend(_row_errors(row_number, invalid))
            continue
        row._row = row_number
        rows.append(row)
    raw_numbers = [
        (row_number, str(record.get("invoice_number", "")).strip())
        for row_number, record in records
    ]
    errors.extend(_duplicate_numbers(raw_numbers))
    errors.extend(_customer_conflicts(_numbered(rows)))
    refused = {error.row for error in errors}
    return [row for row in rows if row.row not in refused], _in_order(errors)


def _load_records(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[RowError]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _csv_records(path)
    if suffix == ".json":
        return _json_records(path)
    raise _file_error(f"{path.name}: unsupported file type {suffix!r}; use .csv or .json")


def _csv_records(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[RowError]]:
    records: list[tuple[int, dict[str, Any]]] = []
    errors: list[RowError] = []
    try:
        # utf-8-sig: spreadsheets often start the file with a byte-order mark.
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [name.strip().lower() for name in next(reader, [])]
            _check_header(header)
            last_line = reader.line_num
            for values in reader:
                row_number, last_line = last_line + 1, reader.line_num
                if not any(value.strip() for value in values):
                    continue
                if len(values) > len(header):
                    errors.append(
                        RowError(
                            row_number,
                            "row",
                            f"{len(values)} values but the header has {len(header)} columns",
                        )
                    )
                records.append((row_number, _clean(dict(zip(header, values, strict=False)))))
    except OSError as error:
        raise _file_error(f"cannot read {path.name}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise _file_error(f"{path.name} is not UTF-8 text") from None
    except csv.Error as error:
        raise _file_error(f"{path.name} line {reader.line_num}: {error}") from None
    return records, errors


def _check_header(header: list[str]) -> None:
    if not any(header):
        raise _file_error("the file is empty: expected a header row")
    errors = [
        RowError(1, column, "column missing from the header")
        for column in REQUIRED_COLUMNS
        if column not in header
    ]
    known = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
    counts = Counter(header)
    errors.extend(
        RowError(1, column, "column appears more than once in the header")
        for column in sorted(c for c in known if counts[c] > 1)
    )
    if errors:
        raise ImportRejected(errors)


def _json_records(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[RowError]]:
    try:
        data = json.loads(
            path.read_text(encoding="utf-8-sig"),
            parse_float=_JsonFraction,
            parse_int=_json_integer,
            parse_constant=_refuse_constant,
        )
    except OSError as error:
        raise _file_error(f"cannot read {path.name}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise _file_error(f"{path.name} is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise _file_error(
            f"{path.name} is not valid JSON: {error.msg} at line {error.lineno}, "
            f"column {error.colno}"
        ) from None
    except RecursionError:
        raise _file_error(f"{path.name}: JSON nested too deeply to be a list of invoices") from None
    except ValueError as error:  # from _refuse_constant
        raise _file_error(f"{path.name} is not valid JSON: {error}") from None
    if not isinstance(data, list):
        raise _file_error(f"{path.name}: expected a JSON list of invoice objects")
    records: list[tuple[int, dict[str, Any]]] = []
    errors: list[RowError] = []
    for position, item in enumerate(data, start=1):
        if isinstance(item, dict):
            records.append((position, _clean({str(k).strip().lower(): v for k, v in item.items()})))
        else:
            errors.append(RowError(position, "row", "expected an object with the invoice fields"))
    return records, errors


def _json_integer(text: str) -> int | Decimal:
    return int(text) if len(text) <= _JSON_INT_DIGITS else Decimal(text)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number in JSON")


def _clean(record: dict[str | None, Any]) -> dict[str, Any]:
    """Blank values count as missing, so a required field reports "missing"."""
    return {
        key: value
        for key, value in record.items()
        if key and value is not None and not (isinstance(value, str) and not value.strip())
    }


def _file_error(message: str) -> ImportRejected:
    return ImportRejected([RowError(0, "file", message)])


def _row_errors(row_number: int, invalid: ValidationError) -> list[RowError]:
    errors = []
    for error in invalid.errors(include_url=False):
        name = ".".join(str(part) for part in error["loc"]) or "row"
        if error["type"] == "missing":
            message = "missing or empty"
        else:
            message = error["msg"].removeprefix("Value error, ")
        errors.append(RowError(row_number, name, message))
    return errors


# --- checks across rows and against the ledger ---------------------------------------------


def _numbered(rows: list[InvoiceRow]) -> list[tuple[int, InvoiceRow]]:
    return [(row.row if row.row is not None else i, row) for i, row in enumerate(rows, start=1)]


def _duplicate_numbers(numbers: list[tuple[int, str]]) -> list[RowError]:
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


_CUSTOMER_FIELDS = ("customer_name", "email", "phone", "timezone", "locale", "segment")


def _customer_conflicts(numbered: list[tuple[int, InvoiceRow]]) -> list[RowError]:
    """Rows of one customer must not disagree on a detail both of them give."""
    first_given: dict[tuple[str, str], tuple[int, Any]] = {}
    errors = []
    for row_number, row in numbered:
        for name in _CUSTOMER_FIELDS:
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


def _already_in_ledger(session: Session, numbered: list[tuple[int, InvoiceRow]]) -> list[RowError]:
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


def _policies(
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


def _check(
    session: Session, numbered: list[tuple[int, InvoiceRow]], policy_for: PolicyFor
) -> tuple[dict[int, tuple[str, int]], list[RowError]]:
    errors = _duplicate_numbers([(n, row.invoice_number) for n, row in numbered])
    errors += _customer_conflicts(numbered)
    errors += _already_in_ledger(session, numbered)
    policies, policy_errors = _policies(numbered, policy_for)
    return policies, _in_order(errors + policy_errors)


def _in_order(errors: Iterable[RowError]) -> list[RowError]:
    """Each error once, by row; a row's errors keep the order they were found in."""
    return sorted(dict.fromkeys(errors), key=lambda error: error.row)


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
    numbered = _numbered(rows)
    policies, errors = _check(session, numbered, policy_for)
    if errors:
        raise ImportRejected(errors)
    try:
        with session.begin_nested():
            _upsert_customers(session, numbered, actor, source)
            invoices = _insert_invoices(session, numbered, policies, actor, source)
    except IntegrityError:
        # Another import committed some of these numbers since the check above.
        errors = _already_in_ledger(session, numbered)
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
    _, ledger_errors = _check(session, _numbered(rows), policy_for)
    errors = _in_order(errors + ledger_errors)
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
        for name in _CUSTOMER_FIELDS:
            value = getattr(row, name)
            if value is not None:
                profile.setdefault("name" if name == "customer_name" else name, value)
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
