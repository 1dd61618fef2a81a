"""``epm-spark evaluate ranking``: NDCG@10 and MRR per signal on held-out queries, five systems.

Reads ``search_events`` and ``products`` without Spark; the held-out queries are those the
query hash puts in ``--split`` (``test`` by default), which no ranker trained on.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from epm_spark.config import Settings
from epm_spark.errors import InputError
from epm_spark.io import delta

__all__ = ["evaluate_ranking", "format_ranking"]

log = logging.getLogger(__name__)


def evaluate_ranking(settings: Settings, *, models: list[str], source: str, split: str = "test",
                     events_run_id: str | None = None, encoder: str | None = None) -> dict[str, Any]:
    from epm_spark.models.encoder.model import resolve_backbone
    from epm_spark.models.search.evaluation import bi_encoder_scorer, bm25_scorer, evaluate_systems, ranker_scorer
    from epm_spark.models.search.queries import query_split
    from epm_spark.models.search.ranker import MultiTaskRanker, read_card
    from epm_spark.models.text import listing_text
    from epm_spark.pipeline.search.train_ranker import read_engagement, retrieval_similarity

    start = time.monotonic()
    if split not in ("train", "valid", "test"):
        raise InputError(f"--split must be train, valid or test, got {split!r}")
    for folder in models:  # a mistyped --model or --encoder fails now, not after BM25 has run
        read_card(folder)
    resolve_backbone(encoder or settings.encoder.backbone)
    qs = settings.search_log.queries
    engagement = read_engagement(settings, source, events_run_id)
    held_out = engagement[[query_split(q, qs.valid_share, qs.test_share) == split for q in engagement["query"]]]
    if held_out.empty:
        raise InputError(f"no query of the {split} split in search_events")
    products = delta.read_pandas(settings.warehouse, "products", filters=[("source", "=", source)])
    ids = products["product_id"].astype(str).tolist()
    plain = [listing_text(r) for r in products.to_dict("records")]
    systems = {"bm25": bm25_scorer(plain, ids)}
    similarity, bi_version = retrieval_similarity(settings, source, set(held_out["product_id"]), encoder)
    systems["zero_shot_bi_encoder"] = bi_encoder_scorer(similarity)
    names = []
    for folder in models:
        model = MultiTaskRanker.load(folder, device=settings.ranker.device)
        model.card.check_similarity_encoder(bi_version, "pass --encoder with the model it was trained with")
        name = model.card.name
        if name in systems:
            name = f"{name}:{folder}"
        names.append(name)
        systems[name] = ranker_scorer(model, settings.ranker.inference_batch_size, similarity)
    report = evaluate_systems(held_out, systems, names[0], resamples=settings.ranker.bootstrap_resamples)
    report.update(split=split, source=source, models={n: str(f) for n, f in zip(names, models)},
                  total_seconds=round(time.monotonic() - start, 1))
    return report


def format_ranking(report: dict[str, Any]) -> str:
    signals = ("click", "cart", "purchase")
    lines = [f"evaluate ranking: {report['queries']} {report['split']} queries, {report['pairs']:,} pairs; "
             f"queries with events: {report['queries_with_events']}",
             f"  {'system':<28}" + "".join(f"{s + ' ndcg@10':>18}{s + ' mrr':>14}" for s in signals)]
    for name, metrics in report["systems"].items():
        lines.append(f"  {name:<28}" + "".join(f"{metrics[s]['ndcg@10']:>18.4f}{metrics[s]['mrr']:>14.4f}"
                                                 for s in signals))
    lines.append(f"  {report['reference']} minus (NDCG@10 difference [95% interval]):")
    for name, diffs in report["differences"].items():
        cells = [f"{s} {d['ndcg@10']['difference']:+.4f} [{d['ndcg@10']['ci95_low']:+.4f}, "
                 f"{d['ndcg@10']['ci95_high']:+.4f}]" for s, d in diffs.items()]
        lines.append(f"    {name:<26} " + "   ".join(cells))
    return "\n".join(lines)
