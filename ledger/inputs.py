"""How people write amounts and dates, in import files, payment files and on the command line.

Each function returns the value or raises ValueError with a message that names the value
and the expected form; callers put the place (row and field, or argument) in front.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal

from ledger.currencies import currency_exponent
from policies.money import to_minor

_AMOUNT = re.compile(r"[+-]?\d+(\.\d+)?")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_amount(value: object) -> Decimal:
    """A decimal amount in major units as written: "1234.50" (no 1,234, 1e3, NaN or floats)."""
    # Decimal or int only: a float has already lost the amount the user wrote.
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        amount = Decimal(value)
        if amount.is_finite():
            return amount
    if isinstance(value, str) and _AMOUNT.fullmatch(value.strip()):
        return Decimal(value.strip())
    raise ValueError(f"{value!r} is not an amount like 1234.50 (no thousands separators)")


def positive_minor_units(amount: Decimal, currency: str) -> int:
    """`amount` in minor units of `currency`; refused unless above zero and exact there."""
    if amount <= 0:
        raise ValueError(f"{amount} must be greater than 0")
    exponent = currency_exponent(currency)
    try:
        return to_minor(amount, exponent)
    except ValueError:
        allowed = "no decimals" if exponent == 0 else f"at most {exponent} decimals"
        raise ValueError(f"{amount} has too many decimals: {currency} allows {allowed}") from None


def parse_date(value: object) -> date:
    """An ISO date, exactly YYYY-MM-DD."""
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not a date like 2026-01-31 (YYYY-MM-DD)")
