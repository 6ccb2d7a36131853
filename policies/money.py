"""Exact conversion between decimal amounts in major units and integer minor units."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation, localcontext


def to_minor(amount: Decimal | str | int, exponent: int = 2) -> int:
    """Convert an amount in major units ("12.34") to minor units (1234).

    Refuses amounts finer than the currency allows ("12.345" with exponent 2) rather than
    rounding them: a silently rounded amount is money appearing or disappearing.
    """
    if isinstance(amount, bool | float):
        # A float has already lost the exact decimal value the user typed.
        raise TypeError(f"amount must be a Decimal, str or int, not {type(amount).__name__}")
    if exponent < 0:
        raise ValueError(f"currency exponent must be >= 0, got {exponent}")
    try:
        value = Decimal(amount.strip()) if isinstance(amount, str) else Decimal(amount)
    except InvalidOperation:
        raise ValueError(f"{amount!r} is not a decimal amount") from None
    if not value.is_finite():
        raise ValueError(f"{amount!r} is not a finite amount")
    with localcontext() as ctx:
        # Enough precision that scaling never rounds, however long the amount.
        ctx.prec = max(28, len(value.as_tuple().digits) + exponent + 1)
        scaled = value.scaleb(exponent)
    if scaled != scaled.to_integral_value():
        places = "no decimal places" if exponent == 0 else f"at most {exponent} decimal places"
        raise ValueError(f"{amount} has more decimals than the currency allows ({places})")
    return int(scaled)


def from_minor(amount_minor: int, exponent: int = 2) -> Decimal:
    """The amount in major units, exact: from_minor(1234) == Decimal("12.34")."""
    with localcontext() as ctx:
        ctx.prec = max(28, len(str(abs(amount_minor))) + 1)
        return Decimal(amount_minor).scaleb(-exponent)
