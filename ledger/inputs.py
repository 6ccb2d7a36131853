"""How people write amounts and dates, in import files, payment files and on the command line.

Each function returns the value or raises ValueError with a message that names the value
and the expected form; callers put the place (row and field, or argument) in front.

An amount is written `1234.50`: ASCII digits, at most one decimal point, no sign, spaces,
thousands separators or exponent. In minor units it is at most MAX_MINOR (64 bits), so
every amount that passes here fits the ledger. A value quoted back in a message is cut
short (`shown`), so a hostile megabyte never reaches a terminal or a log whole.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal

from ledger.currencies import MAX_MINOR, currency_exponent, max_amount
from policies.money import to_minor

# More characters than the longest amount that fits (19 digits, a point, a few decimals).
MAX_AMOUNT_LENGTH = 40
SHOWN_LENGTH = 40

_AMOUNT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_NOT_AN_AMOUNT = "is not an amount like 1234.50"


def shown(value: object, limit: int = SHOWN_LENGTH) -> str:
    """`value` as repr() for a message, cut to about `limit` characters."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value)} characters" if isinstance(value, str | bytes) else "too long"
    return f"{text[:limit]}... ({size})"


def parse_amount(value: object) -> Decimal:
    """A decimal amount in major units as written: "1234.50".

    Refused: floats (already inexact), signs other than a leading minus (left for the
    caller's "must be greater than 0"), spaces around, digits other than 0-9, exponents,
    separators, NaN, and text longer than MAX_AMOUNT_LENGTH.
    """
    if isinstance(value, float):
        raise ValueError(
            f'{shown(value)} is a number with a fraction: write amounts as strings like "1234.50"'
        )
    # An int or Decimal from code or a JSON integer: exact as it is.
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    if isinstance(value, Decimal) and value.is_finite():
        return value
    if not isinstance(value, str):
        raise ValueError(f"{shown(value)} {_NOT_AN_AMOUNT}")
    if len(value) > MAX_AMOUNT_LENGTH:
        raise ValueError(
            f"{shown(value)} is too long to be an amount ({MAX_AMOUNT_LENGTH} characters at most)"
        )
    if value != value.strip():
        raise ValueError(
            f"{shown(value)} has spaces around it: write only the amount, like 1234.50"
        )
    if not _AMOUNT.fullmatch(value):
        raise ValueError(f"{shown(value)} {_NOT_AN_AMOUNT} ({_what_is_wrong(value)})")
    return Decimal(value)


def _what_is_wrong(text: str) -> str:
    if any(char.isdigit() and not "0" <= char <= "9" for char in text):
        return "write the digits 0-9"
    if text.startswith("+"):
        return "write it without a + sign"
    return "no thousands separators"


def check_amount_limit(amount: Decimal, currency: str | None) -> None:
    """ValueError if `amount` is more than MAX_MINOR minor units of `currency` (of any
    currency when None: the currency itself was refused, the amount is still checked)."""
    # Compared as decimals: converting 1E+999999 to an int would take forever.
    if currency is None:
        if amount > max_amount(0):
            raise ValueError(f"{_brief(amount)} is more than the ledger holds in any currency")
        return
    largest = max_amount(currency_exponent(currency))
    if amount > largest:
        raise ValueError(
            f"{_brief(amount)} is more than the largest amount the ledger holds in "
            f"{currency}: {largest}"
        )


def check_positive(amount: Decimal) -> None:
    """ValueError unless `amount` is greater than zero."""
    if amount <= 0:
        raise ValueError(f"{_brief(amount)} must be greater than 0")


def positive_minor_units(amount: Decimal, currency: str) -> int:
    """`amount` in minor units of `currency`; refused unless above zero, exact there and at
    most MAX_MINOR."""
    check_positive(amount)
    check_amount_limit(amount, currency)
    exponent = currency_exponent(currency)
    try:
        minor = to_minor(amount, exponent)
    except ValueError:
        allowed = "no decimals" if exponent == 0 else f"at most {exponent} decimals"
        raise ValueError(
            f"{_brief(amount)} has too many decimals: {currency} allows {allowed}"
        ) from None
    assert minor <= MAX_MINOR  # guaranteed by check_amount_limit
    return minor


def parse_date(value: object) -> date:
    """An ISO date, exactly YYYY-MM-DD (ASCII digits)."""
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError(f"{shown(value)} is not a date like 2026-01-31 (YYYY-MM-DD)")


def _brief(amount: Decimal) -> str:
    text = str(amount)
    return text if len(text) <= SHOWN_LENGTH else f"{text[:SHOWN_LENGTH]}..."
