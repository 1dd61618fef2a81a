"""``epm-spark block``: candidate pairs from nearest neighbours of listing vectors.

* **linkage** (``--left ours --right competitor_a``): each left listing's ``k`` nearest
  right listings.
* **de-duplication** (``--left ours`` alone): one catalog against itself; no self
  pairs, and each unordered pair once (``left_id < right_id``).

The right side is cut into shards of at most ``block.max_shard_size`` vectors; each
shard's index is built inside a Spark task and saved as a versioned artifact under
``block.index_dir`` (an unchanged catalog reuses it). Queries are bucketed; every
(bucket, shard) group is searched in one task that loads its shard once, and the
per-shard top-k lists are merged per query. No vector travels through the driver.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from epm_spark.config import Settings
from epm_spark.errors import InputError, worker_errors
from epm_spark.io import delta
from epm_spark.io.schemas import check_partition_value
from epm_spark.progress import spark_progress

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["BlockReport", "block", "check_block", "index_root", "index_shards", "search_shards", "checked_embeddings"]

log = logging.getLogger(__name__)

# Loaded shard indexes per Python worker, by folder.
_INDEXES: dict[str, Any] = {}


@dataclass
class BlockReport:
    mode: str
    left: str
    right: str
    k: int
    model_version: str
    queries: int
    indexed: int
    shards: int
    index_kind: str
    index_path: str
    candidates: int
    seconds: float
    search_seconds: float

    def summary(self) -> str:
        qps = self.queries / self.search_seconds if self.search_seconds else float("nan")
        return (f"block {self.mode}: {self.left} -> {self.right}, k={self.k} ({self.seconds:.1f} s)\n"
                f"  index: {self.index_kind} over {self.indexed:,} vectors in {self.shards} shard(s) at {self.index_path}\n"
                f"  queries: {self.queries:,} ({qps:,.0f}/s)  candidates: {self.candidates:,}")


def index_root(settings: Settings) -> Path:
    return Path(settings.block.index_dir) if settings.block.index_dir else Path(settings.warehouse) / "_indexes"


def limit_threads() -> None:
    """One task, its share of cores: faiss and torch default to every core of the machine."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    cpus = int(ctx.cpus()) if ctx is not None else 1
    try:
        import faiss

        faiss.omp_set_num_threads(cpus)
    except ImportError:
        pass
    import torch

    torch.set_num_threads(cpus)


def _not_embedded(source: str) -> InputError:
    return InputError(f"no embeddings for source {source!r}; run `epm-spark embed --source {source}` first")


def check_block(settings: Settings, sources: list[str]) -> None:
    """A source without embeddings, refused from the table's log before Spark starts."""
    there = delta.partition_values(settings.warehouse, "embeddings", "source")
    for source in sources:
        if source not in there:
            raise _not_embedded(source)


def checked_embeddings(spark: SparkSession, settings: Settings, sources: list[str]) -> tuple[DataFrame, str, int]:
    """The embeddings of ``sources``, after checking that every listing has one, of one model."""
    from pyspark.sql import functions as F

    wh, engine = settings.warehouse, settings.delta.engine
    emb = delta.read(spark, wh, "embeddings", engine=engine).filter(F.col("source").isin(sources))
    stats = (emb.groupBy("source", "model_version")
             .agg(F.count(F.lit(1)).alias("n"), F.min(F.size("embedding")).alias("dmin"),
                  F.max(F.size("embedding")).alias("dmax"))
             .collect())
    by_source: dict[str, list] = {}
    for r in stats:
        by_source.setdefault(r["source"], []).append(r)
    for source in sources:
        if source not in by_source:
            raise _not_embedded(source)
    versions = {r["model_version"] for r in stats}
    if len(versions) > 1:
        detail = "; ".join(f"{s}: {', '.join(sorted(r['model_version'] for r in rs))}" for s, rs in by_source.items())
        raise InputError(f"embeddings come from more than one model ({detail}); re-run `epm-spark embed` for "
                         "every source with one model before blocking")
    dims = {r["dmin"] for r in stats} | {r["dmax"] for r in stats}
    if len(dims) != 1:
        raise InputError(f"embedding dimensions differ between listings ({sorted(dims)}); re-embed the sources")
    products = delta.read(spark, wh, "products", engine=engine).filter(F.col("source").isin(sources))
    missing = products.select("source", "product_id").join(emb.select("source", "product_id"),
                                                          ["source", "product_id"], "left_anti")
    lost = missing.limit(5).collect()
    if lost:
        n = missing.count()
        examples = ", ".join(f"{r['source']}/{r['product_id']}" for r in lost)
        raise InputError(f"{n:,} listings have no embedding (e.g. {examples}); run `epm-spark embed` for their "
                         "source(s) first")
    return emb, versions.pop(), dims.pop()


