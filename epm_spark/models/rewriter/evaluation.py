"""Rewriting quality on held-out queries: each system's rewrites searched through the retrieval judge.

Per system (the original query itself, the teacher, the distilled and the RL student):

* ``ndcg@10``, ``recall@10``: the retrieval judge's (:mod:`epm_spark.models.rewriter.retrieval`)
  on the query's graded listings, averaged over queries;
* ``drift_rate``: share of queries whose rewrite lost a brand, model number or size of the query;
* ``distinct_rate``: distinct rewrites / queries (1: no two queries collapse onto one rewrite);
* ``changed_rate``: share of rewrites that differ from their query; ``empty_rate``: answers
  without a query (searched as the original);
* ``ms_per_query``: wall time of the system's rewriting per query on this machine.

``differences``: ``a - b`` of per-query NDCG@10 and recall@10 for each named pair of systems,
with a paired bootstrap 95% interval resampling queries
(:func:`~epm_spark.models.search.evaluation.paired_bootstrap_mean`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import numpy as np

from epm_spark.errors import InputError
from epm_spark.models.rewriter.rewards import drift
from epm_spark.models.search.evaluation import paired_bootstrap_mean

__all__ = ["evaluate_rewriters", "System"]

log = logging.getLogger(__name__)

# A system: queries -> one rewrite per query ("" where it has none).
System = Callable[[list[str]], list[str]]


def evaluate_rewriters(queries: Sequence[str], judge, systems: dict[str, System], *,
                       comparisons: Sequence[tuple[str, str]] = (), resamples: int = 2000,
                       examples: int = 12) -> dict:
    queries = list(queries)
    if not queries:
        raise InputError("no held-out query with graded listings to evaluate")
    per_query, summary, rewrites_of = {}, {}, {}
    for name, system in systems.items():
        start = time.perf_counter()
        rewrites = [r or "" for r in system(queries)]
        seconds = time.perf_counter() - start
        if len(rewrites) != len(queries):
            raise InputError(f"system {name!r} gave {len(rewrites)} rewrites for {len(queries)} queries")
        searched = [r if r.strip() else q for r, q in zip(rewrites, queries)]
        ndcg, recall = judge.ndcg(searched, queries), judge.recall(searched, queries)
        drifted = np.array([drift(q, s).drifted for q, s in zip(queries, searched)])
        per_query[name] = {"ndcg@10": ndcg, "recall@10": recall}
        rewrites_of[name] = searched
        summary[name] = {
            "ndcg@10": float(np.nanmean(ndcg)), "recall@10": float(np.nanmean(recall)),
            "drift_rate": float(drifted.mean()),
            "distinct_rate": len(set(searched)) / len(queries),
            "changed_rate": float(np.mean([s != q for s, q in zip(searched, queries)])),
            "empty_rate": float(np.mean([not r.strip() for r in rewrites])),
            "ms_per_query": round(1000.0 * seconds / len(queries), 2),
        }
        log.info("evaluate rewriting: %s NDCG@10 %.4f recall@10 %.4f (%.1f s)", name, summary[name]["ndcg@10"],
                 summary[name]["recall@10"], seconds)
    differences = {}
    for a, b in comparisons:
        if a in per_query and b in per_query:
            differences[f"{a} - {b}"] = {m: paired_bootstrap_mean(per_query[a][m], per_query[b][m],
                                                                  resamples=resamples)
                                         for m in ("ndcg@10", "recall@10")}
    shown = [{"query": q, **{name: rewrites_of[name][i] for name in systems}} for i, q in enumerate(queries[:examples])]
    return {"queries": len(queries), "systems": summary, "differences": differences, "examples": shown}
