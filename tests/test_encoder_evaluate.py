"""Retrieval metrics on hand-made cases whose answers are computed by hand."""

import math

import numpy as np
import pandas as pd
import pytest

from epm_spark.io.benchmarks import Benchmark
from epm_spark.models.encoder.evaluate import retrieval_metrics, retrieval_task


def corpus_and_queries():
    # Corpus items on the unit circle; each query is closest to a known ordering of items.
    angles = np.array([0, 30, 60, 90, 120, 150]) * math.pi / 180
    corpus = np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32)
    q_angles = np.array([0, 85, 155]) * math.pi / 180  # nearest: 0,1,2,...; 3,2,4,...; 5,4,3,...
    queries = np.stack([np.cos(q_angles), np.sin(q_angles)], 1).astype(np.float32)
    return queries, corpus


def test_recall_mrr_and_reduction_ratio_by_hand():
    queries, corpus = corpus_and_queries()
    relevant = [{0}, {2}, {0, 4}]  # ranks of the first match: 1, 2, 2
    m = retrieval_metrics(queries, corpus, relevant, ks=(1, 2, 3))
    assert m["recall@1"] == pytest.approx(1 / 3)
    assert m["recall@2"] == pytest.approx(1.0)
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)
    # Pairs: 4 true pairs; top-2 holds (q0,0), (q1,2), (q2,4); item 0 is last for q2.
    assert m["pair_recall@2"] == pytest.approx(3 / 4)
    assert m["pair_recall@3"] == pytest.approx(3 / 4)
    assert m["reduction_ratio@2"] == pytest.approx(1 - 2 / 6)
    assert m["queries"] == 3 and m["corpus"] == 6
    assert "ndcg@10" not in m


def test_mrr_counts_the_whole_corpus_beyond_top_k():
    queries, corpus = corpus_and_queries()
    m = retrieval_metrics(queries[:1], corpus, [{5}], ks=(1,))
    assert m["recall@1"] == 0.0 and m["mrr"] == pytest.approx(1 / 6)


def test_ndcg_at_10_with_grades_by_hand():
    queries, corpus = corpus_and_queries()
    # Query 0 ranks items 0,1,2,3,4,5. Grades: item 1 match (2), item 0 hard negative (1).
    grades = [{1: 2, 0: 1}]
    m = retrieval_metrics(queries[:1], corpus, [{1}], grades, ks=(1,))
    dcg = (2 ** 1 - 1) / math.log2(2) + (2 ** 2 - 1) / math.log2(3)
    ideal = (2 ** 2 - 1) / math.log2(2) + (2 ** 1 - 1) / math.log2(3)
    assert m["ndcg@10"] == pytest.approx(dcg / ideal)


def listings(source, ids, titles, clusters=None):
    return pd.DataFrame({
        "product_id": ids, "source": source, "title": titles,
        "attributes": [{"cluster_id": c} if c else {} for c in (clusters or [None] * len(ids))],
    })


def test_task_of_a_tables_benchmark_uses_the_whole_right_table():
    left = listings("t_left", ["1", "2", "3"], ["x", "y", "z"])
    right = listings("t_right", ["a", "b", "c", "d"], ["x", "y", "z", "w"])
    pairs = pd.DataFrame({"left_id": ["1", "1", "2", "3"], "right_id": ["a", "b", "b", "c"], "label": [1, 0, 1, 1],
                          "split": ["test", "test", "test", "train"], "left_cluster_id": None,
                          "right_cluster_id": None, "is_hard_negative": None})
    task = retrieval_task(Benchmark("t", "tables", left, right, pairs), "test")
    assert list(task.queries["product_id"]) == ["1", "2"], "only left listings with a match in the split"
    assert len(task.corpus) == 4
    assert task.relevant == [{0}, {1}]
    assert task.grades is None


def test_task_of_a_wdc_benchmark_counts_cluster_mates_and_grades():
    left = listings("w_left", ["1", "2"], ["x", "y"], ["c1", "c2"])
    right = listings("w_right", ["a", "b", "c", "d"], ["x", "x2", "y", "z"], ["c1", "c1", "c3", "c4"])
    pairs = pd.DataFrame({
        "left_id": ["1", "1", "1", "2", "2"], "right_id": ["a", "c", "d", "b", "d"], "label": [1, 0, 0, 0, 0],
        "split": ["test_050un"] * 5, "left_cluster_id": ["c1", "c1", "c1", "c2", "c2"],
        "right_cluster_id": ["c1", "c3", "c4", "c1", "c4"], "is_hard_negative": [False, True, False, True, False],
    })
    task = retrieval_task(Benchmark("w", "pairs", left, right, pairs), "test")
    assert list(task.queries["product_id"]) == ["1"]
    corpus_ids = list(task.corpus["product_id"])
    # b shares cluster c1 with query 1 (it was paired with another offer): also a true match.
    assert {corpus_ids[i] for i in task.relevant[0]} == {"a", "b"}
    assert {corpus_ids[i]: g for i, g in task.grades[0].items()} == {"a": 2, "b": 2, "c": 1}
    assert task.exclude == [set()]


def test_a_wdc_offer_is_not_its_own_match():
    # Offer ids are global in WDC Products: offer 1 is a left offer and, in another pair, a right one.
    left = listings("w_left", ["1"], ["x"], ["c1"])
    right = listings("w_right", ["1", "a", "z"], ["x", "x2", "z"], ["c1", "c1", "c9"])
    pairs = pd.DataFrame({"left_id": ["1", "1", "a"], "right_id": ["a", "z", "1"], "label": [1, 0, 1],
                          "split": ["test_050un"] * 3, "left_cluster_id": ["c1", "c1", "c1"],
                          "right_cluster_id": ["c1", "c9", "c1"], "is_hard_negative": [False, True, False]})
    task = retrieval_task(Benchmark("w", "pairs", left, right, pairs), "test")
    assert task.relevant == [{1}] and task.exclude == [{0}]
    # Identical text would put the query's own offer first; it is taken out of the ranking.
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=np.float32)
    m = retrieval_metrics(vectors[:1], vectors[1:], task.relevant, task.grades, ks=(1,), exclude=task.exclude)
    assert m["recall@1"] == 1.0 and m["mrr"] == 1.0
    without = retrieval_metrics(vectors[:1], vectors[1:], task.relevant, task.grades, ks=(1,))
    assert without["recall@1"] == 0.0 and without["mrr"] == pytest.approx(0.5)