def index_shards(spark: SparkSession, settings: Settings, vectors: DataFrame, version: str,
                 source: str) -> tuple[Path, list, int]:
    """Build (or reuse) the sharded index over ``vectors`` (``product_id, content_hash, embedding``) of ``source``.

    Each shard is built inside a Spark task and saved under ``block.index_dir``; an unchanged
    catalog (same ids, texts, model and index settings) reuses the saved shards.
    Returns the folder, one row per shard (``shard, count, kind, path``) and the vector count.
    """
    from pyspark.sql import functions as F

    cfg = settings.block
    fingerprint = vectors.agg(F.count(F.lit(1)).alias("n"),
                              F.bit_xor(F.xxhash64("product_id", "content_hash")).alias("h")).collect()[0]
    n = int(fingerprint["n"])
    if n == 0:
        raise InputError(f"no vectors of source {source!r} to index")
    shards = max(1, math.ceil(n / cfg.max_shard_size))
    digest = hashlib.sha256(f"{version}|{n}|{fingerprint['h']}|{shards}|{asdict(cfg.index)}".encode())
    folder = index_root(settings) / source / f"{version}-{digest.hexdigest()[:12]}"
    index_settings = cfg.index

    def build_shard(pdf: pd.DataFrame) -> pd.DataFrame:
        from epm_spark.models.index import VectorIndex

        limit_threads()
        shard = int(pdf["shard"].iloc[0])
        path = folder / f"shard-{shard:05d}"
        if not (path / "meta.json").exists():
            matrix = np.stack(pdf["embedding"].to_numpy()).astype(np.float32)
            VectorIndex.build(matrix, pdf["product_id"].to_numpy(), settings=index_settings,
                              meta={"model_version": version, "source": source, "shard": shard}).save(path)
        import json

        kind = json.loads((path / "meta.json").read_text())["kind"]
        return pd.DataFrame({"shard": [shard], "count": [len(pdf)], "kind": [kind], "path": [str(path)]})

    with spark_progress(spark, "index"), worker_errors():
        built = (vectors.withColumn("shard", F.pmod(F.xxhash64("product_id"), F.lit(shards)))
                 .groupBy("shard").applyInPandas(build_shard, "shard long, count long, kind string, path string")
                 .collect())
    log.info("%s index of %d vectors in %d shard(s) at %s", built[0]["kind"], n, len(built), folder)
    return folder, built, n


