"""Ingestion of messy real-world exports: every row lands once, bad rows say why, re-runs replace."""

import json
from pathlib import Path

import pandas as pd
import pytest

from epm_spark.errors import InputError
from epm_spark.io import delta
from epm_spark.pipeline.catalog.ingest import check_export, ingest, parse_column_map

MESSY = (
    'sku,name,price,brand,colour\n'
    '1,Samsung 870 EVO 1TB SSD,"1.299,00 €",Samsung,black\n'   # row 1: good, decimal comma
    '2,too,many,fields,here,x\n'                                # row 2: malformed
    '3,Crucial MX500 500GB,$59.99,Crucial,\n'                   # row 3: good
    '4,"Anker hub\nwith newline",EUR 12.5,Anker,grey\n'         # row 4: good, quoted newline
    '5,,9.99,Nobody,\n'                                         # row 5: missing title
    '1,duplicate of one,3,Z,\n'                                 # row 6: duplicate id
    '7,Price bad,call us,Q,\n'                                  # row 7: unparseable price
    ',no id,3,Q,\n'                                             # row 8: missing id
    '9,ok nine,,,\n'                                            # row 9: good, no price
).encode() + b'10,Caf\xe9 broken latin-1,3,Y,\n'                # row 10: broken encoding


@pytest.fixture
def messy_csv(tmp_path) -> Path:
    path = tmp_path / "export.csv"
    path.write_bytes(MESSY)
    return path


def run(spark, settings, path, source="ours", run_id="r1", **kw):
    settings.ingest.max_quarantine_share = kw.pop("share", 0.9)
    return ingest(spark, settings, input_path=str(path), source=source, run_id=run_id, **kw)


def test_every_row_lands_once_with_its_reason_and_row_number(spark, settings, messy_csv):
    report = run(spark, settings, messy_csv)
    assert (report.rows_read, report.products, report.quarantined) == (10, 4, 6)
    assert report.products + report.quarantined == report.rows_read
    products = delta.read_pandas(settings.warehouse, "products").set_index("product_id")
    assert sorted(products.index) == ["1", "3", "4", "9"]
    assert products.loc["1", "price"] == 1299.0 and products.loc["1", "currency"] == "EUR"
    assert products.loc["3", "currency"] == "USD"
    assert products.loc["4", "title"] == "Anker hub\nwith newline"
    assert products.loc["1", "attributes"] == {"colour": "black"}
    assert products.loc["1", "title"] == "Samsung 870 EVO 1TB SSD"  # the first of the duplicate ids wins
    q = delta.read_pandas(settings.warehouse, "products_quarantine").set_index("row_number").sort_index()
    rules = {row: reason.split(":")[0] for row, reason in q.reason.items()}
    assert rules == {2: "malformed row", 5: "missing title", 6: "duplicate product_id", 7: "unparseable price",
                     8: "missing product_id", 10: "broken encoding"}
    assert q.loc[6, "reason"].endswith(f"already at {messy_csv}:1")
    assert q.loc[2, "raw"] == "2,too,many,fields,here,x"
    assert json.loads(q.loc[7, "raw"])["price"] == "call us"
    assert set(q.source_file) == {str(messy_csv)}
    assert report.reasons["unparseable price"] == 1


def test_rerun_replaces_and_a_removed_listing_disappears(spark, settings, messy_csv, tmp_path):
    run(spark, settings, messy_csv)
    run(spark, settings, messy_csv)  # same export, same run: no duplicates
    assert len(delta.read_pandas(settings.warehouse, "products")) == 4
    assert len(delta.read_pandas(settings.warehouse, "products_quarantine")) == 6
    smaller = tmp_path / "night2.csv"
    smaller.write_text("sku,name,price\n1,Samsung 870 EVO 1TB SSD,99\n3,Crucial MX500 500GB,59\n")
    run(spark, settings, smaller, run_id="r2")
    products = delta.read_pandas(settings.warehouse, "products")
    assert sorted(products.product_id) == ["1", "3"] and set(products.run_id) == {"r2"}
    assert len(delta.read_pandas(settings.warehouse, "products_quarantine")) == 0


