"""One invoice row to import, validated on its own, and the errors that name rows.

Row numbers in errors: for CSV, the line of the file where the record starts (the header is
line 1, so data starts at row 2, as in a spreadsheet); for JSON, the 1-based position of the
object in the list. Problems with the file itself are reported as row 0, field "file".

A row is refused, never crashes the import: text fields have length limits and no control
characters, amounts are decimal strings within the 64-bit limit (ledger.inputs), JSON numbers
with a fraction are refused, and values quoted back in messages are cut short.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
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

from ledger.currencies import CURRENCY_EXPONENTS, currency_exponent
from ledger.inputs import (
    SHOWN_LENGTH,
    check_amount_limit,
    check_positive,
    parse_amount,
    parse_date,
    positive_minor_units,
)
from policies.calendars import load_zone
from policies.money import to_minor

_LOCALE = re.compile(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*")
# C0 and C1 control characters, DEL included: a NUL is refused by PostgreSQL, a newline or
# an escape sequence in a name would travel into every message and console line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# The row fields that describe the customer rather than the invoice.
CUSTOMER_FIELDS = ("customer_name", "email", "phone", "timezone", "locale", "segment", "owner")


class JsonFraction(str):
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
    # The email of the collector who owns the account (ledger.routing); empty: left as it is.
    owner: Annotated[EmailStr, StringConstraints(max_length=320)] | None = None

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
        if isinstance(value, JsonFraction):
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

    @field_validator("owner")
    @classmethod
    def _owner_lower_case(cls, value: str | None) -> str | None:
        return None if value is None else value.lower()

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
        self.errors: list[RowError] = in_order(errors)
        count = len(self.errors)
        lines = "\n".join(str(error) for error in self.errors)
        super().__init__(f"import refused, {count} problem{'s' if count != 1 else ''}:\n{lines}")


def in_order(errors: Iterable[RowError]) -> list[RowError]:
    """Each error once, by row; a row's errors keep the order they were found in."""
    return sorted(dict.fromkeys(errors), key=lambda error: error.row)


def row_errors(row_number: int, invalid: ValidationError) -> list[RowError]:
    errors = []
    for error in invalid.errors(include_url=False):
        name = ".".join(str(part) for part in error["loc"]) or "row"
        if error["type"] == "missing":
            message = "missing or empty"
        else:
            message = error["msg"].removeprefix("Value error, ")
        errors.append(RowError(row_number, name, message))
    return errors
