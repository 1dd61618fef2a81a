"""``epm-spark embed``: listing vectors for one or more sources, in Spark pandas UDFs.

The encoder is loaded once per Python worker (workers are reused across tasks) on
the GPU Spark assigned to the task (``TaskContext.resources()["gpu"]``), or on the
CPU. Batches are sorted by token length inside the encoder to cut padding.

Nightly runs are incremental: a listing is re-embedded only when the text the encoder
sees (its ``content_hash``) or the model (``model_version``) changed; the other vectors
are kept. Listings that left ``products`` leave ``embeddings`` too.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from epm_spark.config import Settings
from epm_spark.errors import InputError, worker_errors
from epm_spark.io import delta
from epm_spark.io.schemas import check_partition_value
from epm_spark.progress import spark_progress

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["EmbedReport", "check_embed", "embed", "task_device", "content_hash"]

log = logging.getLogger(__name__)

# One encoder per (model, device) per Python worker process.
_ENCODERS: dict[tuple[str, str], Any] = {}


@dataclass
class EmbedReport:
    sources: list[str]
    model_version: str
    listings: int
    embedded: int
    kept: int
    removed: int
    seconds: float

    def summary(self) -> str:
        return (f"embed {', '.join(self.sources)} with {self.model_version} ({self.seconds:.1f} s)\n"
                f"  listings: {self.listings:,}  embedded now: {self.embedded:,}  unchanged, kept: {self.kept:,}"
                f"  removed: {self.removed:,}")


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def task_device(preference: str = "auto") -> str:
    """The device of this Spark task: its scheduled GPU, else any visible GPU, else the CPU."""
    if preference != "auto":
        return preference
    from pyspark import TaskContext

    ctx = TaskContext.get()
    if ctx is not None:
        gpus = ctx.resources().get("gpu")
        if gpus is not None and gpus.addresses:
            return f"cuda:{gpus.addresses[0]}"
    from epm_spark.models.precision import resolve_device

    return str(resolve_device("auto"))


def _encoder(model: str, device: str, settings):
    key = (model, device)
    if key not in _ENCODERS:
        import transformers

        from epm_spark.models.encoder.model import DualEncoder

        transformers.utils.logging.disable_progress_bar()
        log.info("loading encoder %s on %s", model, device)
        _ENCODERS[key] = DualEncoder.load(model, device=device, dtype=settings.dtype, pooling=settings.pooling,
                                          max_length=settings.max_length,
                                          query_instruction=settings.query_instruction, text=settings.text)
    return _ENCODERS[key]


def _texts(frame: pd.DataFrame, text_settings) -> list[str]:
    from epm_spark.models.text import listing_text

    return [listing_text(r, attributes=text_settings.attributes, description_chars=text_settings.description_chars,
                         with_price=text_settings.with_price) for r in frame.to_dict("records")]


def _not_ingested(missing: list[str], there: set[str]) -> InputError:
    return InputError(f"products has no listings of source(s) {missing}; ingest them first "
                      f"(sources there: {sorted(there) or 'none'})")


def check_embed(settings: Settings, sources: list[str], model: str | None = None) -> None:
    """What :func:`embed` would refuse, from the tables' logs and the model folder, before Spark
    starts: a source ``products`` has no rows of, a mistyped encoder."""
    from epm_spark.models.encoder.model import resolve_backbone

    resolve_backbone(model or settings.encoder.backbone)
    there = delta.partition_values(settings.warehouse, "products", "source")
    missing = [s for s in sources if s not in there]
    if missing:
        raise _not_ingested(missing, there)


def embed(spark: SparkSession, settings: Settings, *, sources: list[str], run_id: str,
          model: str | None = None) -> EmbedReport:
    """Bring ``embeddings`` of ``sources`` up to date with ``products`` and the encoder."""
    from pyspark.sql import functions as F

    from epm_spark.models.encoder.model import encoder_identity

    start = time.monotonic()
    if not sources:
        raise InputError("name at least one source to embed (--source NAME)")
    for source in sources:
        check_partition_value("source", source)
    check_partition_value("run_id", run_id)
    enc = settings.encoder
    model = model or enc.backbone
    version, text_settings = encoder_identity(model, enc)
    wh = settings.warehouse

    products = delta.read(spark, wh, "products", engine=settings.delta.engine).filter(F.col("source").isin(sources))
    present = {r["source"]: r["n"] for r in products.groupBy("source").agg(F.count(F.lit(1)).alias("n")).collect()}
    missing = [s for s in sources if not present.get(s)]
    if missing:
        raise _not_ingested(missing, delta.partition_values(wh, "products", "source"))

    def hash_rows(batches):
        for pdf in batches:
            yield pd.DataFrame({"source": pdf["source"], "product_id": pdf["product_id"],
                                "content_hash": [content_hash(t) for t in _texts(pdf, text_settings)]})

    current = products.mapInPandas(hash_rows, "source string, product_id string, content_hash string")
    if delta.table_exists(wh, "embeddings"):
        old = (delta.read(spark, wh, "embeddings", engine=settings.delta.engine)
               .filter(F.col("source").isin(sources)))
    else:
        from epm_spark.io.schemas import EMBEDDINGS

        old = spark.createDataFrame([], EMBEDDINGS.spark_schema())
    fresh = old.filter(F.col("model_version") == version)
    keys = ["source", "product_id", "content_hash"]
    kept = fresh.join(current, keys, "left_semi")
    todo_keys = current.join(fresh.select(*keys), keys, "left_anti")
    todo = products.join(todo_keys, ["source", "product_id"], "inner")

    batch_size, device_pref = enc.batch_size, enc.device
    embedded_at = pd.Timestamp.now(tz="UTC")

    def encode(batches):
        from epm_spark.pipeline.catalog.block import limit_threads

        encoder = None
        for pdf in batches:
            if encoder is None:
                limit_threads()
                encoder = _encoder(model, task_device(device_pref), enc)
            vectors = encoder.encode(encoder.listing_texts(pdf), batch_size, show_progress=False)
            yield pd.DataFrame({
                "product_id": pdf["product_id"], "source": pdf["source"], "model_version": version,
                "content_hash": pdf["content_hash"], "embedding": list(vectors), "embedded_at": embedded_at,
                "run_id": run_id,
            })

    out_schema = ("product_id string, source string, model_version string, content_hash string, "
                  "embedding array<float>, embedded_at timestamp, run_id string")
    from pyspark.storagelevel import StorageLevel

    # Persisted: the encoder runs once, however many sources are written from its output.
    new = todo.mapInPandas(encode, out_schema).persist(StorageLevel.MEMORY_AND_DISK)
    result = kept.select(*new.columns).unionByName(new)
    try:
        with spark_progress(spark, "embed"), worker_errors():
            n_kept, n_old = kept.count(), old.count()
            log.info("embed %s: %d vectors unchanged (%s); embedding the rest", sources, n_kept, version)
            n_todo = new.count()
            for source in sources:
                delta.write(result.filter(F.col("source") == source), wh, "embeddings", "replace",
                            partition={"source": source}, run_id=run_id, job="embed",
                            engine=settings.delta.engine, max_rows_per_file=settings.delta.max_rows_per_file)
    finally:
        new.unpersist()
    listings = sum(present.values())
    return EmbedReport(sources, version, listings, n_todo, n_kept, max(0, n_old - n_kept),
                       time.monotonic() - start)
