"""Parse the prices that real catalog exports contain into an amount and an ISO currency.

    >>> parse_price("1.299,00 €")
    Price(amount=1299.0, currency='EUR')
    >>> parse_price("$1,299.00")
    Price(amount=1299.0, currency='USD')
    >>> parse_price("EUR 12.5")
    Price(amount=12.5, currency='EUR')

An empty value is no price (``None``); a value that is present but cannot be read
raises :class:`PriceError` with the reason, so ingestion can quarantine the row.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

__all__ = ["Price", "PriceError", "parse_price", "normalise_currency", "ISO_CURRENCIES"]


class PriceError(ValueError):
    """The text holds something that is not a single non-negative price."""


class Price(NamedTuple):
    amount: float
    currency: str | None


ISO_CURRENCIES = frozenset(
    """AED ALL ARS AUD BAM BDT BGN BHD BMD BRL CAD CHF CLP CNY COP CZK DKK DZD EGP EUR GBP GHS
    GTQ HKD HRK HUF IDR ILS INR ISK JPY KES KRW KWD KYD KZT LBP LKR MAD MDL MKD MMK MUR MXN MYR
    NGN NOK NPR NZD OMR PEN PHP PKR PLN QAR RON RSD RUB SAR SEK SGD THB TRY TWD TZS UAH USD VND
    XOF ZAR""".split()
)

# Longest first, so "US$" wins over "$" and "R$" over "$".
_SYMBOLS = sorted(
    {
        "US$": "USD", "U$S": "USD", "A$": "AUD", "AU$": "AUD", "C$": "CAD", "CA$": "CAD",
        "NZ$": "NZD", "HK$": "HKD", "S$": "SGD", "R$": "BRL", "MX$": "MXN", "$": "USD",
        "€": "EUR", "£": "GBP", "¥": "JPY", "₹": "INR", "฿": "THB", "₽": "RUB", "₺": "TRY",
        "₩": "KRW", "₪": "ILS", "₫": "VND", "₴": "UAH", "₦": "NGN", "zł": "PLN", "Kč": "CZK",
        "Ft": "HUF", "лв.": "BGN", "лв": "BGN", "lei": "RON", "Lei": "RON", "LEI": "RON",
        "kn": "HRK", "Kn": "HRK", "руб.": "RUB", "руб": "RUB", "Fr.": "CHF", "RM": "MYR",
        "Rs.": "INR", "Rs": "INR",
    }.items(),
    key=lambda kv: -len(kv[0]),
)

_NUMBER = re.compile(r"^[0-9][0-9.,' \u00a0\u202f]*$|^[.,][0-9]+$")
_SCIENTIFIC = re.compile(r"^[0-9]+(\.[0-9]+)?[eE][+-]?[0-9]+$")


def normalise_currency(text: str | None) -> str | None:
    """Map a currency code or symbol as shops write it (``eur``, ``лв.``, ``Kč``) to ISO 4217."""
    if text is None:
        return None
    t = str(text).strip().rstrip(";")
    if not t or t.lower() in {"null", "none", "nan"}:
        return None
    if t.upper() in ISO_CURRENCIES:
        return t.upper()
    for symbol, code in _SYMBOLS:
        if t == symbol or t.lower() == symbol.lower():
            return code
    return None


def _strip_currency(text: str) -> tuple[str, str | None]:
    """Remove one currency marker (ISO code or symbol) from either end of ``text``."""
    t = text.strip()
    m = re.match(r"^([A-Za-z]{3})(?=[\s0-9.,])", t) or re.search(r"(?<=[\s0-9.,])([A-Za-z]{3})$", t)
    if m and m.group(1).upper() in ISO_CURRENCIES:
        return (t[: m.start()] + t[m.end():]).strip(), m.group(1).upper()
    for symbol, code in _SYMBOLS:
        if t.startswith(symbol):
            return t[len(symbol):].strip(), code
        if t.endswith(symbol):
            return t[: -len(symbol)].strip(), code
    return t, None


def _amount(number: str, original: str) -> float:
    s = number.replace("\u00a0", "").replace("\u202f", "").replace(" ", "").replace("'", "")
    if _SCIENTIFIC.match(s):
        return float(s)
    if not _NUMBER.match(s):
        raise PriceError(f"cannot read {original!r} as an amount")
    dots, commas = s.count("."), s.count(",")
    if dots and commas:
        # The separator that comes last is the decimal one: 1.299,00 or 1,299.00.
        decimal, thousands = (",", ".") if s.rfind(",") > s.rfind(".") else (".", ",")
        if s.count(decimal) > 1:
            raise PriceError(f"cannot read {original!r} as an amount")
        s = s.replace(thousands, "").replace(decimal, ".")
    elif commas or dots:
        sep = "," if commas else "."
        parts = s.split(sep)
        if len(parts) > 2:
            # 1,299,000 or 1.299.000: only thousands separators.
            if not all(len(p) == 3 for p in parts[1:]):
                raise PriceError(f"cannot read {original!r} as an amount")
            s = "".join(parts)
        elif len(parts[1]) == 3 and parts[0] not in ("", "0"):
            # A lone separator before exactly three digits groups thousands: 1,299 or 1.299.
            s = "".join(parts)
        else:
            s = parts[0] + "." + parts[1]
    return float(s)


def parse_price(value: object, default_currency: str | None = None) -> Price | None:
    """Read ``value`` as a price. ``None`` for an empty value; :class:`PriceError` if unreadable."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and math.isnan(value):
            return None
        amount, currency = float(value), None
    else:
        text = str(value).strip().rstrip(";").strip()
        if not text or text.lower() in {"null", "none", "nan", "n/a", "-"}:
            return None
        number, currency = _strip_currency(text)
        if currency is not None and not number:
            raise PriceError(f"price {text!r} has a currency but no amount")
        amount = _amount(number, text)
    if not math.isfinite(amount) or amount < 0:
        raise PriceError(f"price {value!r} is not a non-negative finite number")
    return Price(amount, currency or normalise_currency(default_currency))
