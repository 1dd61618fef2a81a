"""Training examples from labelled_pairs rows: positives, negatives, duplicates, graded groups."""

import numpy as np
import pandas as pd
import pytest

from epm_spark.errors import InputError
from epm_spark.models.encoder.data import (
    ContrastiveExample, GradedQuery, benchmarks_from_tables, contrastive_examples, graded_queries,
    known_duplicates, right_keys, sample_random_negatives,
)

L, R = "b_left", "b_right"


def pairs(rows, **extra):
    frame = pd.DataFrame(rows, columns=["left_id", "right_id", "label", "split", "left_cluster_id",
                                        "right_cluster_id", "is_hard_negative"])
    frame["benchmark"] = "b"
    frame["left_source"] = L
    frame["right_source"] = R
    for k, v in extra.items():
        frame[k] = v
    return frame


DEEPMATCHER = pairs([
    ("1", "a", 1, "train", None, None, None),
    ("1", "b", 0, "train", None, None, None),
    ("1", "c", 0, "train", None, None, None),
    ("2", "b", 1, "train", None, None, None),
    ("2", "d", 1, "train", None, None, None),
    ("3", "e", 0, "train", None, None, None),
    ("9", "z", 1, "test", None, None, None),
])

WDC = pairs([
    ("1", "a", 1, "train_medium", "c1", "c1", False),
    ("1", "b", 0, "train_medium", "c1", "c2", True),
    ("1", "x", 0, "train_medium", "c1", "c9", False),
    ("2", "b", 1, "train_medium", "c2", "c2", False),
    ("3", "a2", 0, "train_medium", "c1", "c1b", False),  # label 0 but cluster c1 offers elsewhere
    ("3", "q", 1, "train_medium", "c1", "c1", False),
    ("q", "1", 1, "train_medium", "c1", "c1", False),  # offer ids are global: "1" is also a right offer
])


def test_contrastive_examples_from_label_one_pairs_with_their_negatives():
    examples = contrastive_examples(DEEPMATCHER)
    assert [(e.anchor[1], e.positive[1]) for e in examples] == [("1", "a"), ("2", "b"), ("2", "d")]
    assert examples[0].negatives == [(R, "b"), (R, "c")]
    assert examples[0].anchor == (L, "1")
    assert all(e.positive != (R, "z") for e in examples), "test pairs never reach training"


def test_same_cluster_offers_become_positives_and_hard_negatives_come_first():
    examples = contrastive_examples(WDC)
    got = {(e.anchor[1], e.positive[1]) for e in examples}
    # Offer 3 is in cluster c1 with right offers a and q: both are its positives.
    assert {("1", "a"), ("1", "q"), ("2", "b"), ("3", "q"), ("3", "a"), ("q", "1")} <= got
    assert ("1", "1") not in got and ("q", "q") not in got, "an offer is no positive of itself"
    first = next(e for e in examples if e.anchor[1] == "1")
    assert first.negatives == [(R, "b"), (R, "x")], "the hard negative is listed before the random one"


def test_relation_column_marks_substitutes_as_positives():
    frame = pairs([("1", "a", 0, "train", None, None, None), ("1", "b", 0, "train", None, None, None)],
                  relation=["substitute", "irrelevant"])
    examples = contrastive_examples(frame)
    assert [(e.positive[1], e.negatives) for e in examples] == [("a", [(R, "b")])]


def test_known_duplicates_cover_labels_and_clusters():
    dup = known_duplicates(WDC)
    # ... but its own offer on the right side stays out of its negatives.
    assert dup[(L, "1")] == {(R, "a"), (R, "q"), (R, "1")}
    assert dup[(L, "3")] == {(R, "a"), (R, "q"), (R, "1")}


def test_graded_queries_on_wdc_and_on_deepmatcher():
    wdc = {q.query[1]: q.groups for q in graded_queries(WDC)}
    assert wdc["1"] == {2: [(R, "a"), (R, "q")], 1: [(R, "b")], 0: [(R, "x")]}
    assert wdc["q"] == {2: [(R, "1"), (R, "a")]}, "its cluster mates, not its own offer q"
    # DeepMatcher flags no hard negatives: every labelled non-match came from blocking, so it is hard.
    dm = {q.query[1]: q.groups for q in graded_queries(DEEPMATCHER)}
    assert dm["1"] == {2: [(R, "a")], 1: [(R, "b"), (R, "c")]}
    assert dm["3"] == {1: [(R, "e")]}
    assert list(dm["1"]) == [2, 1], "groups are listed from the highest grade down"


def test_graded_queries_with_relations_use_four_grades():
    frame = pairs([("1", k, 0, "train", None, None, None) for k in "abcd"],
                  relation=["exact", "substitute", "complement", "irrelevant"])
    (query,) = graded_queries(frame)
    assert query.groups == {3: [(R, "a")], 2: [(R, "b")], 1: [(R, "c")], 0: [(R, "d")]}


def test_random_negatives_avoid_known_and_listed_candidates():
    query = GradedQuery((L, "1"), {2: [(R, "a")], 1: [(R, "b")]})
    pool = [(R, k) for k in "abcdef"]
    rng = np.random.default_rng(0)
    (out,) = sample_random_negatives([query], pool, 3, {(L, "1"): {(R, "c")}}, rng)
    assert len(out.groups[0]) == 3
    assert set(out.groups[0]) <= {(R, "d"), (R, "e"), (R, "f")}
    assert query.groups == {2: [(R, "a")], 1: [(R, "b")]}, "the input is not modified"


def test_negative_pool_is_the_training_pairs_right_side():
    assert right_keys(DEEPMATCHER) == [(R, k) for k in "abcde"]


def test_missing_split_and_columns_are_clear_errors():
    with pytest.raises(InputError, match="no pairs of split"):
        contrastive_examples(DEEPMATCHER, splits=["nope"])
    with pytest.raises(InputError, match="lacks columns"):
        contrastive_examples(DEEPMATCHER.drop(columns=["label"]))
    with pytest.raises(InputError, match="no positive pair"):
        contrastive_examples(DEEPMATCHER[DEEPMATCHER["label"] == 0])


def test_benchmarks_from_tables_infers_the_layout():
    products = pd.DataFrame({"product_id": ["1", "a"], "source": [L, R], "title": ["x", "y"]})
    (tables,) = benchmarks_from_tables(products, DEEPMATCHER)
    assert tables.layout == "tables" and len(tables.left) == 1 and len(tables.right) == 1
    (wdc,) = benchmarks_from_tables(products, WDC)
    assert wdc.layout == "pairs"
    with pytest.raises(InputError, match="no benchmark other"):
        benchmarks_from_tables(products, DEEPMATCHER, ["other"])
    with pytest.raises(InputError, match="load the benchmark first"):
        benchmarks_from_tables(products[products["source"] == L], DEEPMATCHER)


def test_examples_are_plain_dataclasses():
    e = ContrastiveExample((L, "1"), (R, "a"))
    assert e.negatives == []
