"""De-duplication with stable ids and change tracking, and price comparisons, on hand-made matches."""

import pandas as pd
import pytest

from epm_spark.errors import InputError
from epm_spark.io import delta
from epm_spark.pipeline.catalog.dedup import dedup
from epm_spark.pipeline.catalog.price_match import price_match

from catalog_tiny import products

NIGHT1 = ["a1", "a2", "a3", "b1", "b2", "c1", "c2", "d1", "d2", "d3", "e1", "f1", "f2", "h1", "h2", "h3", "h4", "h5"]
EDGES1 = [("a1", "a2"), ("a2", "a3"), ("b1", "b2"), ("c1", "c2"), ("d1", "d2"), ("d2", "d3"), ("f1", "f2"),
          ("h1", "h2"), ("h2", "h3"), ("h3", "h4"), ("h4", "h5")]
NIGHT2 = [p for p in NIGHT1 if p not in ("f1", "f2")] + ["a4", "g1", "g2"]
EDGES2 = [("a1", "a2"), ("a2", "a3"), ("a3", "a4"), ("b1", "b2"), ("c1", "c2"), ("b2", "c1"), ("d1", "d2"),
          ("g1", "g2"), ("h1", "h2"), ("h2", "h3"), ("h3", "h4"), ("h4", "h5")]


def matches(pairs, run_id, left="ours", right="ours", label="match", probability=0.9, rationale="same product"):
    rows = [dict(left_id=a, right_id=b, left_source=left, right_source=right, label=label, probability=probability,
                 decided_by="label", confidence=None, evidence=None, noise_ignored=None, rationale=rationale,
                 format_valid=True, decision_json=None, similarity=0.9, model_version="m",
                 scored_at=pd.Timestamp("2026-01-01", tz="UTC"), run_id=run_id) for a, b in pairs]
    return pd.DataFrame(rows)


def night(settings, ids, edges, run_id, weak=()):
    catalog = products(len(ids)).assign(product_id=ids)
    delta.write_pandas(settings.warehouse, "products", catalog, "replace", partition={"source": "ours"})
    frame = pd.concat([matches(edges, run_id), matches(weak, run_id, label="no_match", probability=0.2)])
    delta.write_pandas(settings.warehouse, "matches", frame, "replace",
                       partition={"run_id": run_id, "left_source": "ours", "right_source": "ours"})


def clusters(settings, run_id):
    c = delta.read_pandas(settings.warehouse, "clusters", filters=[("run_id", "=", run_id)])
    return c.set_index("product_id")