def search_shards(spark: SparkSession, settings: Settings, queries: DataFrame, built: list, k: int) -> DataFrame:
    """``left_id, right_id, similarity``: each query's top ``k`` in every shard (merge per query afterwards).

    ``queries`` holds ``left_id``, ``embedding`` and a ``bucket``; every (bucket, shard) is one task
    that loads its shard once.
    """
    from pyspark.sql import functions as F

    index_settings = settings.block.index
    shard_paths = spark.createDataFrame([(r["shard"], r["path"]) for r in built], "shard long, path string")

    def search(pdf: pd.DataFrame) -> pd.DataFrame:
        from epm_spark.models.index import VectorIndex

        limit_threads()
        path = pdf["path"].iloc[0]
        if path not in _INDEXES:
            _INDEXES[path] = VectorIndex.load(path, index_settings)
        index = _INDEXES[path]
        vectors = np.stack(pdf["embedding"].to_numpy()).astype(np.float32)
        if vectors.shape[1] != index.dim:
            raise InputError(f"query vectors have dimension {vectors.shape[1]}, the index {index.dim}")
        scores, positions = index.search(vectors, k)
        rows = np.repeat(np.arange(len(pdf)), positions.shape[1])
        flat = positions.ravel()
        keep = flat >= 0
        return pd.DataFrame({
            "left_id": pdf["left_id"].to_numpy()[rows[keep]],
            "right_id": index.ids[flat[keep]],
            "similarity": scores.ravel()[keep].astype(np.float32),
        })

    return (queries.crossJoin(F.broadcast(shard_paths))
            .groupBy("bucket", "shard").applyInPandas(search, "left_id string, right_id string, similarity float"))


def block(spark: SparkSession, settings: Settings, *, left: str, right: str | None = None, k: int | None = None,
          run_id: str) -> BlockReport:
    """Write the candidate pairs of ``left`` against ``right`` (or against itself) for ``run_id``."""
    from pyspark.sql import functions as F
    from pyspark.sql import Window

    start = time.monotonic()
    cfg = settings.block
    k = k or cfg.k
    if k <= 0:
        raise InputError("k must be > 0")
    right = right or left
    dedup = right == left
    for name in {left, right}:
        check_partition_value("source", name)
    check_partition_value("run_id", run_id)
    emb, version, dim = checked_embeddings(spark, settings, sorted({left, right}))

    right_emb = emb.filter(F.col("source") == right).select("product_id", "content_hash", "embedding")
    folder, built, n_right = index_shards(spark, settings, right_emb, version, right)
    kind = built[0]["kind"]

    search_k = k + 1 if dedup else k
    queries = (emb.filter(F.col("source") == left).select(F.col("product_id").alias("left_id"), "embedding")
               .withColumn("bucket", F.pmod(F.xxhash64("left_id"), F.lit(cfg.query_partitions))))
    found = search_shards(spark, settings, queries, built, search_k)
    if dedup:
        found = found.filter(F.col("left_id") != F.col("right_id"))
    if cfg.similarity_floor is not None:
        found = found.filter(F.col("similarity") >= cfg.similarity_floor)
    best_first = Window.partitionBy("left_id").orderBy(F.desc("similarity"), "right_id")
    ranked = found.withColumn("rank", F.row_number().over(best_first)).filter(F.col("rank") <= k)
    if dedup:
        # Each unordered pair once, oriented left_id < right_id, at the better of its two ranks.
        lo, hi = F.least("left_id", "right_id"), F.greatest("left_id", "right_id")
        ranked = (ranked.select(lo.alias("left_id"), hi.alias("right_id"), "similarity", "rank")
                  .groupBy("left_id", "right_id")
                  .agg(F.max("similarity").alias("similarity"), F.min("rank").alias("rank")))
    candidates = ranked.select(
        "left_id", "right_id", F.lit(left).alias("left_source"), F.lit(right).alias("right_source"),
        F.col("similarity").cast("float"), F.col("rank").cast("int"), F.lit(run_id).alias("run_id"))

    search_start = time.monotonic()
    with spark_progress(spark, "block: search"), worker_errors():
        info = delta.write(candidates, settings.warehouse, "candidates", "replace",
                           partition={"run_id": run_id, "left_source": left, "right_source": right},
                           run_id=run_id, job="block", engine=settings.delta.engine,
                           max_rows_per_file=settings.delta.max_rows_per_file)
    search_seconds = time.monotonic() - search_start
    n_queries = queries.count()
    return BlockReport("dedup" if dedup else "linkage", left, right, k, version, n_queries, n_right, len(built), kind,
                       str(folder), info.rows, time.monotonic() - start, search_seconds)
