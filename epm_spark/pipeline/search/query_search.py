"""What the search-side jobs (``rank``, ``rewrite``) share: a queries table checked once, the catalog's
index, and each text's nearest listings through it.

Texts are embedded as queries by the dual-encoder that embedded the catalog (checked: a query
vector from another model would search a space it does not live in), in pandas UDFs with the
encoder loaded once per Python worker; the sharded index over ``embeddings`` is the blocker's
(:func:`~epm_spark.pipeline.catalog.block.index_shards`, :func:`~epm_spark.pipeline.catalog.block.search_shards`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from epm_spark.config import Settings
from epm_spark.errors import InputError
from epm_spark.io import delta

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["query_table", "catalog_index", "nearest_listings"]


def query_table(spark: SparkSession, settings: Settings, table: str, split: str | None = None) -> DataFrame:
    """The rows of a warehouse table that has a ``query`` column, of ``split`` when given."""
    from pyspark.sql import functions as F

    if not delta.table_exists(settings.warehouse, table):
        raise InputError(f"the warehouse has no table {table!r}")
    frame = delta.read(spark, settings.warehouse, table, engine=settings.delta.engine)
    if "query" not in frame.columns:
        raise InputError(f"table {table!r} has no query column; its columns: {', '.join(frame.columns)}")
    if split is not None:
        if "split" not in frame.columns:
            raise InputError(f"--split needs a split column; table {table!r} has none")
        frame = frame.filter(F.col("split") == split)
    return frame


def catalog_index(spark: SparkSession, settings: Settings, source: str, encoder: str | None = None,
                  check: Callable[[str], None] | None = None):
    """(index shards, the catalog's encoder version, the query encoder) for searching ``source``;
    ``check(version)`` may refuse the catalog's encoder before the index is built."""
    from epm_spark.models.encoder.model import encoder_identity
    from epm_spark.pipeline.catalog.block import checked_embeddings, index_shards

    emb, version, _ = checked_embeddings(spark, settings, [source])
    encoder_model = encoder or settings.encoder.backbone
    query_version, _ = encoder_identity(encoder_model, settings.encoder)
    if query_version != version:
        raise InputError(f"embeddings of {source!r} come from {version}, the query encoder is {query_version}; "
                         f"pass --encoder with the model that embedded the catalog, or re-run `epm-spark embed`")
    if check is not None:
        check(version)
    _, built, _ = index_shards(spark, settings, emb.select("product_id", "content_hash", "embedding"), version, source)
    return built, version, encoder_model


def nearest_listings(spark: SparkSession, settings: Settings, texts: DataFrame, built: list, encoder_model: str,
                     k: int) -> DataFrame:
    """``left_id, right_id, similarity, rank`` (1 = nearest): the ``k`` nearest listings of each text
    (rows of ``left_id``, ``text``)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from epm_spark.pipeline.catalog.block import limit_threads, search_shards
    from epm_spark.pipeline.catalog.embed import _encoder, task_device

    enc = settings.encoder

    def encode(batches):
        encoder_ = None
        for pdf in batches:
            if encoder_ is None:
                limit_threads()
                encoder_ = _encoder(encoder_model, task_device(enc.device), enc)
            pdf = pdf.copy()
            pdf["embedding"] = list(encoder_.encode(pdf["text"].tolist(), enc.batch_size, query=True,
                                                    show_progress=False))
            yield pdf[["left_id", "embedding", "bucket"]]

    bucketed = texts.select("left_id", "text").withColumn(
        "bucket", F.pmod(F.xxhash64("left_id"), F.lit(settings.block.query_partitions)))
    embedded = bucketed.mapInPandas(encode, "left_id string, embedding array<float>, bucket long")
    found = search_shards(spark, settings, embedded, built, k)
    nearest = Window.partitionBy("left_id").orderBy(F.desc("similarity"), "right_id")
    return found.withColumn("rank", F.row_number().over(nearest)).filter(F.col("rank") <= k)