def test_stable_ids_and_changes_over_two_nights(spark, settings):
    settings.dedup.max_cluster_size = 4
    night(settings, NIGHT1, EDGES1, "n1", weak=[("e1", "a1")])
    report = dedup(spark, settings, source="ours", run_id="n1")
    c1 = clusters(settings, "n1")
    assert len(c1) == len(NIGHT1)
    groups = c1.groupby("cluster_id").apply(lambda g: "".join(sorted(g.index)), include_groups=False)
    assert sorted(groups) == sorted(["a1a2a3", "b1b2", "c1c2", "d1d2d3", "e1", "f1f2", "h1h2h3h4h5"])
    assert c1.loc["h1", "flagged"] and c1.loc["h1", "cluster_size"] == 5   # the chain is flagged, not trusted
    assert not c1.loc["a1", "flagged"]
    assert report.changes == {"created": 7} and report.flagged == 1

    # Re-running the same night changes nothing.
    dedup(spark, settings, source="ours", run_id="n1")
    pd.testing.assert_frame_equal(clusters(settings, "n1").sort_index().drop(columns="clustered_at"),
                                  c1.sort_index().drop(columns="clustered_at"))

    night(settings, NIGHT2, EDGES2, "n2")
    report = dedup(spark, settings, source="ours", run_id="n2")
    assert report.previous_run_id == "n1"
    c2 = clusters(settings, "n2")
    same = lambda p: c2.loc[p, "cluster_id"] == c1.loc[p, "cluster_id"]  # noqa: E731
    assert same("a1") and c2.loc["a4", "cluster_id"] == c1.loc["a1", "cluster_id"]   # grew, kept its id
    assert same("e1") and same("h1")                                                 # untouched
    assert c2.loc["b1", "cluster_id"] == c2.loc["c1", "cluster_id"]                   # merged
    assert c2.loc["b1", "cluster_id"] in (c1.loc["b1", "cluster_id"], c1.loc["c1", "cluster_id"])
    assert same("d1") and not same("d3")                                             # split: the bigger piece keeps it
    assert c2.loc["g1", "cluster_id"] not in set(c1.cluster_id)                        # created
    changes = delta.read_pandas(settings.warehouse, "cluster_changes", filters=[("run_id", "=", "n2")])
    by_id = changes.set_index("cluster_id")
    assert by_id.loc[c1.loc["a1", "cluster_id"], "change"] == "updated"
    assert by_id.loc[c2.loc["b1", "cluster_id"], "change"] == "merged"
    assert sorted(by_id.loc[c2.loc["b1", "cluster_id"], "previous_cluster_ids"]) == sorted(
        [c1.loc["b1", "cluster_id"], c1.loc["c1", "cluster_id"]])
    assert by_id.loc[c2.loc["d1", "cluster_id"], "change"] == "split"
    assert by_id.loc[c2.loc["d3", "cluster_id"], "change"] == "split"
    assert by_id.loc[c1.loc["e1", "cluster_id"], "change"] == "unchanged"
    assert by_id.loc[c1.loc["h1", "cluster_id"], "change"] == "unchanged"
    assert by_id.loc[c1.loc["f1", "cluster_id"], "change"] == "removed"
    assert by_id.loc[c2.loc["g1", "cluster_id"], "change"] == "created"
    assert changes.previous_run_id.unique().tolist() == ["n1"]


def test_dedup_needs_matches_of_the_run(spark, settings):
    delta.write_pandas(settings.warehouse, "products", products(3), "overwrite")
    night(settings, ["x1", "x2"], [("x1", "x2")], "n1")
    with pytest.raises(InputError, match="no pairs of ours against itself for run 'n9'"):
        dedup(spark, settings, source="ours", run_id="n9")


def listing(pid, source, price, currency, title):
    return products(1, source).assign(product_id=pid, price=price, currency=currency, title=title)


