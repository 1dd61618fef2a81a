"""``epm-spark evaluate pipeline``: blocking and matching end to end, through the Spark jobs.

The split's listings go into a scratch warehouse as two sources (one for a pairs-layout
benchmark), then the real ``embed``, ``block`` and ``match`` jobs run, and the decisions are
scored against every match the benchmark knows:

* tables layout (DeepMatcher): the labelled matches of all splits; the right side is the
  whole right table, as in a nightly run against a competitor's catalog;
* pairs layout (WDC Products): one pool of offers, blocked and matched against itself (a
  de-duplication run); two offers match when they share a product cluster.

A match the blocking step missed is a false negative of the pipeline, so recall here is
pair completeness times the matcher's recall on the candidates. ``precision`` counts an
accepted pair the benchmark never labelled as wrong. Where its labels are incomplete (WDC
Computers' right table holds several offers of one product, the same offer on both sides
among them, and labels one), that understates precision, so the report also gives the
accepted pairs the benchmark has labelled either way and the precision among those.

``queries`` restricts the left side to a sample of the split's left listings, which keeps a
CPU run short; the report says how many were used.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from epm_spark.config import Settings
from epm_spark.io import delta
from epm_spark.io.benchmarks import Benchmark, load_benchmark
from epm_spark.models.matcher.model_folder import is_model_folder, read_card
from epm_spark.pipeline.evaluate.blocking import embed_and_block, pair_ids, scratch_benchmark

__all__ = ["evaluate_pipeline", "labelled", "true_matches"]

log = logging.getLogger(__name__)


def _clustered(bench: Benchmark) -> bool:
    """A pairs-layout benchmark whose offers carry product clusters: the clusters are its truth."""
    return bench.layout == "pairs" and bench.pairs["left_cluster_id"].notna().any()


def true_matches(bench: Benchmark, left_ids: set[str], right_ids: set[str]) -> set[tuple[str, str]]:
    """Every (left_id, right_id) among these listings that the benchmark says is the same product."""
    pairs = bench.pairs
    if _clustered(bench):
        left_cluster = dict(zip(pairs["left_id"], pairs["left_cluster_id"]))
        right_cluster = dict(zip(pairs["right_id"], pairs["right_cluster_id"]))
        by_cluster: dict[Any, list[str]] = {}
        for rid in right_ids:
            if right_cluster.get(rid) is not None:
                by_cluster.setdefault(right_cluster[rid], []).append(rid)
        return {(lid, rid) for lid in left_ids for rid in by_cluster.get(left_cluster.get(lid), [])}
    positives = pairs[pairs["label"] == 1]
    return {(lid, rid) for lid, rid in zip(positives["left_id"], positives["right_id"])
            if lid in left_ids and rid in right_ids}


def labelled(bench: Benchmark, pairs: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """The pairs the benchmark has a verdict on, match or not: labelled in any split, or (pairs
    layout) both offers in a product cluster, which decides every pair among them."""
    rows = bench.pairs
    if _clustered(bench):
        clustered = set(rows.loc[rows["left_cluster_id"].notna(), "left_id"]) | \
            set(rows.loc[rows["right_cluster_id"].notna(), "right_id"])
        return {(a, b) for a, b in pairs if a in clustered and b in clustered}
    known = set(zip(rows["left_id"], rows["right_id"]))
    if bench.one_pool:  # a pool's pairs are unordered
        known |= {(b, a) for a, b in known}
    return pairs & known


def evaluate_pipeline(spark, settings: Settings, *, benchmark: str, split: str = "test", k: int | None = None,
                      encoder: str | None = None, matcher: str | None = None, explain: str = "none",
                      queries: int | None = None, seed: int = 0, keep: str | None = None) -> dict[str, Any]:
    from epm_spark.pipeline.catalog.match import match, resolve_matcher_model

    matcher = resolve_matcher_model(settings, matcher)
    bench = load_benchmark(benchmark)
    pairs = bench.split_pairs(split)
    left, right = bench.corpus(split)
    left = left[left["product_id"].isin(pairs["left_id"])]
    if queries is not None and queries < len(left):
        left = left.sample(n=queries, random_state=seed)
    k = k or settings.block.k
    dedup = bench.one_pool
    if dedup:
        # One pool of offers, blocked and matched against itself: its true pairs are unordered.
        pool = set(left["product_id"]) | set(right["product_id"])
        truth = {(a, b) for a, b in pair_ids(true_matches(bench, pool, pool), dedup=True) if a != b}
    else:
        truth = true_matches(bench, set(left["product_id"]), set(right["product_id"]))
    threshold = settings.match.threshold
    if threshold is None and is_model_folder(matcher):
        card = read_card(matcher)
        if bench.name in card.thresholds:
            threshold = card.threshold(bench.name)  # tuned on this benchmark's validation split
    settings = dataclasses.replace(settings, match=dataclasses.replace(settings.match, explain=explain,
                                                                       threshold=threshold))
    timings: dict[str, float] = {}
    with scratch_benchmark(settings, bench, left, right, keep=keep) as local:
        embedded, blocked = embed_and_block(spark, local, bench, k=k, model=encoder, timings=timings)
        t = time.monotonic()
        matched = match(spark, local, left=bench.left_source, right=bench.right_source, run_id="eval",
                        model=matcher)
        timings["match_s"] = round(time.monotonic() - t, 2)
        decisions = delta.read_pandas(local.warehouse, "matches", columns=["left_id", "right_id", "label"])
    candidates = set(pair_ids(zip(decisions["left_id"], decisions["right_id"]), dedup))
    accepted = decisions[decisions["label"] == "match"]
    predicted = set(pair_ids(zip(accepted["left_id"], accepted["right_id"]), dedup))
    tp = len(predicted & truth)
    precision = tp / len(predicted) if predicted else 0.0
    judged = labelled(bench, predicted)
    recall = tp / len(truth) if truth else 0.0
    total_s = sum(timings.values())
    result: dict[str, Any] = {
        "benchmark": bench.name, "split": bench.resolve_split(split), "k": k,
        "encoder": embedded.model_version, "matcher": matcher, "threshold": threshold, "explain": explain,
        "left_listings": len(left), "right_listings": len(right), "true_matches": len(truth),
        "candidates": len(candidates), "pair_completeness": round(len(truth & candidates) / len(truth), 4)
        if truth else None,
        "decided_by": matched.decided_by, "predicted_matches": len(predicted),
        "precision": round(precision, 4), "recall": round(recall, 4),
        "predicted_labelled": len(judged),
        "precision_on_labelled": round(len(judged & truth) / len(judged), 4) if judged else None,
        "f1": round(2 * precision * recall / (precision + recall), 4) if tp else 0.0,
        "index_kind": blocked.index_kind, **timings, "total_s": round(total_s, 2),
        "candidates_per_s_matched": round(len(candidates) / timings["match_s"], 2) if timings["match_s"] else None,
    }
    log.info("pipeline on %s/%s: %s", bench.name, split, result)
    return result
