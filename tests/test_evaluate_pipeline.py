"""``evaluate pipeline``: which pairs count as true matches, and the end-to-end figures."""

import gzip
import json

import pytest

from encoder_tiny import save_tiny
from epm_spark.config import load_settings
from epm_spark.io import delta
from epm_spark.io.benchmarks import load_benchmark
from epm_spark.pipeline.evaluate.blocking import evaluate_blocking
from epm_spark.pipeline.evaluate.end_to_end import evaluate_pipeline, labelled, true_matches
from tiny_student import tiny_student  # noqa: F401

LEFT = ["sony turntable black", "bose speaker mini", "canon camera lens", "dell laptop 16gb", "apple phone 64gb"]
RIGHT = ["sony turntable black new", "bose speaker", "canon camera", "dell laptop 16gb silver", "hp printer",
         "asus router", "logitech mouse"]


@pytest.fixture
def tables_benchmark(tmp_path):
    d = tmp_path / "toy_tables"
    d.mkdir()
    (d / "tableA.csv").write_text("id,title\n" + "".join(f"{i},{t}\n" for i, t in enumerate(LEFT)))
    (d / "tableB.csv").write_text("id,title\n" + "".join(f"{i},{t}\n" for i, t in enumerate(RIGHT)))
    # Left 0-3 match right 0-3; the match of left 0 is labelled in train only, and left 4 has none.
    (d / "train.csv").write_text("ltable_id,rtable_id,label\n0,0,1\n4,4,0\n")
    (d / "valid.csv").write_text("ltable_id,rtable_id,label\n2,5,0\n")
    (d / "test.csv").write_text("ltable_id,rtable_id,label\n0,1,0\n1,1,1\n2,2,1\n3,3,1\n4,6,0\n")
    return d


def test_tables_layout_truth_is_every_labelled_match_among_the_listings(tables_benchmark):
    bench = load_benchmark(tables_benchmark)
    everything = true_matches(bench, set(bench.left.product_id), set(bench.right.product_id))
    assert everything == {("0", "0"), ("1", "1"), ("2", "2"), ("3", "3")}  # train's match counts too
    assert true_matches(bench, {"0", "4"}, set(bench.right.product_id)) == {("0", "0")}
    assert true_matches(bench, {"1"}, {"0", "2"}) == set()


def test_tables_layout_labels_pairs_of_any_split_either_way_and_only_left_to_right(tables_benchmark):
    bench = load_benchmark(tables_benchmark)
    # (2, 5) is a labelled non-match of valid; (1, 0) would be right 1 against left 0, never labelled.
    assert labelled(bench, {("0", "1"), ("1", "0"), ("2", "5"), ("3", "6")}) == {("0", "1"), ("2", "5")}


def _offer(i, cluster, title):
    return {"id": i, "brand": None, "title": title, "description": None, "price": None,
            "priceCurrency": None, "cluster_id": cluster}


A, B, C, E = _offer(1, 10, "fenix 21700"), _offer(2, 10, "fenix 21700 5000mah"), _offer(3, 11, "fenix 18650"), \
    _offer(4, 11, "fenix 18650 3500mah")


def _wdc_folder(d, rows):
    d.mkdir()
    with gzip.open(d / "x80cc20rnd000un_gs.json.gz", "wt") as fh:
        for left, right, label in rows:
            rec = {f"{k}_left": v for k, v in left.items()} | {f"{k}_right": v for k, v in right.items()}
            fh.write(json.dumps(rec | {"pair_id": f"{left['id']}#{right['id']}", "label": label}) + "\n")
    return d


def test_pairs_layout_truth_is_shared_product_cluster(tmp_path):
    # Only (a, b) and (c, b) are labelled, yet (c, e) share a cluster and (a, e) do not.
    d = _wdc_folder(tmp_path / "toy_wdc", ((A, B, 1), (C, B, 0), (A, E, 0)))
    bench = load_benchmark(d)
    left_ids, right_ids = set(bench.pairs.left_id), set(bench.pairs.right_id)
    assert true_matches(bench, left_ids, right_ids) == {("1", "2"), ("3", "4")}
    # The clusters decide every pair among clustered offers, labelled or not.
    assert labelled(bench, {("1", "4"), ("4", "1")}) == {("1", "4"), ("4", "1")}


