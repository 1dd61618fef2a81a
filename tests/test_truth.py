"""Scoring a night's matches against a known truth (the demo's truth.csv)."""

from __future__ import annotations

import pandas as pd
import pytest

from epm_spark.errors import InputError
from epm_spark.io.delta import write_pandas
from epm_spark.io.schemas import MATCHES, PRODUCTS
from epm_spark.pipeline.catalog.truth import score_matches, wrong_matches


@pytest.fixture
def scored_night(tmp_path):
    wh = str(tmp_path / "warehouse")
    truth = pd.DataFrame({"source": ["ours", "ours", "ours", "comp", "comp", "comp"],
                          "product_id": ["a1", "a2", "a3", "b1", "b2", "b3"],
                          "product_key": ["P", "P", "Q", "P", "Q", "R"], "family": "f", "dirty": False})
    truth_csv = tmp_path / "truth.csv"
    truth.to_csv(truth_csv, index=False)
    now = pd.Timestamp("2026-11-29T00:00:00Z")
    # b3 was quarantined at ingestion: not a listing, so no true pair can involve it.
    products = pd.DataFrame({"source": truth.source[:5], "product_id": truth.product_id[:5], "title": "t",
                             "attributes": [{}] * 5, "ingested_at": now, "run_id": "r"}).reindex(columns=PRODUCTS.columns)
    for source, part in products.groupby("source"):
        write_pandas(wh, "products", part, mode="replace", partition={"source": source})
    rows = [("ours", "ours", "a1", "a2", "match"), ("ours", "ours", "a2", "a1", "match"),  # one pair, both ways
            ("ours", "ours", "a1", "a3", "no_match"),
            ("ours", "comp", "a1", "b1", "match"), ("ours", "comp", "a3", "b1", "match"),  # one right, one wrong
            ("ours", "comp", "a3", "b2", "no_match")]  # a true pair left unmatched
    matches = pd.DataFrame(rows, columns=["left_source", "right_source", "left_id", "right_id", "label"]).assign(
        decided_by="cross_encoder", run_id="night", format_valid=True).reindex(columns=MATCHES.columns)
    for column in MATCHES.columns:
        if matches[column].isna().all():
            matches[column] = pd.Series([None] * len(matches), dtype=object)
    matches["scored_at"] = now
    write_pandas(wh, "matches", matches, mode="append", run_id="night")
    return wh, truth_csv


def test_scores_per_catalog_pair(scored_night):
    wh, truth_csv = scored_night
    scores = {(s.left, s.right): s for s in score_matches(wh, truth_csv, "night")}
    dedup, price = scores[("ours", "ours")], scores[("ours", "comp")]
    assert (dedup.accepted, dedup.true_pairs, dedup.tp) == (1, 1, 1) and dedup.f1 == 1.0
    # true pairs ours x comp: a1-b1, a2-b1 (P) and a3-b2 (Q); accepted: a1-b1 (right), a3-b1 (wrong)
    assert (price.accepted, price.true_pairs, price.tp) == (2, 3, 1)
    assert price.precision == 0.5 and price.recall == pytest.approx(1 / 3)
    assert "F1 0.400" in price.line()


def test_wrong_matches_and_missing_runs(scored_night):
    wh, truth_csv = scored_night
    assert wrong_matches(truth_csv, [("ours", "a1", "comp", "b1"), ("ours", "a3", "comp", "b1")]) == [
        ("ours", "a3", "comp", "b1")]
    with pytest.raises(InputError, match="no rows for run 'other'"):
        score_matches(wh, truth_csv, "other")


def test_label_candidates_adds_blocking_pairs_once_in_their_family_split(tmp_path):
    from epm_spark.io.delta import read_pandas
    from epm_spark.io.schemas import CANDIDATES, LABELLED_PAIRS
    from epm_spark.pipeline.catalog.truth import label_candidates

    wh = str(tmp_path / "warehouse")
    truth = pd.DataFrame({"source": ["ours", "ours", "ours", "comp", "comp"],
                          "product_id": ["a1", "a2", "a3", "b1", "b2"],
                          "product_key": ["P", "P", "Q", "P", "S"], "family": ["f", "f", "g", "f", "h"],
                          "dirty": False})
    truth_csv = tmp_path / "truth.csv"
    truth.to_csv(truth_csv, index=False)
    gold = pd.DataFrame({"benchmark": "synthetic", "left_id": ["a1"], "right_id": ["b1"], "left_source": "ours",
                         "right_source": "comp", "label": [1], "split": ["valid"]}).reindex(columns=LABELLED_PAIRS.columns)
    write_pandas(wh, "labelled_pairs", gold, "replace", partition={"benchmark": "synthetic"})
    candidates = pd.DataFrame({"left_id": ["a1", "a2", "a3", "a1", "a9"], "right_id": ["b1", "b1", "b2", "a2", "b1"],
                               "left_source": ["ours", "ours", "ours", "ours", "ours"],
                               "right_source": ["comp", "comp", "comp", "ours", "comp"],
                               "similarity": 0.9, "rank": 1, "run_id": "night"}).reindex(columns=CANDIDATES.columns)
    candidates["similarity"] = candidates["similarity"].astype("float32")
    candidates["rank"] = candidates["rank"].astype("int32")
    write_pandas(wh, "candidates", candidates, "append", run_id="night")

    # a1-b1 is already gold; a9 is in no truth (quarantined); the rest are new.
    assert label_candidates(wh, truth_csv, "night") == 3
    pairs = read_pandas(wh, "labelled_pairs").set_index(["left_id", "right_id"])
    assert len(pairs) == 4
    assert pairs.loc[("a2", "b1"), ["label", "split"]].tolist() == [1, "valid"]  # family f is in valid
    assert pairs.loc[("a3", "b2"), "label"] == 0 and bool(pairs.loc[("a3", "b2"), "is_hard_negative"])
    assert pairs.loc[("a1", "a2"), "label"] == 1  # our own duplicate: a de-duplication example
    assert label_candidates(wh, truth_csv, "night") == 0
    assert len(read_pandas(wh, "labelled_pairs")) == 4
    with pytest.raises(InputError, match="no pairs for run 'other'"):
        label_candidates(wh, truth_csv, "other")
