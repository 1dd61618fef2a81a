import pytest

from epm_spark.io.prices import PriceError, normalise_currency, parse_price


@pytest.mark.parametrize("text, amount, currency", [
    ("1.299,00 €", 1299.0, "EUR"),
    ("$1,299.00", 1299.0, "USD"),
    ("EUR 12.5", 12.5, "EUR"),
    ("12,99 €", 12.99, "EUR"),
    ("€134,00", 134.0, "EUR"),
    ("£19.99", 19.99, "GBP"),
    ("1 299,00 zł", 1299.0, "PLN"),
    ("CHF 1'299.50", 1299.5, "CHF"),
    ("1,409.99 Lei;", 1409.99, "RON"),
    ("US$ 5", 5.0, "USD"),
    ("7.3E2", 730.0, None),
    ("1,299", 1299.0, None),  # a lone separator before three digits groups thousands
    ("12,5", 12.5, None),
    ("0.99", 0.99, None),
    ("1.234.567", 1234567.0, None),
])
def test_common_price_formats(text, amount, currency):
    price = parse_price(text)
    assert price.amount == pytest.approx(amount)
    assert price.currency == currency


@pytest.mark.parametrize("text", ["call for price", "12 99 EUR eur", "10-20", "$", "1.2.3,4,5", "-5"])
def test_unreadable_prices_raise_with_the_text(text):
    with pytest.raises(PriceError) as info:
        parse_price(text)
    assert repr(text.strip()) in str(info.value) or "currency but no amount" in str(info.value)


@pytest.mark.parametrize("empty", [None, "", "  ", "null", "N/A", float("nan")])
def test_empty_values_are_no_price(empty):
    assert parse_price(empty) is None


def test_default_currency_fills_a_bare_amount_only():
    assert parse_price("12.5", default_currency="eur").currency == "EUR"
    assert parse_price("$12.5", default_currency="EUR").currency == "USD"


def test_currency_names_shops_use():
    assert normalise_currency("eur") == "EUR"
    assert normalise_currency("лв.") == "BGN"
    assert normalise_currency("Kč") == "CZK"
    assert normalise_currency("LEI") == "RON"
    assert normalise_currency("zzz") is None
