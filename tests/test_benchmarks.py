"""Both benchmark layouts: small folders built here, and the real data when it is present."""

import gzip
import json

import pandas as pd
import pytest

from epm_spark.errors import InputError
from epm_spark.io import delta
from epm_spark.io.benchmarks import load_benchmark
from epm_spark.pipeline.catalog.load_benchmark import load_benchmark_tables


@pytest.fixture
def tables_layout(tmp_path):
    d = tmp_path / "mini_tables"
    d.mkdir()
    (d / "tableA.csv").write_text("id,title,manufacturer,price\n0,sony turntable pslx350h,sony,49.99\n1,bose speaker,,\n")
    (d / "tableB.csv").write_text("id,title,manufacturer,price\n0,Sony PS-LX350H turntable,sony,$52.00\n1,bose am5,bose,\n")
    (d / "train.csv").write_text("ltable_id,rtable_id,label\n0,0,1\n0,1,0\n")
    (d / "valid.csv").write_text("ltable_id,rtable_id,label\n1,1,1\n")
    (d / "test.csv").write_text("ltable_id,rtable_id,label\n1,0,0\n")
    return d


def _offer(i, cluster, title):
    return {"id": i, "brand": None, "title": title, "description": None, "price": "1.69E2",
            "priceCurrency": "eur", "cluster_id": cluster}


@pytest.fixture
def pairs_layout(tmp_path):
    d = tmp_path / "mini_wdc"
    d.mkdir()
    def write(name, rows):
        with gzip.open(d / name, "wt") as fh:
            for left, right, label, hard in rows:
                rec = {f"{k}_left": v for k, v in left.items()} | {f"{k}_right": v for k, v in right.items()}
                rec |= {"pair_id": f"{left['id']}#{right['id']}", "label": label, "is_hard_negative": hard}
                fh.write(json.dumps(rec) + "\n")
    a, b, c = _offer(1, 10, "Fenix 21700 battery"), _offer(2, 10, "Fenix 5000mAh 21700"), _offer(3, 11, "Fenix 18650")
    write("x80cc20rnd000un_train_medium.json.gz", [(a, b, 1, False), (a, c, 0, True)])
    write("x80cc20rnd000un_valid_medium.json.gz", [(c, b, 0, True)])
    write("x80cc20rnd000un_gs.json.gz", [(b, a, 1, False)])
    write("x80cc20rnd050un_gs.json.gz", [(c, a, 0, False)])
    return d


def test_tables_layout(tables_layout):
    b = load_benchmark(tables_layout)
    assert (b.name, b.layout) == ("mini_tables", "tables")
    assert b.left.set_index("product_id").loc["0", "brand"] == "sony"
    assert b.right.set_index("product_id").loc["0", "price"] == 52.0
    assert b.splits == ["test", "train", "valid"]
    assert b.split_pairs("train")[["left_id", "right_id", "label"]].values.tolist() == [["0", "0", 1], ["0", "1", 0]]
    assert set(b.pairs.left_source) == {"mini_tables_left"}


def test_pairs_layout_splits_clusters_and_aliases(pairs_layout):
    b = load_benchmark(pairs_layout, name="wdc")
    assert b.layout == "pairs"
    assert b.splits == ["test_000un", "test_050un", "train_medium", "valid_medium"]
    assert b.resolve_split("train") == "train_medium" and b.resolve_split("test") == "test_050un"
    train = b.split_pairs("train")
    assert train.is_hard_negative.tolist() == [False, True]
    assert train.left_cluster_id.tolist() == ["10", "10"]
    offer = b.left.set_index("product_id").loc["1"]
    assert (offer.price, offer.currency) == (169.0, "EUR")
    left, right = b.corpus("test_000un")
    assert left.product_id.tolist() == ["2"] and right.product_id.tolist() == ["1"]
    # Both sides are one pool of offers: one source, so an offer's pairs on either side are one listing's.
    assert b.left_source == b.right_source == "wdc" and set(b.pairs.left_source) == set(b.pairs.right_source) == {"wdc"}
    assert sorted(b.listings().product_id) == ["1", "2", "3"]
    with pytest.raises(InputError, match="no split 'nope'"):
        b.split_pairs("nope")