def test_sources_are_independent(spark, settings, messy_csv, tmp_path):
    run(spark, settings, messy_csv, source="ours")
    other = tmp_path / "theirs.csv"
    other.write_text("id,title,price\nx1,Other shop listing,5\n")
    run(spark, settings, other, source="theirs")
    counts = delta.read_pandas(settings.warehouse, "products").groupby("source").size().to_dict()
    assert counts == {"ours": 4, "theirs": 1}


def test_map_semicolons_and_json_lines(spark, settings, tmp_path):
    german = tmp_path / "a.csv"
    german.write_text("artikelnummer;bezeichnung;preis\nA1;Kaffeemaschine Magnifica S;1.299,00 €\nA2;Akku AA;4,99\n")
    report = run(spark, settings, german, source="competitor_a",
                 column_map=parse_column_map(["product_id=artikelnummer", "title=bezeichnung", "price=preis"]))
    assert report.products == 2
    got = delta.read_pandas(settings.warehouse, "products").set_index("product_id")
    assert got.loc["A1", "price"] == 1299.0 and got.loc["A2", "price"] == 4.99
    lines = tmp_path / "b.jsonl"
    lines.write_text('{"sku": "B1", "name": "Hub", "price": "$1,299.00", "specs": {"ports": 7}}\n{broken\n')
    report = run(spark, settings, lines, source="competitor_b")
    assert (report.products, report.quarantined) == (1, 1)
    got = delta.read_pandas(settings.warehouse, "products", filters=[("source", "=", "competitor_b")])
    assert got.price[0] == 1299.0 and got.attributes[0] == {"specs": '{"ports":7}'}


def test_a_column_map_is_checked_against_the_header_without_spark(settings, tmp_path):
    import deltalake

    german = tmp_path / "a.csv"
    german.write_text("artikelnummer;bezeichnung;preis\nA1;Kaffeemaschine;1.299,00\n")
    good = {"product_id": "artikelnummer", "title": "bezeichnung"}
    check_export(settings, str(german), None, None, good)
    with pytest.raises(InputError, match="--map title=titel: the input has no column 'titel'; "
                                         "columns: artikelnummer, bezeichnung, preis"):
        check_export(settings, str(german), None, None, {**good, "title": "titel"})
    with pytest.raises(InputError, match="no input column for product_id; columns are artikelnummer"):
        check_export(settings, str(german), None, None)
    frame = pd.DataFrame({"sku": ["p1"], "name": ["one"]})
    frame.to_parquet(tmp_path / "in.parquet")
    deltalake.write_deltalake(str(tmp_path / "table"), frame)
    for path in (tmp_path / "in.parquet", tmp_path / "table"):
        check_export(settings, str(path), None, None, {"product_id": "sku", "title": "name"})
        with pytest.raises(InputError, match="the input has no column 'title'; columns: sku, name"):
            check_export(settings, str(path), None, None, {"product_id": "sku", "title": "title"})
    # A format the file is not in is left to the reader, which names it in one line.
    for wrong in ("delta", "parquet"):
        check_export(settings, str(german), wrong, None, {"title": "titel"})
    # JSON lines name their columns row by row: only reading them tells.
    lines = tmp_path / "b.jsonl"
    lines.write_text('{"sku": "B1"}\n{"sku": "B2", "name": "Hub"}\n')
    check_export(settings, str(lines), None, None, {"product_id": "sku", "title": "name"})
    assert not Path(settings.warehouse, "products").exists()


def test_parquet_and_delta_inputs(spark, settings, tmp_path):
    frame = pd.DataFrame({"product_id": ["p1", "p2"], "title": ["one", "two"], "price": [1.5, None]})
    frame.to_parquet(tmp_path / "in.parquet")
    assert run(spark, settings, tmp_path / "in.parquet", source="pq").products == 2
    # The products table itself is a Delta input: ingest it again under another name.
    products_path = Path(settings.warehouse) / "products"
    report = run(spark, settings, products_path, source="copy", fmt="delta")
    assert report.rows_read == 2 and report.products == 2


