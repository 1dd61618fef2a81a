"""Retrieval quality of an encoder on a labelled benchmark split.

For every left listing of the split that has a true match, rank the right corpus
(``Benchmark.corpus(split)``: the whole right table for DeepMatcher folders, the split's
offers for WDC Products) by cosine similarity and ask where the first true match lands:

* ``recall@k``: share of queries with a true match among the top k;
* ``pair_recall@k``: share of true (query, match) pairs among the top k (what blocking
  with k candidates per listing keeps, for queries with several matches);
* ``mrr``: mean of 1 / rank of the first true match over the whole corpus;
* ``reduction_ratio@k``: 1 - k / |right corpus|, the share of the cross product that
  k-candidate blocking spares the matcher;
* ``ndcg@10`` where grades exist (WDC Products: same cluster 2 > hard negative 1 > other 0).

True matches are the split's label-1 pairs plus, where offers carry cluster ids, every
corpus offer of the query's cluster; WDC Products offers keep one id on both sides, so the
query's own offer is taken out of its ranking (it is no match of itself). Exact search (a matrix product in torch), so this
runs without faiss.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from epm_spark.io.benchmarks import Benchmark
from epm_spark.models.encoder.data import hard_negative_flags

__all__ = ["retrieval_metrics", "evaluate_retrieval", "RetrievalTask", "retrieval_task", "DEFAULT_KS"]

DEFAULT_KS = (1, 10, 50)
GRADE_MATCH, GRADE_HARD = 2, 1


class RetrievalTask:
    """Queries, corpus and relevance of one benchmark split, as row positions.

    ``exclude`` holds, per query, corpus rows that are the query's own offer: WDC Products
    offers keep one global id and appear on both sides, and an offer is no match of itself.
    """

    def __init__(self, queries: pd.DataFrame, corpus: pd.DataFrame, relevant: list[set[int]],
                 grades: list[dict[int, int]] | None, exclude: list[set[int]] | None = None) -> None:
        self.queries = queries
        self.corpus = corpus
        self.relevant = relevant
        self.grades = grades
        self.exclude = exclude


def _cluster(listing_attributes: Any) -> str | None:
    if isinstance(listing_attributes, Mapping):
        return listing_attributes.get("cluster_id")
    if isinstance(listing_attributes, (list, tuple)):
        return dict(listing_attributes).get("cluster_id")
    return None


def retrieval_task(bench: Benchmark, split: str) -> RetrievalTask:
    """The evaluation set of ``bench``'s ``split`` (``train``/``valid``/``test`` or a stored name)."""
    pairs = bench.split_pairs(split)
    left, right = bench.corpus(split)
    right_pos = {pid: i for i, pid in enumerate(right["product_id"].astype(str))}
    relevant: dict[str, set[int]] = defaultdict(set)
    hard: dict[str, set[int]] = defaultdict(set)
    hard_flags = hard_negative_flags(pairs)
    for lid, rid, label, is_hard in zip(pairs["left_id"].astype(str), pairs["right_id"].astype(str),
                                        pairs["label"].astype(int), hard_flags):
        if rid not in right_pos:
            continue
        if label == 1:
            relevant[lid].add(right_pos[rid])
        elif is_hard:
            hard[lid].add(right_pos[rid])
    clusters = pairs["left_cluster_id"].notna().any()
    if clusters:
        by_cluster: dict[str, set[int]] = defaultdict(set)
        for i, attrs in enumerate(right["attributes"]):
            c = _cluster(attrs)
            if c is not None:
                by_cluster[c].add(i)
        for lid, attrs in zip(left["product_id"].astype(str), left["attributes"]):
            c = _cluster(attrs)
            if c is not None and lid in relevant:
                relevant[lid] |= by_cluster.get(c, set())
    exclude: list[set[int]] | None = None
    if bench.layout == "pairs":
        own = {lid: {right_pos[lid]} for lid in relevant if lid in right_pos}
        relevant = {lid: rel - own.get(lid, set()) for lid, rel in relevant.items()}
        relevant = {lid: rel for lid, rel in relevant.items() if rel}
    queries = left[left["product_id"].astype(str).isin(relevant)].reset_index(drop=True)
    ids = queries["product_id"].astype(str).tolist()
    rel = [relevant[i] for i in ids]
    grades = None
    if clusters:
        grades = [{**{j: GRADE_HARD for j in hard[i]}, **{j: GRADE_MATCH for j in relevant[i]}} for i in ids]
    if bench.layout == "pairs":
        exclude = [own.get(i, set()) for i in ids]
    return RetrievalTask(queries, right, rel, grades, exclude)


