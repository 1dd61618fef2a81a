"""``epm-spark train-ranker``: the multi-task ranker (or a single-task baseline) from ``search_events``.

Engagement is aggregated per (query, listing) on the driver (a log of a million
impressions is a few thousand pairs); the listing text comes from ``products`` of the
searched source. The model folder is ``ranker.models_dir/<name>-v<N>`` unless ``--out``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import pandas as pd

from epm_spark.config import Settings
from epm_spark.errors import InputError
from epm_spark.io import delta

__all__ = ["train_ranker", "read_engagement", "retrieval_similarity"]

log = logging.getLogger(__name__)


def read_engagement(settings: Settings, source: str, events_run_id: str | None = None) -> pd.DataFrame:
    """(query, listing) engagement with each listing's ranker text, from search_events and products."""
    from epm_spark.models.search.train import aggregate_events, with_texts

    wh = settings.warehouse
    for table in ("search_events", "products"):
        if not delta.table_exists(wh, table):
            raise InputError(f"the warehouse has no {table} table; run generate-search-log or ingest-events first")
    # From the tables' logs, before millions of events are read.
    if source not in delta.partition_values(wh, "products", "source"):
        raise InputError(f"products has no listings of source {source!r}")
    if events_run_id and events_run_id not in (runs := delta.partition_values(wh, "search_events", "run_id")):
        raise InputError(f"search_events holds no run {events_run_id!r} (runs there: {', '.join(sorted(runs))})")
    filters = [("run_id", "=", events_run_id)] if events_run_id else None
    events = delta.read_pandas(wh, "search_events", columns=["query", "product_id", "impressed", "clicked",
                                                             "added_to_cart", "purchased"], filters=filters)
    products = delta.read_pandas(wh, "products", filters=[("source", "=", source)])
    return with_texts(aggregate_events(events), products, settings.ranker.with_price)


def retrieval_similarity(settings: Settings, source: str, product_ids: set[str], encoder: str | None = None):
    """(queries, product ids) -> the cosine of the dual-encoder ``rank`` retrieves with (``encoder.backbone``,
    or ``encoder``) over these listings of ``source``; and that encoder's model version."""
    from epm_spark.models.search.evaluation import bi_encoder_similarity
    from epm_spark.pipeline.catalog.embed import _encoder

    enc = settings.encoder
    bi = _encoder(encoder or enc.backbone, enc.device, enc)
    products = delta.read_pandas(settings.warehouse, "products", filters=[("source", "=", source)])
    rows = [r for r in products.to_dict("records") if r["product_id"] in product_ids]
    return bi_encoder_similarity(bi, dict(zip((r["product_id"] for r in rows), bi.listing_texts(rows)))), bi.model_version


def train_ranker(settings: Settings, *, tasks: list[str] | None = None, chain: bool | None = None,
                 source: str | None = None, out: str | None = None, events_run_id: str | None = None,
                 max_steps: int | None = None, max_queries: int | None = None):
    """Train and save one ranker; returns (card, folder)."""
    from epm_spark.models.encoder.model import resolve_backbone
    from epm_spark.models.matcher.model_folder import is_model_folder
    from epm_spark.models.search.ranker import CARD_FILE, MultiTaskRanker, variant_name
    from epm_spark.models.search.settings import RankerSettings
    from epm_spark.models.search.train import fit, training_pairs
    from epm_spark.models.versions import unfinished_or_next

    start = time.monotonic()
    rs: RankerSettings = settings.ranker
    changes = {k: v for k, v in (("tasks", tasks), ("chain", chain)) if v is not None}
    if changes:
        rs = dataclasses.replace(rs, **changes)  # replace() re-runs the settings' validation
    resolve_backbone(rs.backbone)  # mistyped encoders fail before the log is read
    if rs.similarity_feature:
        resolve_backbone(settings.encoder.backbone)
    source = source or settings.search_log.source
    qs = settings.search_log.queries
    engagement = read_engagement(settings, source, events_run_id)
    pairs = training_pairs(engagement, rs, valid_share=qs.valid_share, test_share=qs.test_share,
                           max_queries=max_queries or rs.max_train_queries)
    log.info("train-ranker: %d pairs of %d training queries", len(pairs), pairs["query"].nunique())
    similarity_encoder = ""
    if rs.similarity_feature:
        similarity, similarity_encoder = retrieval_similarity(settings, source, set(pairs["product_id"]))
        pairs = pairs.assign(similarity=similarity(pairs["query"].tolist(), pairs["product_id"].tolist()))
    model = MultiTaskRanker.from_backbone(rs, similarity_encoder=similarity_encoder)
    name = variant_name(rs.tasks, rs.chain)
    # A killed run left its folder without a card: the same command resumes it from its checkpoints.
    folder = Path(out) if out else unfinished_or_next(rs.models_dir, name,
                                                      finished=lambda p: is_model_folder(p, CARD_FILE))
    info = fit(model, pairs, rs, max_steps=max_steps, checkpoints=folder / "checkpoints")
    model.card.training = {**info, "source": source, "events_run_id": events_run_id,
                           "split": {"valid_share": qs.valid_share, "test_share": qs.test_share},
                           "settings": dataclasses.asdict(rs), "total_seconds": round(time.monotonic() - start, 1)}
    model.save(folder)
    log.info("train-ranker: wrote %s (%s)", folder, model.card.model_version)
    return model.card, folder