def test_a_wrong_delimiter_stops_before_writing(spark, settings, messy_csv, tmp_path):
    run(spark, settings, messy_csv)
    version = delta.table_version(settings.warehouse, "products")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("sku,name,price\n" + "".join(f"{i},,bad\n" for i in range(10)))
    with pytest.raises(InputError, match=r"10 of 10 rows .* fail validation.*Nothing was written"):
        run(spark, settings, wrong, share=0.5)
    assert delta.table_version(settings.warehouse, "products") == version
    assert len(delta.read_pandas(settings.warehouse, "products")) == 4


def test_inputs_that_cannot_be_read(spark, settings, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        run(spark, settings, tmp_path / "nope.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("sku,name,price\n")
    with pytest.raises(InputError, match="holds no rows; refusing to empty source"):
        run(spark, settings, empty)
    headerless = tmp_path / "h.csv"
    headerless.write_text("a,b\n")
    with pytest.raises(InputError, match="no input column for product_id"):
        run(spark, settings, headerless)
    with pytest.raises(InputError, match="--map"):
        parse_column_map(["product_id"])
    with pytest.raises(InputError, match="source 'our shop' is not allowed"):
        run(spark, settings, empty, source="our shop")


@pytest.mark.parametrize("fmt, reason", [
    ("parquet", r"cannot read .*export.csv as parquet \(\[FAILED_READ_FILE.*\); name its format with --format"),
    ("delta", r"cannot read .*export.csv as delta \(.*_delta_log\); name its format with --format"),
    ("json", r"cannot read .*export.csv as json: no line is a JSON object; name its format with --format"),
])
def test_a_wrong_format_is_one_line_and_writes_nothing(spark, settings, messy_csv, fmt, reason):
    with pytest.raises(InputError, match=reason) as info:
        ingest(spark, settings, input_path=str(messy_csv), source="ours", fmt=fmt, run_id="r1")
    assert "\n" not in str(info.value) and "\tat " not in str(info.value)
    assert not delta.table_exists(settings.warehouse, "products")


def test_a_rejected_row_does_not_claim_its_id(spark, settings, tmp_path):
    path = tmp_path / "first_row_bad.csv"
    path.write_text("sku,name,price\n"
                    "A1,,5.00\n"                   # row 1: missing title, rejected
                    "A1,Bosch drill 18V,59.00\n"   # row 2: valid; A1 has no valid row before it
                    "A1,Bosch drill again,60.00\n"  # row 3: a real duplicate of row 2
                    "B2,Makita saw,99.00\n")
    report = run(spark, settings, path)
    assert (report.products, report.quarantined) == (2, 2)
    products = delta.read_pandas(settings.warehouse, "products").set_index("product_id")
    assert products.loc["A1", "title"] == "Bosch drill 18V"
    q = delta.read_pandas(settings.warehouse, "products_quarantine").set_index("row_number")
    assert q.loc[1, "reason"].startswith("missing title")
    assert q.loc[3, "reason"].endswith(f"already at {path}:2")


def test_currency_argument_is_validated_like_the_setting(spark, settings, tmp_path, capsys):
    from epm_spark.cli import main

    path = tmp_path / "plain.csv"
    path.write_text("sku,name,price\n1,Bosch drill,59.00\n")
    with pytest.raises(InputError, match="currency 'XYZ' is not a known ISO 4217 code"):
        run(spark, settings, path, currency="XYZ")
    assert not delta.table_exists(settings.warehouse, "products")
    assert main(["--warehouse", settings.warehouse, "ingest", "--input", str(path), "--source", "ours",
                 "--currency", "XYZ"]) == 2
    assert "currency 'XYZ' is not a known" in capsys.readouterr().err
    run(spark, settings, path, currency="gbp")
    assert delta.read_pandas(settings.warehouse, "products").currency.tolist() == ["GBP"]
    assert settings.ingest.default_currency is None  # the argument does not leak into the settings
