"""The payments file of a what-if simulation: `invoice_number,paid_on,amount` rows, checked.

Every bad row is reported with its line (the header is line 1) and field, none is dropped;
`InputFileRejected` puts the file's path before each problem, so a problem in the invoices
file and one in the payments file cannot be told apart wrongly. A payment must name an
invoice of the simulation and be a positive amount its currency can hold.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import date
from decimal import Decimal
from pathlib import Path

from pydantic import BaseModel, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from ledger.import_rows import ImportRejected, InvoiceRow, RowError
from ledger.inputs import parse_amount, parse_date, positive_minor_units

PAYMENT_COLUMNS = ("invoice_number", "paid_on", "amount")


class InputFileRejected(ImportRejected):
    """An input file of a simulation was refused: every problem, each named with the file.

    `errors` are the RowErrors (row and field) as for any import; the text puts the path
    before each, so the invoices file and the payments file cannot be told apart wrongly.
    """

    def __init__(self, path: Path, errors: Iterable[RowError]) -> None:
        super().__init__(errors)
        self.path = path
        count = len(self.errors)
        lines = "\n".join(f"{path}: {error}" for error in self.errors)
        self.args = (f"{path} refused, {count} problem{'s' if count != 1 else ''}:\n{lines}",)


class PaymentRow(BaseModel):
    invoice_number: str
    paid_on: date
    amount: Decimal

    @field_validator("paid_on", mode="before")
    @classmethod
    def _iso_date(cls, value: object) -> date:
        try:
            return parse_date(value)
        except ValueError as err:
            raise PydanticCustomError("payment_row", str(err)) from None

    @field_validator("amount", mode="before")
    @classmethod
    def _plain_decimal(cls, value: object) -> Decimal:
        try:
            return parse_amount(value)
        except ValueError as err:
            raise PydanticCustomError("payment_row", str(err)) from None


def read_payment_rows(path: Path, invoices: dict[str, InvoiceRow]) -> list[PaymentRow]:
    """Read `invoice_number,paid_on,amount`; every bad row is reported, none is dropped.

    InputFileRejected names the file, and each problem its row (the header is row 1) and field.
    """
    errors: list[RowError] = []
    payments: list[PaymentRow] = []
    for line, record in _payment_records(path):
        try:
            payment = PaymentRow.model_validate(record)
        except ValidationError as err:
            for problem in err.errors():
                field = ".".join(str(part) for part in problem["loc"]) or "row"
                message = "missing or empty" if problem["type"] == "missing" else problem["msg"]
                errors.append(RowError(line, field, message))
            continue
        invoice = invoices.get(payment.invoice_number)
        if invoice is None:
            errors.append(
                RowError(line, "invoice_number", f"unknown invoice {payment.invoice_number}")
            )
            continue
        try:
            positive_minor_units(payment.amount, invoice.currency)
        except ValueError as err:
            errors.append(RowError(line, "amount", str(err)))
            continue
        payments.append(payment)
    if errors:
        raise InputFileRejected(path, errors)
    return payments


def _payment_records(path: Path) -> list[tuple[int, dict[str, str]]]:
    """(line of the file, record) of every non-blank row, or InputFileRejected."""

    def refused(row: int, field: str, message: str) -> InputFileRejected:
        return InputFileRejected(path, [RowError(row, field, message)])

    records: list[tuple[int, dict[str, str]]] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [name.strip().lower() for name in next(reader, [])]
            if not any(header):
                raise refused(0, "file", "the file is empty: expected a header row")
            missing = [c for c in PAYMENT_COLUMNS if c not in header]
            if missing:
                raise InputFileRejected(
                    path, [RowError(1, c, "column missing from the header") for c in missing]
                )
            last_line = reader.line_num
            for values in reader:
                line, last_line = last_line + 1, reader.line_num
                if any(value.strip() for value in values):
                    record = dict(zip(header, values, strict=False))
                    records.append((line, {k: v.strip() for k, v in record.items() if v.strip()}))
    except OSError as err:
        raise refused(0, "file", f"cannot read {path.name}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise refused(0, "file", f"{path.name} is not UTF-8 text") from None
    except csv.Error as err:
        raise refused(0, "file", f"{path.name} line {reader.line_num}: {err}") from None
    return records
