"""Ranking metrics, the paired bootstrap over queries, and the BM25 baseline."""

import numpy as np
import pandas as pd
import pytest

from epm_spark.errors import InputError
from epm_spark.models.search.evaluation import (bm25_scorer, evaluate_systems, ndcg_at_k, paired_bootstrap_mean,
                                                reciprocal_rank)


def test_ndcg_and_mrr_on_hand_cases():
    gains = np.array([0.0, 0.5, 1.0])
    assert ndcg_at_k(np.array([0.1, 0.2, 0.3]), gains) == pytest.approx(1.0)
    worst = (0.5 / np.log2(3) + 1.0 / np.log2(4)) / (1.0 + 0.5 / np.log2(3))
    assert ndcg_at_k(np.array([0.3, 0.2, 0.1]), gains) == pytest.approx(worst)
    assert np.isnan(ndcg_at_k(np.array([1.0, 2.0]), np.zeros(2)))
    assert reciprocal_rank(np.array([0.9, 0.5, 0.1]), np.array([False, False, True])) == pytest.approx(1 / 3)
    assert np.isnan(reciprocal_rank(np.array([0.9]), np.array([False])))


def test_paired_bootstrap_separates_a_real_difference_from_none():
    rng = np.random.default_rng(0)
    b = rng.random(200)
    better = paired_bootstrap_mean(b + 0.05 + rng.normal(0, 0.02, 200), b)
    assert better["ci95_low"] > 0 and better["difference"] == pytest.approx(0.05, abs=0.01)
    same = paired_bootstrap_mean(b + rng.normal(0, 0.05, 200), b)
    assert same["ci95_low"] < 0 < same["ci95_high"]
    with_nan = paired_bootstrap_mean(np.array([1.0, np.nan, 0.5]), np.array([0.5, 0.2, np.nan]))
    assert with_nan["queries"] == 1 and with_nan["difference"] == pytest.approx(0.5)


def test_bm25_ranks_the_lexical_match_first_and_systems_compare():
    texts = ["sony turntable ps-lx350h", "apple airpods case", "samsung ssd 1tb", "sony headphones"]
    ids = ["a", "b", "c", "d"]
    scorer = bm25_scorer(texts, ids)
    s = scorer(["sony turntable"] * 4, texts, ids)["click"]
    assert s.argmax() == 0 and s[3] > s[1] == 0
    pairs = pd.DataFrame({"query": ["sony turntable"] * 4 + ["ssd"] * 4, "product_id": ids * 2, "text": texts * 2,
                          "impressions": 10, "clicks": [5, 0, 0, 1, 0, 0, 6, 0], "carts": [2, 0, 0, 0, 0, 0, 1, 0],
                          "purchases": [1, 0, 0, 0, 0, 0, 0, 0]})
    oracle = lambda q, t, i: {s: pairs["clicks"].to_numpy(float) for s in ("click", "cart", "purchase")}  # noqa: E731
    report = evaluate_systems(pairs, {"oracle": oracle, "bm25": scorer}, "oracle", resamples=100)
    assert report["queries_with_events"] == {"click": 2, "cart": 2, "purchase": 1}
    assert report["systems"]["oracle"]["click"]["ndcg@10"] == pytest.approx(1.0)
    assert set(report["differences"]) == {"bm25"}
    with pytest.raises(InputError, match="reference system"):
        evaluate_systems(pairs, {"bm25": scorer}, "oracle")
