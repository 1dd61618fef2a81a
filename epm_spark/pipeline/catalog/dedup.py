"""``epm-spark dedup``: one catalog's listings grouped into product clusters with stable ids.

Clusters are the connected components of the accepted matches (``label = match``)
between listings of the source (the ``matches`` of a de-duplication run). Every listing
gets a cluster; a listing without accepted matches is a cluster of one.

Ids are stable across nightly runs: a cluster of the previous run whose still-listed
members are mostly (more than half) in one new cluster hands its id to it; when a new cluster is
the heir of several, it keeps the id of the one it shares most members with. A cluster
that inherits nothing gets a new id. ``cluster_changes`` records per cluster what
happened since the previous run: created, merged, split, updated, unchanged, removed.

Chaining (A~B, B~C, ... through weak matches) makes clusters grow beyond any real
product; clusters above ``dedup.max_cluster_size`` are flagged for review, not trusted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from epm_spark.config import Settings
from epm_spark.errors import InputError, worker_errors
from epm_spark.io import delta
from epm_spark.io.schemas import check_partition_value
from epm_spark.pipeline.catalog.components import connected_components
from epm_spark.progress import spark_progress

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["DedupReport", "dedup"]

log = logging.getLogger(__name__)


@dataclass
class DedupReport:
    source: str
    run_id: str
    previous_run_id: str | None
    listings: int
    edges: int
    clusters: int
    multi_listing_clusters: int
    flagged: int
    changes: dict[str, int]
    seconds: float

    def summary(self) -> str:
        changes = ", ".join(f"{k} {v:,}" for k, v in sorted(self.changes.items()))
        return (f"dedup {self.source} (run {self.run_id}, vs {self.previous_run_id or 'no previous run'}, "
                f"{self.seconds:.1f} s)\n"
                f"  listings: {self.listings:,}  accepted matches: {self.edges:,}\n"
                f"  clusters: {self.clusters:,} ({self.multi_listing_clusters:,} with 2+ listings, "
                f"{self.flagged:,} flagged above dedup.max_cluster_size)\n"
                f"  changes: {changes}")


def _previous_run(spark: SparkSession, settings: Settings, source: str, run_id: str) -> str | None:
    from pyspark.sql import functions as F

    if not delta.table_exists(settings.warehouse, "clusters"):
        return None
    runs = (delta.read(spark, settings.warehouse, "clusters", engine=settings.delta.engine)
            .filter((F.col("source") == source) & (F.col("run_id") != run_id))
            .groupBy("run_id").agg(F.max("clustered_at").alias("at")).orderBy(F.desc("at")).limit(1).collect())
    return runs[0]["run_id"] if runs else None


def dedup(spark: SparkSession, settings: Settings, *, source: str, run_id: str,
          matches_run_id: str | None = None) -> DedupReport:
    """Cluster ``source`` from the accepted matches of ``matches_run_id`` (default: ``run_id``)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    start = time.monotonic()
    check_partition_value("source", source)
    check_partition_value("run_id", run_id)
    cfg, wh, engine = settings.dedup, settings.warehouse, settings.delta.engine
    matches_run_id = matches_run_id or run_id

    products = (delta.read(spark, wh, "products", engine=engine).filter(F.col("source") == source)
                .select("product_id"))
    matches = (delta.read(spark, wh, "matches", engine=engine)
               .filter((F.col("run_id") == matches_run_id) & (F.col("left_source") == source)
                       & (F.col("right_source") == source)))
    if not matches.limit(1).collect():
        raise InputError(f"matches has no pairs of {source} against itself for run {matches_run_id!r}; run "
                         f"`epm-spark block --left {source}` and `epm-spark match` for that run first")
    accepted = matches.filter(F.col("label") == "match")
    if cfg.min_probability is not None:
        accepted = accepted.filter(F.col("probability") >= cfg.min_probability)

    # Long ids make the components' joins cheap; the mapping is fixed once per run.
    ids = products.distinct().withColumn("node", F.monotonically_increasing_id()).localCheckpoint(eager=True)
    edges = (accepted.join(ids.withColumnRenamed("product_id", "left_id").withColumnRenamed("node", "a"), "left_id")
             .join(ids.withColumnRenamed("product_id", "right_id").withColumnRenamed("node", "b"), "right_id")
             .select("a", "b"))
    with spark_progress(spark, f"dedup {source}"), worker_errors():
        n_edges = edges.count()
        comps = connected_components(edges)
        members = (ids.join(comps, "node", "left")
                   .withColumn("component", F.coalesce("component", "node"))
                   .select("product_id", "component"))
        sizes = members.groupBy("component").agg(F.count(F.lit(1)).alias("cluster_size"),
                                                 F.min("product_id").alias("first_member"))
        members = members.join(sizes, "component").localCheckpoint(eager=True)

        previous_run = _previous_run(spark, settings, source, run_id)
        if previous_run is not None:
            prev = (delta.read(spark, wh, "clusters", engine=engine)
                    .filter((F.col("source") == source) & (F.col("run_id") == previous_run))
                    .select("product_id", F.col("cluster_id").alias("prev_id"),
                            F.col("cluster_size").alias("prev_size")))
        else:
            prev = spark.createDataFrame([], "product_id string, prev_id string, prev_size int")
        prev = prev.localCheckpoint(eager=True)

        # Heir of each previous cluster: the new component holding most (> half) of its members that are
        # still listed; a listing that left the catalog does not cost its cluster the id.
        overlap = (members.join(prev, "product_id")
                   .groupBy("component", "prev_id").agg(F.count(F.lit(1)).alias("shared")))
        by_prev = Window.partitionBy("prev_id").orderBy(F.desc("shared"), "component")
        heirs = (overlap.withColumn("still_listed", F.sum("shared").over(Window.partitionBy("prev_id")))
                 .withColumn("r", F.row_number().over(by_prev))
                 .filter((F.col("r") == 1) & (F.col("shared") * 2 > F.col("still_listed"))))
        by_comp = Window.partitionBy("component").orderBy(F.desc("shared"), "prev_id")
        inherited = (heirs.withColumn("r", F.row_number().over(by_comp)).filter(F.col("r") == 1)
                     .select("component", F.col("prev_id").alias("inherited_id")))
        new_id = F.concat(F.lit("C"), F.substring(F.sha2(F.concat_ws("|", F.lit(source), F.lit(run_id),
                                                                     F.col("first_member")), 256), 1, 15))
        named = (sizes.join(inherited, "component", "left")
                 .withColumn("cluster_id", F.coalesce("inherited_id", new_id))
                 .localCheckpoint(eager=True))

        clustered_at = pd.Timestamp.now(tz="UTC")
        clusters = (members.join(named.select("component", "cluster_id"), "component")
                    .select("cluster_id", "product_id", F.lit(source).alias("source"),
                            F.col("cluster_size").cast("int"),
                            (F.col("cluster_size") > cfg.max_cluster_size).alias("flagged"),
                            F.lit(clustered_at).alias("clustered_at"), F.lit(run_id).alias("run_id")))

        changes = _changes(members, prev, named, source, run_id, previous_run)
        for table, df in (("clusters", clusters), ("cluster_changes", changes)):
            delta.write(df, wh, table, "replace", partition={"run_id": run_id, "source": source}, run_id=run_id,
                        job="dedup", engine=engine, max_rows_per_file=settings.delta.max_rows_per_file)

    stats = named.agg(F.count(F.lit(1)).alias("clusters"),
                      F.sum((F.col("cluster_size") > 1).cast("int")).alias("multi"),
                      F.sum((F.col("cluster_size") > cfg.max_cluster_size).cast("int")).alias("flagged"),
                      F.sum("cluster_size").alias("listings")).collect()[0]
    counts = {r["change"]: r["count"] for r in delta.read(spark, wh, "cluster_changes", engine=engine)
              .filter((F.col("run_id") == run_id) & (F.col("source") == source)).groupBy("change").count().collect()}
    return DedupReport(source, run_id, previous_run, int(stats["listings"] or 0), n_edges, int(stats["clusters"]),
                       int(stats["multi"] or 0), int(stats["flagged"] or 0), counts, time.monotonic() - start)