def retrieval_metrics(query_vectors: np.ndarray, corpus_vectors: np.ndarray, relevant: Sequence[set[int]],
                      grades: Sequence[Mapping[int, int]] | None = None, ks: Sequence[int] = DEFAULT_KS,
                      chunk: int = 1024, exclude: Sequence[set[int]] | None = None) -> dict[str, float]:
    """Recall@k, pair recall@k, MRR, reduction ratio@k and (with grades) NDCG@10 of exact search.

    Corpus rows in ``exclude[i]`` are never retrieved for query i.
    """
    if len(query_vectors) != len(relevant):
        raise ValueError(f"{len(query_vectors)} query vectors but {len(relevant)} relevance sets")
    n_queries, n_corpus = len(relevant), len(corpus_vectors)
    metrics: dict[str, float] = {"queries": float(n_queries), "corpus": float(n_corpus)}
    if n_queries == 0 or n_corpus == 0:
        return metrics
    ks = sorted(set(ks) | {10})
    top = min(max(ks), n_corpus)
    corpus = torch.from_numpy(np.ascontiguousarray(corpus_vectors, dtype=np.float32))
    hits = {k: 0 for k in ks}
    pair_hits = {k: 0 for k in ks}
    pairs_total = 0
    reciprocal = 0.0
    ndcg_sum, ndcg_n = 0.0, 0
    for start in range(0, n_queries, chunk):
        q = torch.from_numpy(np.ascontiguousarray(query_vectors[start:start + chunk], dtype=np.float32))
        scores = q @ corpus.T
        if exclude is not None:
            for row in range(scores.size(0)):
                if exclude[start + row]:
                    scores[row, list(exclude[start + row])] = float("-inf")
        ranked = torch.topk(scores, top, dim=1).indices.numpy()
        for row, order in enumerate(ranked):
            i = start + row
            rel = relevant[i]
            pairs_total += len(rel)
            for k in ks:
                window = order[:k]
                found = sum(1 for j in window if j in rel)
                hits[k] += found > 0
                pair_hits[k] += found
            best = scores[row, list(rel)].max()
            reciprocal += 1.0 / (1 + int((scores[row] > best).sum()))
            if grades is not None and any(g > 0 for g in grades[i].values()):
                ndcg_sum += _ndcg(order[:10], grades[i])
                ndcg_n += 1
    for k in ks:
        metrics[f"recall@{k}"] = hits[k] / n_queries
        metrics[f"pair_recall@{k}"] = pair_hits[k] / pairs_total
        metrics[f"reduction_ratio@{k}"] = 1.0 - min(k, n_corpus) / n_corpus
    metrics["mrr"] = reciprocal / n_queries
    if ndcg_n:
        metrics["ndcg@10"] = ndcg_sum / ndcg_n
    return metrics


def _ndcg(order: Sequence[int], grades: Mapping[int, int]) -> float:
    gain = [(2 ** grades.get(int(j), 0) - 1) / math.log2(r + 2) for r, j in enumerate(order)]
    ideal = sorted(grades.values(), reverse=True)[: len(order)]
    ideal_gain = sum((2 ** g - 1) / math.log2(r + 2) for r, g in enumerate(ideal))
    return sum(gain) / ideal_gain if ideal_gain > 0 else 0.0


def evaluate_retrieval(encoder: Any, bench: Benchmark, split: str = "test", ks: Sequence[int] = DEFAULT_KS,
                       batch_size: int = 128) -> dict[str, Any]:
    """Encode ``bench``'s split with ``encoder`` (a :class:`DualEncoder`) and score exact retrieval."""
    task = retrieval_task(bench, split)
    queries = encoder.encode_listings(task.queries, batch_size, query=True)
    corpus = encoder.encode_listings(task.corpus, batch_size)
    metrics = retrieval_metrics(queries, corpus, task.relevant, task.grades, ks, exclude=task.exclude)
    return {"benchmark": bench.name, "split": bench.resolve_split(split), "model_version": encoder.model_version,
            **metrics}
