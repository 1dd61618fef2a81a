"""``epm-spark ingest-events``: a search log (CSV, Parquet, JSON lines, Delta) into ``search_events``.

The same contract as catalog ingestion: every row read comes out once, either as an event
or in ``search_events_quarantine`` with its reason (rules in :mod:`epm_spark.io.events`,
plus ``unknown product``: a listing not in ``products`` of ``--source``). The run's
partition of both tables is replaced, so re-running a run id replaces, never duplicates.
Above ``ingest.max_quarantine_share`` rejected rows nothing is written.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from epm_spark.config import Settings
from epm_spark.errors import InputError, worker_errors
from epm_spark.io import delta
from epm_spark.io.events import OUTPUT, resolve_event_columns, validate_events
from epm_spark.io.readers import CORRUPT, FILE, ROW, read_catalog
from epm_spark.io.schemas import check_partition_value
from epm_spark.progress import spark_progress

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["EventsReport", "ingest_events"]

log = logging.getLogger(__name__)


@dataclass
class EventsReport:
    input_path: str
    source: str
    rows_read: int
    events: int
    quarantined: int
    reasons: dict[str, int]
    run_id: str
    seconds: float
    versions: dict[str, int | None] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"ingest-events {self.input_path} (listings of {self.source}) ({self.seconds:.1f} s)",
                 f"  rows read: {self.rows_read:,}  events: {self.events:,}  quarantined: {self.quarantined:,}"]
        for reason, n in sorted(self.reasons.items(), key=lambda kv: -kv[1]):
            lines.append(f"    {n:>8,}  {reason}")
        lines.append(f"  check: events + quarantined == rows read: "
                     f"{self.events:,} + {self.quarantined:,} == {self.rows_read:,}")
        return "\n".join(lines)


def ingest_events(spark: SparkSession, settings: Settings, *, input_path: str, source: str, run_id: str,
                  fmt: str | None = None) -> EventsReport:
    from pyspark.sql import functions as F
    from pyspark.storagelevel import StorageLevel

    start = time.monotonic()
    check_partition_value("source", source)
    check_partition_value("run_id", run_id)
    wh = settings.warehouse
    if not delta.table_exists(wh, "products"):
        raise InputError("the warehouse has no products table; ingest the catalog the events refer to first")
    sources = delta.partition_values(wh, "products", "source")
    if source not in sources:  # else every event would be read, then quarantined as an unknown product
        raise InputError(f"products has no listings of source {source!r} (sources there: "
                         f"{', '.join(sorted(sources)) or 'none'}); ingest the catalog the events refer to first")
    raw = read_catalog(spark, input_path, fmt, settings.ingest)
    input_columns = [c for c in raw.columns if c not in (CORRUPT, FILE, ROW)]
    columns = resolve_event_columns(input_columns)
    keep = [*input_columns, CORRUPT]
    out_schema = ("ok boolean, reason string, session_id string, query string, product_id string, position int, "
                  "impressed boolean, clicked boolean, added_to_cart boolean, purchased boolean, "
                  f"event_time timestamp, {FILE} string, {ROW} long, raw string")

    def validate(batches):
        for pdf in batches:
            checked = validate_events(pdf[keep], columns)
            checked[FILE] = pdf[FILE].values
            checked[ROW] = pdf[ROW].values
            checked["raw"] = pdf["raw"].values
            checked["position"] = checked["position"].astype("Int32")
            checked["event_time"] = pd.to_datetime(checked["event_time"], utc=True)
            yield checked[[*OUTPUT, FILE, ROW, "raw"]]

    raw_json = F.coalesce(F.col(CORRUPT), F.to_json(F.struct(*[F.col(f"`{c}`") for c in input_columns]),
                                                    {"ignoreNullFields": "false"}))
    known = (delta.read(spark, wh, "products", engine=settings.delta.engine).filter(F.col("source") == source)
             .select("product_id").distinct().withColumn("_known", F.lit(True)))
    checked = (raw.withColumn("raw", raw_json).mapInPandas(validate, out_schema)
               .join(F.broadcast(known), "product_id", "left")
               .withColumn("reason", F.when(F.col("ok") & F.col("_known").isNull(), F.concat(
                   F.lit("unknown product: "), F.col("product_id"), F.lit(f" is not in products of {source}")))
                   .otherwise(F.col("reason")))
               .withColumn("ok", F.col("ok") & F.col("_known").isNotNull())
               .drop("_known")
               .persist(StorageLevel.MEMORY_AND_DISK))
    try:
        with spark_progress(spark, "ingest-events"), worker_errors():
            counts = {r["ok"]: r["n"] for r in checked.groupBy("ok").agg(F.count(F.lit(1)).alias("n")).collect()}
            rows_read = raw.count()
        good, bad = counts.get(True, 0), counts.get(False, 0)
        if good + bad != rows_read:
            raise RuntimeError(f"ingest-events lost rows: {good} + {bad} != {rows_read}; nothing was written")
        if rows_read == 0:
            raise InputError(f"{input_path} holds no rows; nothing was written")
        reasons: Counter[str] = Counter()
        for r in (checked.filter(~F.col("ok")).groupBy(F.substring_index("reason", ":", 1).alias("rule"))
                  .count().collect()):
            reasons[r["rule"]] = r["count"]
        share = settings.ingest.max_quarantine_share
        if bad / rows_read > share:
            top = ", ".join(f"{k} ({v:,})" for k, v in reasons.most_common(3))
            raise InputError(f"{bad:,} of {rows_read:,} rows of {input_path} fail validation ({top}); more than "
                             f"ingest.max_quarantine_share={share:.0%} usually means a wrong --source or --format. "
                             "Nothing was written.")
        now = dt.datetime.now(dt.timezone.utc)
        quarantine = (checked.filter(~F.col("ok"))
                      .select(F.col(FILE).alias("source_file"), F.col(ROW).alias("row_number"), "session_id",
                              "product_id", "reason", "raw")
                      .withColumns({"ingested_at": F.lit(now), "run_id": F.lit(run_id)}))
        events = (checked.filter(F.col("ok"))
                  .select("session_id", "query", "product_id", "position", "impressed", "clicked", "added_to_cart",
                          "purchased", "event_time")
                  .withColumn("run_id", F.lit(run_id)))
        versions = {}
        # Quarantine first: if the second commit fails, the events table is the one left untouched.
        for table, df in (("search_events_quarantine", quarantine), ("search_events", events)):
            info = delta.write(df, wh, table, "replace", partition={"run_id": run_id}, run_id=run_id,
                               job="ingest-events", engine=settings.delta.engine,
                               max_rows_per_file=settings.delta.max_rows_per_file)
            versions[table] = info.version
    finally:
        checked.unpersist()
    report = EventsReport(input_path, source, rows_read, good, bad, dict(reasons), run_id,
                          time.monotonic() - start, versions)
    log.info("ingest-events: %d rows read, %d events, %d quarantined", rows_read, good, bad)
    return report