def _changes(members: DataFrame, prev: DataFrame, named: DataFrame, source: str, run_id: str,
             previous_run: str | None) -> DataFrame:
    """One row per cluster of this run, plus one per previous cluster whose listings all left."""
    from pyspark.sql import functions as F

    with_prev = members.join(prev, "product_id", "left")
    per_comp = with_prev.groupBy("component").agg(
        F.array_sort(F.collect_set("prev_id")).alias("previous_cluster_ids"),
        F.sum(F.col("prev_id").isNull().cast("int")).alias("newcomers"))
    # A previous cluster is split when its remaining members sit in two or more clusters now.
    split_prev = (with_prev.filter(F.col("prev_id").isNotNull()).groupBy("prev_id")
                  .agg(F.countDistinct("component").alias("pieces")).filter(F.col("pieces") > 1)
                  .select("prev_id").withColumn("was_split", F.lit(True)))
    touched_split = (with_prev.join(split_prev, "prev_id").select("component").distinct()
                     .withColumn("in_split", F.lit(True)))
    prev_sizes = prev.groupBy("prev_id").agg(F.first("prev_size").alias("previous_size"))
    rows = (named.join(per_comp, "component").join(touched_split, "component", "left")
            .join(prev_sizes, named["cluster_id"] == prev_sizes["prev_id"], "left"))
    n_prev = F.size("previous_cluster_ids")
    change = (F.when(n_prev >= 2, "merged")
              .when(F.coalesce(F.col("in_split"), F.lit(False)), "split")
              .when(n_prev == 0, "created")
              .when((F.col("newcomers") == 0) & (F.col("inherited_id").isNotNull())
                    & (F.col("cluster_size") == F.col("previous_size")), "unchanged")
              .otherwise("updated"))
    current = rows.select("cluster_id", F.lit(source).alias("source"), change.alias("change"),
                          "previous_cluster_ids", F.col("cluster_size").cast("int"),
                          F.col("previous_size").cast("int"))
    remaining = members.select("product_id").join(prev, "product_id").select("prev_id").distinct()
    removed = (prev_sizes.join(remaining, "prev_id", "left_anti")
               .select(F.col("prev_id").alias("cluster_id"), F.lit(source).alias("source"),
                       F.lit("removed").alias("change"), F.array(F.col("prev_id")).alias("previous_cluster_ids"),
                       F.lit(0).cast("int").alias("cluster_size"), F.col("previous_size").cast("int")))
    return (current.unionByName(removed)
            .withColumn("run_id", F.lit(run_id))
            .withColumn("previous_run_id", F.lit(previous_run).cast("string")))