def test_an_id_naming_two_different_offers_is_refused(pairs_layout):
    a, b = _offer(1, 10, "Fenix 21700 battery"), _offer(2, 10, "Fenix 5000mAh 21700")
    with gzip.open(pairs_layout / "x80cc20rnd000un_valid_medium.json.gz", "wt") as fh:
        rec = {f"{k}_left": v for k, v in b.items()} | {f"{k}_right": v for k, v in (a | {"title": "Nitecore"}).items()}
        fh.write(json.dumps(rec | {"pair_id": "2#1", "label": 0, "is_hard_negative": True}) + "\n")
    with pytest.raises(InputError, match="1 offer ids name different offers.*1: 'Fenix 21700 battery' vs 'Nitecore'"):
        load_benchmark(pairs_layout)


def test_bad_folders_say_what_is_expected(tmp_path, tables_layout):
    with pytest.raises(InputError, match="does not exist"):
        load_benchmark(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="neither a DeepMatcher folder"):
        load_benchmark(tmp_path / "empty")
    (tables_layout / "test.csv").write_text("ltable_id,rtable_id,label\n9,0,0\n")
    with pytest.raises(InputError, match="pair ids not in tableA.csv"):
        load_benchmark(tables_layout)


@pytest.mark.parametrize("label", ["x", "7", ""])
def test_a_label_that_is_not_0_or_1_is_refused_with_its_file_and_line(tables_layout, pairs_layout, label):
    (tables_layout / "test.csv").write_text(f"ltable_id,rtable_id,label\n1,0,0\n0,0,{label}\n")
    shown = "empty" if label == "" else repr(label)
    with pytest.raises(InputError, match=rf"test.csv: line 3: label {shown} is not 0 or 1 \(1 such rows\)"):
        load_benchmark(tables_layout)
    a, b = _offer(1, 10, "Fenix 21700 battery"), _offer(2, 10, "Fenix 5000mAh 21700")
    with gzip.open(pairs_layout / "x80cc20rnd000un_gs.json.gz", "wt") as fh:
        rec = {f"{k}_left": v for k, v in b.items()} | {f"{k}_right": v for k, v in a.items()}
        fh.write(json.dumps(rec | {"pair_id": "2#1", "label": 2, "is_hard_negative": False}) + "\n")
    with pytest.raises(InputError, match=r"x80cc20rnd000un_gs.json.gz: line 1: label '2' is not 0 or 1"):
        load_benchmark(pairs_layout)


def test_load_benchmark_writes_products_and_pairs_and_replaces_on_reload(settings, tables_layout, pairs_layout):
    for _ in range(2):
        load_benchmark_tables(None, settings, path=str(tables_layout), run_id="r1")
    # A load from before WDC files became one pool left each side as a source; a reload clears them.
    stale = load_benchmark(pairs_layout, name="wdc").left
    stale = stale.assign(source="wdc_left", ingested_at=pd.Timestamp.now(tz="UTC"), run_id="r0")
    delta.write_pandas(settings.warehouse, "products", stale, "append", run_id="r0", job="ingest")
    load_benchmark_tables(None, settings, path=str(pairs_layout), name="wdc", run_id="r1")
    products = delta.read_pandas(settings.warehouse, "products")
    # A WDC file's two sides are one pool of offers: each offer once, under one source.
    assert products.groupby("source").size().to_dict() == {"mini_tables_left": 2, "mini_tables_right": 2, "wdc": 3}
    pairs = delta.read_pandas(settings.warehouse, "labelled_pairs")
    assert pairs.groupby("benchmark").size().to_dict() == {"mini_tables": 4, "wdc": 5}


@pytest.mark.benchmark_data
@pytest.mark.parametrize("name, left, right, splits", [
    ("abt_buy", 1081, 1092, {"train": (5743, 616), "valid": (1916, 206), "test": (1916, 206)}),
    ("amazon_google", 1363, 3226, {"train": (6874, 699), "valid": (2293, 234), "test": (2293, 234)}),
    ("wdc_products", None, None, {"train_medium": (6000, 1500), "test_000un": (4500, 500), "test_050un": (4500, 500)}),
])
def test_real_benchmarks_match_their_published_sizes(benchmarks_dir, name, left, right, splits):
    b = load_benchmark(benchmarks_dir / name)
    if left is not None:
        assert (len(b.left), len(b.right)) == (left, right)
    for split, (n, positives) in splits.items():
        pairs = b.split_pairs(split)
        assert (len(pairs), int(pairs.label.sum())) == (n, positives)
    assert b.left.title.notna().all()
