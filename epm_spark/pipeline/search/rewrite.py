"""``epm-spark rewrite``: refresh the rewrite cache (``query_rewrites``) for a table of queries.

1. The distinct queries of a warehouse table (``query`` column; ``frequency`` when it has one)
   are embedded by the dual-encoder that embedded the catalog, and their ``k`` nearest listings
   come from the sharded index over ``embeddings`` (the blocker's
   :func:`~epm_spark.pipeline.catalog.block.search_shards`); the titles of the nearest few are the
   ``catalog:`` line of the rewriter's prompt when it was trained with one.
2. The trained rewriter rewrites them in pandas UDFs (the model loaded once per Python worker,
   on the task's GPU when Spark schedules one); drift and format are scored there too. Each
   candidate rewrite is searched the same way.
3. Each ranking's NDCG@k against the query's graded listings (``query_judgments``) is the
   retrieval judge; :func:`~epm_spark.models.rewriter.cache.decide` emits the candidate only
   when it does not make the query worse, else the row keeps the query (``emitted`` false,
   ``reason`` says why).

One row per query; the run's partition is replaced, so re-running a run id gives the same table.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field, replace
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

__all__ = ["RewriteReport", "rewrite"]

log = logging.getLogger(__name__)

# One rewriter per (folder, device) per Python worker process.
_REWRITERS: dict[tuple[str, str], Any] = {}
_SEP = "\u0001"


@dataclass
class RewriteReport:
    queries_table: str
    source: str
    queries: int
    emitted: int
    judged: int
    reasons: dict[str, int]
    mean_gain_emitted: float | None
    model_version: str
    encoder_version: str
    run_id: str
    seconds: float
    examples: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        gain = "n/a" if self.mean_gain_emitted is None else f"{self.mean_gain_emitted:+.4f}"
        lines = [f"rewrite {self.queries:,} queries of {self.queries_table} ({self.seconds:.1f} s) -> query_rewrites "
                 f"run {self.run_id}",
                 f"  emitted {self.emitted:,} rewrites (mean NDCG@10 gain {gain}); kept the query for "
                 f"{self.queries - self.emitted:,}: {self.reasons}",
                 f"  {self.judged:,} queries judged on graded listings of {self.source}; rewriter {self.model_version}, "
                 f"encoder {self.encoder_version}"]
        lines += [f"  {e['query']!r} -> {e['rewrite']!r} (gain {e['gain']})" for e in self.examples]
        return "\n".join(lines)


def _rewriter(folder: str, settings, device: str):
    key = (folder, device)
    if key not in _REWRITERS:
        from epm_spark.models.rewriter.model import Rewriter

        log.info("loading rewriter %s on %s", folder, device)
        _REWRITERS[key] = Rewriter.load(folder, replace(settings, device=device))
    return _REWRITERS[key]


def _listing_context(spark: SparkSession, settings: Settings, source: str, originals, nearest, shown: int,
                     codes: int):
    """``query, context``: the titles the rewriter's prompt shows, as
    :class:`~epm_spark.models.rewriter.retrieval.ListingContext` orders them: up to ``codes`` listings
    carrying a model number the query names (the first code's, lowest product id first), then its nearest
    listings, ``shown`` in all (:func:`~epm_spark.models.rewriter.retrieval.context_title` each)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from epm_spark.models.rewriter.retrieval import LISTINGS_PER_CODE

    codes = min(codes, shown)
    catalog = (delta.read(spark, settings.warehouse, "products", engine=settings.delta.engine)
               .filter(F.col("source") == source).select("product_id", "title", "brand", "attributes"))
    # Nearest listings rank 1..; a model-number listing ranks before them, and is not shown twice.
    top = nearest.filter(F.col("rank") <= shown + codes).select(
        "left_id", F.col("rank").cast("double").alias("rank"), F.col("right_id").alias("product_id"))
    if codes > 0:
        def listing_codes(batches):
            from epm_spark.models.rewriter.retrieval import listing_model_numbers

            for pdf in batches:
                rows = [(r["product_id"], c) for r in pdf.to_dict("records") for c in listing_model_numbers(r)]
                yield pd.DataFrame(rows, columns=["product_id", "code"])

        def query_codes(batches):
            from epm_spark.models.rewriter.retrieval import query_model_numbers

            for pdf in batches:
                rows = [(i, c, n) for i, q in zip(pdf["left_id"], pdf["query"])
                        for n, c in enumerate(query_model_numbers(q))]
                yield pd.DataFrame(rows, columns=["left_id", "code", "code_pos"])

        carrying = (catalog.mapInPandas(listing_codes, "product_id string, code string").distinct()
                    .withColumn("i", F.row_number().over(Window.partitionBy("code").orderBy("product_id")))
                    .filter(F.col("i") <= LISTINGS_PER_CODE))
        named = originals.select("left_id", "query").mapInPandas(query_codes,
                                                                   "left_id string, code string, code_pos int")
        first = (named.join(carrying, "code").groupBy("left_id", "product_id")
                 .agg(F.min(F.struct("code_pos", "i")).alias("_o"))
                 .withColumn("_n", F.row_number().over(Window.partitionBy("left_id").orderBy("_o")))
                 .filter(F.col("_n") <= codes)
                 .select("left_id", (F.col("_n") - codes - 1).cast("double").alias("rank"), "product_id"))
        top = (top.unionByName(first).groupBy("left_id", "product_id").agg(F.min("rank").alias("rank"))
               .withColumn("_n", F.row_number().over(Window.partitionBy("left_id").orderBy("rank")))
               .filter(F.col("_n") <= shown).drop("_n"))
    listings = catalog.join(top.select("product_id").distinct(), "product_id", "left_semi")

    def titles(batches):
        from epm_spark.models.rewriter.retrieval import context_title

        for pdf in batches:
            yield pd.DataFrame({"product_id": pdf["product_id"],
                                "title": [context_title(r) for r in pdf.to_dict("records")]})

    titled = listings.mapInPandas(titles, "product_id string, title string")
    return (top.join(titled, "product_id").groupBy("left_id")
            .agg(F.sort_array(F.collect_list(F.struct("rank", "title"))).alias("_c"))
            .join(originals.select("left_id", "query"), "left_id")
            .select("query", F.col("_c.title").alias("context")))


def rewrite(spark: SparkSession, settings: Settings, *, queries_table: str, model: str, run_id: str,
            source: str | None = None, split: str | None = None, encoder: str | None = None,
            limit: int | None = None) -> RewriteReport:
    from pyspark.sql import functions as F
    from pyspark.storagelevel import StorageLevel

    from epm_spark.models.rewriter.model import card_prompt, read_rewriter_card
    from epm_spark.pipeline.catalog.block import limit_threads
    from epm_spark.pipeline.catalog.embed import task_device
    from epm_spark.pipeline.search.query_search import catalog_index, nearest_listings, query_table

    start = time.monotonic()
    rw, wh = settings.rewriter, settings.warehouse
    source = source or rw.source
    check_partition_value("source", source)
    check_partition_value("run_id", run_id)
    if limit is not None and limit <= 0:
        raise InputError(f"--limit must be > 0, got {limit}")
    card = read_rewriter_card(model)  # fails early, on the driver, for a folder that is no rewriter
    folder = str(Path(model).resolve())
    table = query_table(spark, settings, queries_table, split)

    def normalised(column: str):
        return F.lower(F.trim(F.regexp_replace(F.col(column), r"\s+", " ")))

    frequency = F.col("frequency").cast("long") if "frequency" in table.columns else F.lit(None).cast("long")
    queries = (table.select(normalised("query").alias("query"), frequency.alias("frequency"))
               .filter(F.length("query") > 0).groupBy("query").agg(F.max("frequency").alias("frequency")))
    if limit is not None:
        queries = queries.orderBy(F.desc_nulls_last("frequency"), "query").limit(limit)

    built, version, encoder_model = catalog_index(spark, settings, source, encoder)

    inference, rewards, k = rw.inference, rw.rewards, rw.rewards.k
    # The query's own k nearest listings: the judge's "original" ranking and, for a rewriter whose
    # prompt shows them, the titles it reads (searched once, before generation).
    originals = (queries.select("query", F.lit("original").alias("role"), F.col("query").alias("text"))
                 .withColumn("left_id", F.concat_ws(_SEP, "role", "query")))
    original_nearest = nearest_listings(spark, settings, originals, built, encoder_model, k).persist(
        StorageLevel.MEMORY_AND_DISK)
    prompt = card_prompt(**card.prompt)
    if prompt.context_listings > 0:
        context = _listing_context(spark, settings, source, originals, original_nearest, prompt.context_listings,
                                   prompt.code_listings)
        queries = queries.join(context, "query", "left")
    else:
        queries = queries.withColumn("context", F.lit(None).cast("array<string>"))

    def generate(batches):
        from epm_spark.models.rewriter.prompt import format_score
        from epm_spark.models.rewriter.rewards import drift

        model_ = None
        for pdf in batches:
            if model_ is None:
                limit_threads()
                model_ = _rewriter(folder, inference, task_device(inference.device))
            texts = pdf["query"].tolist()
            contexts = [[] if c is None else list(c) for c in pdf["context"]] if model_.reads_context else None
            candidates = model_.rewrite(texts, contexts)
            yield pd.DataFrame({"query": texts, "frequency": pdf["frequency"].to_numpy(), "candidate": candidates,
                                "drift": [drift(q, c).share for q, c in zip(texts, candidates)],
                                "format_score": [format_score(c, q, rewards) for q, c in zip(texts, candidates)]})

    candidates = (queries.mapInPandas(generate, "query string, frequency long, candidate string, drift double, "
                                                "format_score double")
                  .persist(StorageLevel.MEMORY_AND_DISK))
    with spark_progress(spark, "rewrite: generate"), worker_errors():
        # Generate once, before the query and the rewrite branch both read the candidates: sibling
        # stages would otherwise each run the LLM over the same partitions.
        if candidates.count() == 0:
            candidates.unpersist()
            original_nearest.unpersist()
            raise InputError(f"table {queries_table!r} holds no queries" + (f" of split {split!r}" if split else ""))
    searched = F.when(F.length(F.trim("candidate")) > 0, F.col("candidate")).otherwise(F.col("query"))
    rewrites = (candidates.select("query", F.lit("rewrite").alias("role"), searched.alias("text"))
                .withColumn("left_id", F.concat_ws(_SEP, "role", "query")))
    texts = originals.unionByName(rewrites)
    ranking = (original_nearest.unionByName(nearest_listings(spark, settings, rewrites, built, encoder_model, k))
               .groupBy("left_id").agg(F.sort_array(F.collect_list(F.struct("rank", "right_id"))).alias("_top"))
               .select("left_id", F.col("_top.right_id").alias("retrieved")))
    graded_schema = "query string, judged_ids array<string>, judged_grades array<int>"
    if delta.table_exists(wh, rw.judgments_table):
        judgments = delta.read(spark, wh, rw.judgments_table, engine=settings.delta.engine)
        missing = [c for c in ("query", "product_id", "grade") if c not in judgments.columns]
        if missing:
            raise InputError(f"table {rw.judgments_table!r} has no {', '.join(missing)} column")
        graded = (judgments.select(normalised("query").alias("query"), F.col("product_id").cast("string"),
                                   F.col("grade").cast("int"))
                  .groupBy("query").agg(F.collect_list("product_id").alias("judged_ids"),
                                        F.collect_list("grade").alias("judged_grades")))
    else:
        log.warning("rewrite: no %s table; no query can be judged on retrieval", rw.judgments_table)
        graded = spark.createDataFrame([], graded_schema)
    scored = (texts.select("query", "role", "left_id").join(ranking, "left_id", "left")
              .join(graded, "query", "left"))

    def ndcg(batches):
        from epm_spark.models.rewriter.retrieval import ndcg_of_ranking

        for pdf in batches:
            values = []
            for retrieved, ids, grades in zip(pdf["retrieved"], pdf["judged_ids"], pdf["judged_grades"]):
                judged = {} if ids is None else dict(zip(ids, (int(g) for g in grades)))
                ranked = [] if retrieved is None else list(retrieved)
                values.append(ndcg_of_ranking(ranked, judged, k) if any(g > 0 for g in judged.values()) else None)
            yield pd.DataFrame({"query": pdf["query"], "role": pdf["role"], "ndcg": pd.Series(values, dtype=object)})

    ndcgs = (scored.mapInPandas(ndcg, "query string, role string, ndcg double")
             .groupBy("query").agg(F.max(F.when(F.col("role") == "original", F.col("ndcg"))).alias("ndcg_original"),
                                   F.max(F.when(F.col("role") == "rewrite", F.col("ndcg"))).alias("ndcg_rewrite")))

    def decide_rows(batches):
        from epm_spark.models.rewriter.cache import decide

        for pdf in batches:
            yield decide(pdf, rw)[["query", "rewrite", "candidate", "emitted", "reason", "frequency",
                                   "ndcg_original", "ndcg_rewrite", "retrieval_gain", "drift", "format_score",
                                   "reward"]]

    rewritten_at = dt.datetime.now(dt.timezone.utc)
    result = (candidates.join(ndcgs, "query", "left")
              .mapInPandas(decide_rows, "query string, rewrite string, candidate string, emitted boolean, "
                                        "reason string, frequency long, ndcg_original double, ndcg_rewrite double, "
                                        "retrieval_gain double, drift double, format_score double, reward double")
              .withColumns({"model_version": F.lit(card.model_version), "encoder_version": F.lit(version),
                            "source": F.lit(source), "rewritten_at": F.lit(rewritten_at), "run_id": F.lit(run_id)})
              .persist(StorageLevel.MEMORY_AND_DISK))
    try:
        with spark_progress(spark, "rewrite"), worker_errors():
            stats = result.groupBy("emitted", "reason").agg(
                F.count(F.lit(1)).alias("n"), F.sum(F.col("ndcg_original").isNotNull().cast("int")).alias("judged"),
                F.sum("retrieval_gain").alias("gain_sum"), F.count("retrieval_gain").alias("gain_n")).collect()
            delta.write(result, wh, "query_rewrites", "replace", partition={"run_id": run_id}, run_id=run_id,
                        job="rewrite", engine=settings.delta.engine, max_rows_per_file=settings.delta.max_rows_per_file)
            examples = [r.asDict() for r in result.filter("emitted").orderBy(F.desc("retrieval_gain"), "query")
                        .select("query", "rewrite", F.round("retrieval_gain", 3).alias("gain")).limit(3).collect()]
    finally:
        result.unpersist()
        candidates.unpersist()
        original_nearest.unpersist()
    n = sum(r["n"] for r in stats)
    emitted = [r for r in stats if r["emitted"]]
    judged_emitted = sum(r["gain_n"] for r in emitted)
    mean_gain = sum(r["gain_sum"] or 0.0 for r in emitted) / judged_emitted if judged_emitted else None
    return RewriteReport(queries_table, source, n, sum(r["n"] for r in emitted), sum(r["judged"] for r in stats),
                         {r["reason"]: r["n"] for r in stats if r["reason"]}, mean_gain, card.model_version, version,
                         run_id, time.monotonic() - start, examples)
