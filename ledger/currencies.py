"""ISO 4217 currencies the ledger accepts, with their minor-unit exponents.

Active circulating currencies only (no fund codes or precious metals). Most have two decimals;
the exceptions are listed explicitly.

One amount is at most MAX_MINOR minor units, whatever the currency: the ledger's money
columns are 64-bit integers. In major units that is 92,233,720,368,547,758.07 USD or
9,223,372,036,854,775,807 JPY; `max_amount` gives it for each currency.
"""

from __future__ import annotations

from decimal import Decimal

MAX_MINOR = 2**63 - 1  # the largest signed 64-bit integer (BIGINT on PostgreSQL and SQLite)


def _codes(text: str) -> frozenset[str]:
    return frozenset(text.split())


_ZERO_DECIMALS = _codes("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF")
_THREE_DECIMALS = _codes("BHD IQD JOD KWD LYD OMR TND")
_TWO_DECIMALS = _codes(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP BYN
    BZD CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS
    GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR
    LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD
    PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN
    SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD UYU UZS VES WST XCD XCG YER ZAR ZMW
    ZWG
    """
)

CURRENCY_EXPONENTS: dict[str, int] = {
    **{code: 2 for code in _TWO_DECIMALS},
    **{code: 0 for code in _ZERO_DECIMALS},
    **{code: 3 for code in _THREE_DECIMALS},
}


class UnknownCurrency(ValueError):
    pass


def currency_exponent(code: str) -> int:
    """Decimal places of `code` (JPY 0, USD 2, KWD 3); UnknownCurrency if not in the table."""
    try:
        return CURRENCY_EXPONENTS[code]
    except KeyError:
        raise UnknownCurrency(
            f"unknown currency {code!r}: use an ISO 4217 code like USD, EUR or JPY"
        ) from None


MAX_EXPONENT = max(CURRENCY_EXPONENTS.values())


def max_amount(exponent: int) -> Decimal:
    """The largest amount in major units of a currency with `exponent` decimals: MAX_MINOR."""
    # scaleb only moves the decimal point, so the 19 digits stay exact.
    return Decimal(MAX_MINOR).scaleb(-exponent)


# The most a policy amount (min_balance, a fixed fee) may be: it holds in every currency.
MAX_AMOUNT_IN_EVERY_CURRENCY = max_amount(MAX_EXPONENT)
