"""``epm-spark evaluate rewriting``: original query, teacher, distilled and RL student on held-out queries.

The held-out queries are those of ``--split`` (``test``) with graded listings; no rewriter trained
on them (the split is a hash of the query). The teacher's rewrites come from ``rewrite_examples``
(the newest run) where it holds them, else from the configured teacher now. Without Spark.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from epm_spark.config import Settings
from epm_spark.errors import InputError
from epm_spark.io import delta

__all__ = ["evaluate_rewriting", "format_rewriting"]

log = logging.getLogger(__name__)

COMPARISONS = (("rl", "original"), ("rl", "distill"), ("distill", "original"), ("teacher", "original"),
               ("rl", "teacher"))


def _teacher_system(settings: Settings):
    from epm_spark.pipeline.search.train_rewriter import build_teacher

    stored: dict[str, str] = {}
    if delta.table_exists(settings.warehouse, "rewrite_examples"):
        from epm_spark.pipeline.search.train_rewriter import newest_examples

        examples, _ = newest_examples(settings)
        stored = {q: r for q, r in zip(examples["query"], examples["rewrite"]) if isinstance(r, str)}

    def rewrite(queries: list[str]) -> list[str]:
        todo = [q for q in queries if q not in stored]
        if todo:
            log.info("evaluate rewriting: %d held-out queries have no stored teacher rewrite; asking the teacher",
                     len(todo))
            stored.update({r.query: r.rewrite or "" for r in build_teacher(settings).rewrite(todo)})
        return [stored.get(q, "") for q in queries]

    return rewrite


def evaluate_rewriting(settings: Settings, *, distill: str | None = None, rl: str | None = None,
                       split: str = "test", limit: int | None = None, encoder: str | None = None) -> dict[str, Any]:
    from epm_spark.models.rewriter.evaluation import evaluate_rewriters
    from epm_spark.models.rewriter.model import Rewriter
    from epm_spark.pipeline.search.train_rewriter import (
        build_listing_context, build_retrieval_judge, latest_rewriter, read_judgments, read_queries,
    )

    start = time.monotonic()
    rw = settings.rewriter
    if split not in ("train", "valid", "test"):
        raise InputError(f"--split must be train, valid or test, got {split!r}")
    judgments = read_judgments(settings)
    queries = read_queries(settings, split=split)
    queries = queries[queries["query"].isin(set(judgments["query"]))]
    if limit is not None:
        queries = queries.sample(n=min(limit, len(queries)), random_state=0).sort_values("query")
    judge = build_retrieval_judge(settings, encoder=encoder, judgments=judgments)
    held_out = [q for q in queries["query"] if judge.judged(q)]
    systems: dict[str, Any] = {"original": lambda qs: list(qs), "teacher": _teacher_system(settings)}
    folders, listings = {}, None
    for name, given in (("distill", distill), ("rl", rl)):
        folder = given or latest_rewriter(rw.models_dir, name)
        if folder is None:
            log.warning("evaluate rewriting: no %s rewriter under %s; left out", name, rw.models_dir)
            continue
        model = Rewriter.load(str(folder), rw.inference)
        folders[name] = {"folder": str(folder), "model_version": model.model_version}
        # The student is timed with its listing context: finding the nearest listings is part of its work.
        context = None
        if model.reads_context:
            listings = listings or build_listing_context(settings, judge)
            context = listings.with_listings(model.prompt.context_listings, model.prompt.code_listings)
        systems[name] = lambda qs, m=model, c=context: m.rewrite(qs, c(qs) if c else None, show_progress=True)
    report = evaluate_rewriters(held_out, judge, systems, comparisons=COMPARISONS, resamples=rw.bootstrap_resamples)
    report.update(split=split, source=rw.source, encoder=judge.encoder.model_version, models=folders,
                  total_seconds=round(time.monotonic() - start, 1))
    return report


def format_rewriting(report: dict[str, Any]) -> str:
    lines = [f"evaluate rewriting: {report['queries']} {report['split']} queries with graded listings of "
             f"{report['source']} (encoder {report['encoder']})",
             f"  {'system':<10}{'ndcg@10':>10}{'recall@10':>11}{'drift':>8}{'distinct':>10}{'changed':>9}"
             f"{'ms/query':>10}"]
    for name, m in report["systems"].items():
        lines.append(f"  {name:<10}{m['ndcg@10']:>10.4f}{m['recall@10']:>11.4f}{m['drift_rate']:>8.3f}"
                     f"{m['distinct_rate']:>10.3f}{m['changed_rate']:>9.3f}{m['ms_per_query']:>10.1f}")
    lines.append("  NDCG@10 difference [95% paired bootstrap interval]:")
    for pair, d in report["differences"].items():
        n = d["ndcg@10"]
        lines.append(f"    {pair:<22} {n['difference']:+.4f} [{n['ci95_low']:+.4f}, {n['ci95_high']:+.4f}]")
    return "\n".join(lines)
