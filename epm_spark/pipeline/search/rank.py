"""``epm-spark rank``: each query's k nearest listings from the dual-encoder index, scored by the ranker.

1. The queries (distinct ``query`` values of a warehouse table, e.g. ``search_queries``) are
   embedded by the dual-encoder that embedded the catalog, in pandas UDFs.
2. Each query's ``k`` nearest listings come from the sharded FAISS index over ``embeddings``
   of the source (the blocker's index: built in tasks, saved, reused while the catalog is
   unchanged).
3. The ranker (loaded once per Python worker) scores each (query, listing) pair in pandas
   UDFs: ``p_click, p_cart, p_purchase`` and the blended ``score``; ``rank`` orders a query's
   candidates by score.

``search_scores`` gets one row per (query, candidate); the run's partition of the source is
replaced, so re-running a run id gives the same table.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from epm_spark.config import Settings
from epm_spark.errors import InputError, worker_errors
from epm_spark.io import delta
from epm_spark.io.schemas import check_partition_value
from epm_spark.progress import spark_progress

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["RankReport", "rank"]

log = logging.getLogger(__name__)

# One ranker per (folder, device) per Python worker process.
_RANKERS: dict[tuple[str, str], Any] = {}


@dataclass
class RankReport:
    queries_table: str
    source: str
    k: int
    queries: int
    candidates: int
    model_version: str
    encoder_version: str
    seconds: float

    def summary(self) -> str:
        return (f"rank {self.queries:,} queries of {self.queries_table} against {self.source}, k={self.k} "
                f"({self.seconds:.1f} s)\n"
                f"  candidates scored: {self.candidates:,}  ranker: {self.model_version}  "
                f"encoder: {self.encoder_version}")


def _ranker(folder: str, device: str):
    key = (folder, device)
    if key not in _RANKERS:
        from epm_spark.models.search.ranker import MultiTaskRanker

        log.info("loading ranker %s on %s", folder, device)
        _RANKERS[key] = MultiTaskRanker.load(folder, device=device)
    return _RANKERS[key]


def rank(spark: SparkSession, settings: Settings, *, queries_table: str, k: int, model: str, source: str,
         run_id: str, split: str | None = None, encoder: str | None = None) -> RankReport:
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.storagelevel import StorageLevel

    from epm_spark.models.search.ranker import read_card
    from epm_spark.pipeline.catalog.block import limit_threads
    from epm_spark.pipeline.catalog.embed import task_device
    from epm_spark.pipeline.search.query_search import catalog_index, nearest_listings, query_table

    start = time.monotonic()
    if k <= 0:
        raise InputError(f"--k must be > 0, got {k}")
    check_partition_value("source", source)
    check_partition_value("run_id", run_id)
    card = read_card(model)  # fails early, on the driver, for a folder that is no ranker
    folder = str(Path(model).resolve())
    wh = settings.warehouse
    table = query_table(spark, settings, queries_table, split)
    queries = (table.select(F.trim(F.col("query")).alias("query")).filter(F.length("query") > 0).distinct()
               .withColumn("left_id", F.col("query")))

    def same_encoder(version: str) -> None:
        card.check_similarity_encoder(version, f"the embeddings of {source!r} come from {version}: embed the "
                                               "catalog with the ranker's encoder or train the ranker with this one")

    built, version, encoder_model = catalog_index(spark, settings, source, encoder, check=same_encoder)
    candidates = (nearest_listings(spark, settings, queries.withColumn("text", F.col("query")), built, encoder_model, k)
                  .select(F.col("left_id").alias("query"), F.col("right_id").alias("product_id"), "similarity"))
    products = (delta.read(spark, wh, "products", engine=settings.delta.engine)
                .filter(F.col("source") == source).select("product_id", "title", "brand", "attributes", "price",
                                                          "currency", "description"))
    pairs = candidates.join(products, "product_id", "inner")
    scored_at = dt.datetime.now(dt.timezone.utc)
    batch_size, ranker_device = settings.ranker.inference_batch_size, settings.ranker.device

    def score(batches):
        from epm_spark.models.search.ranker import product_texts

        ranker = None
        for pdf in batches:
            if ranker is None:
                limit_threads()
                ranker = _ranker(folder, task_device(ranker_device))
            scores = ranker.score(pdf["query"].tolist(), product_texts(pdf, ranker.card.with_price),
                                  pdf["similarity"].to_numpy(), batch_size=batch_size)
            yield pd.DataFrame({"query": pdf["query"].to_numpy(), "product_id": pdf["product_id"].to_numpy(),
                                "similarity": pdf["similarity"].to_numpy(), **{c: scores[c].to_numpy()
                                for c in ("p_click", "p_cart", "p_purchase", "score")}})

    out_schema = ("query string, product_id string, similarity float, p_click double, p_cart double, "
                  "p_purchase double, score double")
    best = Window.partitionBy("query").orderBy(F.desc("score"), "product_id")
    result = (pairs.mapInPandas(score, out_schema)
              .withColumn("rank", F.row_number().over(best).cast("int"))
              .withColumns({"source": F.lit(source), "model_version": F.lit(card.model_version),
                            "scored_at": F.lit(scored_at), "run_id": F.lit(run_id)})
              .persist(StorageLevel.MEMORY_AND_DISK))
    try:
        with spark_progress(spark, "rank"), worker_errors():
            n_queries = queries.count()
            if n_queries == 0:
                raise InputError(f"table {queries_table!r} holds no queries" + (f" of split {split!r}" if split else ""))
            info = delta.write(result, wh, "search_scores", "replace", partition={"run_id": run_id, "source": source},
                               run_id=run_id, job="rank", engine=settings.delta.engine,
                               max_rows_per_file=settings.delta.max_rows_per_file)
    finally:
        result.unpersist()
    return RankReport(queries_table, source, k, n_queries, info.rows, card.model_version, version,
                      time.monotonic() - start)