def test_price_comparisons_in_one_currency(spark, settings):
    settings.price_match.rates = {"EUR": 1.0, "USD": 0.9}
    catalog = [listing("o1", "ours", 100.0, "EUR", "Samsung 870 EVO 1TB"),
               listing("o2", "ours", 50.0, "EUR", "Crucial MX500 500GB"),
               listing("a1", "comp_a", 90.0, "EUR", "Samsung 870EVO 1TB SSD"),
               listing("a2", "comp_a", 40.0, "EUR", "Crucial MX500 1TB"),
               listing("b1", "comp_b", 120.0, "USD", "SAMSUNG 870 EVO 1000GB"),
               listing("b2", "comp_b", 45.0, "GBP", "Crucial MX500 500 GB")]
    for source, frame in pd.concat(catalog).groupby("source"):
        delta.write_pandas(settings.warehouse, "products", frame, "replace", partition={"source": source})
    delta.write_pandas(settings.warehouse, "matches", pd.concat([
        matches([("o1", "a1")], "r1", right="comp_a", rationale="same model and capacity"),
        matches([("o2", "a2")], "r1", right="comp_a", label="no_match", probability=0.1),
    ]), "replace", partition={"run_id": "r1", "left_source": "ours", "right_source": "comp_a"})
    delta.write_pandas(settings.warehouse, "matches", matches([("o1", "b1"), ("o2", "b2")], "r1", right="comp_b"),
                       "replace", partition={"run_id": "r1", "left_source": "ours", "right_source": "comp_b"})
    report = price_match(spark, settings, ours="ours", competitors=["comp_a", "comp_b"], run_id="r1")
    rows = delta.read_pandas(settings.warehouse, "price_comparisons").set_index("competitor_id")
    assert sorted(rows.index) == ["a1", "b1", "b2"]  # the no_match pair is not compared
    assert (rows.loc["a1", "difference"], rows.loc["a1", "percent"]) == (-10.0, -10.0)
    assert rows.loc["b1", "competitor_price"] == pytest.approx(108.0)      # 120 USD * 0.9
    assert rows.loc["b1", "percent"] == pytest.approx(8.0)
    assert rows.loc["b1", "competitor_price_original"] == 120.0 and rows.loc["b1", "competitor_currency"] == "USD"
    assert pd.isna(rows.loc["b2", "competitor_price"])                    # no GBP rate: not guessed
    assert rows.loc["a1", "rationale"] == "same model and capacity" and rows.loc["a1", "currency"] == "EUR"
    assert report.undercut == 1 and report.our_products_matched == 2
    assert report.unknown_currency == {"GBP": 1}
    assert report.median_undercut_percent == pytest.approx(10.0)
    assert "1 of our products are sold cheaper" in report.summary()
    with pytest.raises(InputError, match=r"hold no pairs of ours against \['comp_c'\]"):
        price_match(spark, settings, ours="ours", competitors=["comp_c"], run_id="r1")


def test_implausible_gaps_are_flagged_not_undercuts(spark, settings):
    catalog = [listing("o1", "ours", 100.0, "EUR", "Bosch drill 18V"),
               listing("o2", "ours", 50.0, "EUR", "Makita saw"),
               listing("o3", "ours", 10.0, "EUR", "Wera screwdriver"),
               listing("a1", "comp_a", 20.0, "EUR", "Bosch drill 18V battery only"),  # 20% of ours
               listing("a2", "comp_a", 45.0, "EUR", "Makita saw"),                   # a real undercut
               listing("a3", "comp_a", 40.0, "EUR", "Wera screwdriver set of 6")]     # 400% of ours
    for source, frame in pd.concat(catalog).groupby("source"):
        delta.write_pandas(settings.warehouse, "products", frame, "replace", partition={"source": source})
    delta.write_pandas(settings.warehouse, "matches", matches([("o1", "a1"), ("o2", "a2"), ("o3", "a3")], "r1",
                                                              right="comp_a"),
                       "replace", partition={"run_id": "r1", "left_source": "ours", "right_source": "comp_a"})
    report = price_match(spark, settings, ours="ours", competitors=["comp_a"], run_id="r1")
    rows = delta.read_pandas(settings.warehouse, "price_comparisons").set_index("competitor_id")
    assert rows.implausible.to_dict() == {"a1": True, "a2": False, "a3": True}
    assert report.undercut == 1 and report.median_undercut_percent == pytest.approx(10.0)
    assert report.implausible == 2 and [g["our_title"] for g in report.biggest_gaps] == ["Makita saw"]
    undercuts, flagged = report.summary().split("implausible, not counted above")
    assert "Bosch" not in undercuts and "Makita saw" in undercuts
    assert "2 comparisons with a competitor price under 35% or over 300% of ours" in flagged
    assert "Bosch drill 18V" in flagged and "Wera screwdriver" in flagged

    settings.price_match.min_ratio = 0.1
    report = price_match(spark, settings, ours="ours", competitors=["comp_a"], run_id="r1")
    assert report.implausible == 1 and report.undercut == 2


def test_price_ratio_settings_are_checked():
    from epm_spark.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="need 0 < min_ratio < 1 < max_ratio"):
        load_settings(overrides=["price_match.max_ratio=0.9"])
