"""Decimal amounts of accounting providers to minor units (DESIGN section 11, Money).

QuickBooks and Xero send amounts as decimal numbers in the currency's major unit; the
schema speaks minor units of the lower-case ISO 4217 code. The conversion goes through
Decimal (adapters parse JSON numbers as Decimal), so 0.1 + 0.2 never becomes 29 cents.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

__all__ = ["minor_unit_exponent", "minor_units"]

# ISO 4217 currencies whose minor unit is not the cent; every other code has two decimals.
_ZERO = ("bif", "clp", "djf", "gnf", "isk", "jpy", "kmf", "krw", "pyg", "rwf", "ugx", "uyi")
_ZERO_MORE = ("vnd", "vuv", "xaf", "xof", "xpf")
_THREE = ("bhd", "iqd", "jod", "kwd", "lyd", "omr", "tnd")
_FOUR = ("clf", "uyw")
_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(_ZERO + _ZERO_MORE, 0),
    **dict.fromkeys(_THREE, 3),
    **dict.fromkeys(_FOUR, 4),
}


def minor_unit_exponent(currency: str) -> int:
    """Decimal places of the currency's minor unit (2 unless ISO 4217 says otherwise)."""
    return _EXPONENTS.get(currency.lower(), 2)


def minor_units(amount: Decimal, currency: str) -> int:
    """`amount` in major units of `currency` as an integer count of its minor units.

    Amounts finer than the minor unit (a provider's rounding residue) round half up, the
    way an invoice total is rounded on paper.
    """
    scaled = amount.scaleb(minor_unit_exponent(currency))
    return int(scaled.quantize(Decimal(1), rounding=ROUND_HALF_UP))