def test_pipeline_end_to_end_figures_agree_with_the_matches_it_wrote(spark, tmp_path, tables_benchmark, tiny_student):
    settings = load_settings(overrides=["spark.ui_enabled=false", "block.query_partitions=2",
                                        # every candidate becomes a match: precision and recall are then
                                        # fixed by blocking alone, which the test can recompute
                                        "match.similarity_floor=-1", "match.threshold=0.0"],
                             warehouse=str(tmp_path / "unused"))
    settings.encoder.backbone = str(save_tiny(tmp_path / "encoder"))
    keep = tmp_path / "scratch"
    result = evaluate_pipeline(spark, settings, benchmark=str(tables_benchmark), k=2, matcher=str(tiny_student),
                               keep=str(keep))
    # The test split's left listings (all five) against the whole right table.
    assert (result["left_listings"], result["right_listings"], result["true_matches"]) == (5, 7, 4)
    matches = delta.read_pandas(str(keep / "warehouse"), "matches")
    candidates = set(zip(matches.left_id, matches.right_id))
    assert result["candidates"] == len(candidates) == 5 * 2
    found = len(candidates & {("0", "0"), ("1", "1"), ("2", "2"), ("3", "3")})
    assert result["pair_completeness"] == round(found / 4, 4)
    assert result["predicted_matches"] == 10 and result["decided_by"] == {"label": 10}
    assert result["precision"] == round(found / 10, 4) and result["recall"] == round(found / 4, 4)
    judged = candidates & {("0", "0"), ("4", "4"), ("2", "5"), ("0", "1"), ("1", "1"), ("2", "2"), ("3", "3"),
                           ("4", "6")}
    assert result["predicted_labelled"] == len(judged) > 0
    assert result["precision_on_labelled"] == round(found / len(judged), 4)
    assert {"embed_s", "block_s", "match_s", "total_s"} <= set(result)
    assert not (tmp_path / "unused").exists()  # the user's warehouse is never touched

    sampled = evaluate_pipeline(spark, settings, benchmark=str(tables_benchmark), k=2, matcher=str(tiny_student),
                                queries=2, seed=1)
    assert sampled["left_listings"] == 2 and sampled["candidates"] == 4


def test_blocking_a_pool_of_offers_is_deduplication(spark, tmp_path):
    """A pairs-layout benchmark's sides are one pool: blocked against itself, and a true pair
    labelled either way round is found by the one unordered candidate ``block`` writes."""
    d = _wdc_folder(tmp_path / "toy_wdc", ((A, B, 1), (E, C, 1), (A, C, 0)))
    settings = load_settings(overrides=["spark.ui_enabled=false", "block.query_partitions=2"],
                             warehouse=str(tmp_path / "unused"))
    settings.encoder.backbone = str(save_tiny(tmp_path / "encoder"))
    keep = tmp_path / "scratch"
    result = evaluate_blocking(spark, settings, benchmark=str(d), ks=[3], split="test_000un", keep=str(keep))
    products = delta.read_pandas(str(keep / "warehouse"), "products")
    assert sorted(products.product_id) == ["1", "2", "3", "4"] and set(products.source) == {"toy_wdc"}
    candidates = delta.read_pandas(str(keep / "warehouse"), "candidates")
    assert (candidates.left_id < candidates.right_id).all() and (candidates.left_source == "toy_wdc").all()
    # Four offers, each with the other three: all six unordered pairs, both true ones among them.
    assert (result["candidates@3"], result["true_matches"]) == (6, 2)
    assert result["pair_completeness@3"] == 1.0 and result["reduction_ratio@3"] == 0.0
