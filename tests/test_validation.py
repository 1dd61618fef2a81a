import pandas as pd
import pytest

from epm_spark.config import IngestSettings
from epm_spark.errors import InputError
from epm_spark.io.validation import resolve_column_map, validate_batch


def _check(rows, **settings):
    df = pd.DataFrame(rows)
    if "_corrupt_record" not in df:
        df["_corrupt_record"] = None
    cmap = resolve_column_map([c for c in df.columns if c != "_corrupt_record"])
    return validate_batch(df, cmap, IngestSettings(**settings))


def test_a_good_row_becomes_a_product_with_parsed_price_and_attributes():
    out = _check([{"sku": "1", "name": " Samsung 870 EVO 1TB ", "price": "1.299,00 €", "colour": "black", "ean": ""}])
    row = out.iloc[0]
    assert bool(row.ok) and row.reason is None
    assert row.product_id == "1" and row.title == "Samsung 870 EVO 1TB"
    assert row.price == 1299.0 and row.currency == "EUR" and row.price_raw == "1.299,00 €"
    assert row.attributes == {"colour": "black"}  # empty values are not attributes


@pytest.mark.parametrize("row, rule", [
    ({"sku": "", "name": "x", "price": "1"}, "missing product_id"),
    ({"sku": "1", "name": None, "price": "1"}, "missing title"),
    ({"sku": "1", "name": "x", "price": "call us"}, "unparseable price"),
    ({"sku": "1", "name": "Caf\ufffd", "price": "1"}, "broken encoding"),
    ({"sku": "1", "name": "x\x00y", "price": "1"}, "broken encoding"),
    ({"sku": "1", "name": "x" * 2000, "price": "1"}, "field too long"),
    ({"sku": "1", "name": "x", "price": "1", "_corrupt_record": "1,x,1,extra"}, "malformed row"),
])
def test_each_rule_names_its_reason(row, rule):
    out = _check([row])
    assert not out.iloc[0].ok
    assert out.iloc[0].reason.startswith(rule + ":")


def test_long_description_hits_the_field_limit():
    out = _check([{"sku": "1", "name": "x", "description": "d" * 50}], max_field_chars=10)
    assert out.iloc[0].reason.startswith("field too long: column 'description'")


def test_currency_column_wins_over_symbol():
    out = _check([{"id": "1", "title": "x", "price": "12.50", "currency": "gbp"}])
    assert out.iloc[0].currency == "GBP"


def test_every_input_row_comes_out_once():
    rows = [{"sku": str(i), "name": "t" if i % 3 else "", "price": "1"} for i in range(10)]
    out = _check(rows)
    assert len(out) == 10
    assert out.ok.sum() + (~out.ok).sum() == 10
    assert (~out.ok).sum() == 4


def test_column_map_prefers_explicit_then_common_names():
    cmap = resolve_column_map(["artikel", "bezeichnung", "Brand", "preis"],
                              {"product_id": "artikel", "title": "bezeichnung", "price": "preis"})
    assert cmap.columns == {"product_id": "artikel", "title": "bezeichnung", "price": "preis", "brand": "Brand"}
    assert cmap.attributes == ()


def test_column_map_errors_name_the_problem():
    with pytest.raises(InputError, match="no input column for product_id.*--map product_id=COLUMN"):
        resolve_column_map(["foo", "title"])
    with pytest.raises(InputError, match="has no column 'sku'"):
        resolve_column_map(["id", "title"], {"product_id": "sku"})
    with pytest.raises(InputError, match="unknown products column"):
        resolve_column_map(["id", "title"], {"colour": "id"})
