"""``epm-spark ingest``: a catalog export becomes the ``products`` rows of one source.

Each run replaces the source's rows in ``products`` and ``products_quarantine``
(the partition ``source=<name>``), so a nightly export that drops a listing drops it
from the table, and re-running the same export changes nothing. Every row read lands
in exactly one of the two tables; the job checks ``products + quarantine == rows read``
before it commits anything.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from epm_spark.config import IngestSettings, Settings
from epm_spark.errors import ConfigError, InputError, worker_errors
from epm_spark.io import delta
from epm_spark.io.readers import CORRUPT, FILE, ROW, export_columns, input_format, read_catalog
from epm_spark.io.schemas import PRODUCTS, PRODUCTS_QUARANTINE, check_partition_value
from epm_spark.io.validation import OUTPUT_COLUMNS, resolve_column_map, validate_batch
from epm_spark.progress import spark_progress

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["IngestReport", "check_export", "ingest", "parse_column_map"]

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    source: str
    input_path: str
    rows_read: int
    products: int
    quarantined: int
    reasons: dict[str, int] = field(default_factory=dict)
    column_map: str = ""
    run_id: str = ""
    seconds: float = 0.0
    versions: dict[str, int | None] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [
            f"ingest {self.source} from {self.input_path} (run {self.run_id}, {self.seconds:.1f} s)",
            f"  columns:     {self.column_map}",
            f"  rows read:   {self.rows_read:,}",
            f"  products:    {self.products:,}",
            f"  quarantined: {self.quarantined:,}",
        ]
        for reason, n in sorted(self.reasons.items(), key=lambda kv: -kv[1]):
            lines.append(f"    {n:>8,}  {reason}")
        lines.append(f"  check: products + quarantined == rows read: "
                     f"{self.products:,} + {self.quarantined:,} == {self.rows_read:,}")
        return "\n".join(lines)


def parse_column_map(assignments: list[str]) -> dict[str, str]:
    """``["product_id=sku", "title=name"]`` -> ``{"product_id": "sku", "title": "name"}``."""
    mapping: dict[str, str] = {}
    for item in assignments:
        if "=" not in item:
            raise InputError(f"--map {item!r} must look like COLUMN=INPUT_COLUMN, e.g. product_id=sku")
        target, source = (part.strip() for part in item.split("=", 1))
        if not target or not source:
            raise InputError(f"--map {item!r} must look like COLUMN=INPUT_COLUMN, e.g. product_id=sku")
        if target in mapping:
            raise InputError(f"--map gives {target} twice")
        mapping[target] = source
    return mapping


def _rules(settings: Settings, currency: str | None) -> IngestSettings:
    if currency is None:
        return settings.ingest
    try:
        # replace() runs the settings' own validation, so --currency is checked like the config key.
        return dataclasses.replace(settings.ingest, default_currency=currency)
    except ConfigError:
        raise InputError(f"currency {currency!r} is not a known ISO 4217 code or symbol (e.g. EUR, USD, £)") from None


def check_export(settings: Settings, input_path: str, fmt: str | None, currency: str | None,
                 column_map: dict[str, str] | None = None) -> None:
    """What :func:`ingest` would refuse of an export before reading a row: a path that does not
    exist, a format it cannot tell, an unknown currency, a column map the header contradicts."""
    rules = _rules(settings, currency)
    columns = export_columns(input_path, input_format(input_path, fmt), rules)
    if columns is not None:
        resolve_column_map(columns, column_map)


def ingest(spark: SparkSession, settings: Settings, *, input_path: str, source: str, fmt: str | None = None,
           column_map: dict[str, str] | None = None, currency: str | None = None, run_id: str,
           allow_empty: bool = False) -> IngestReport:
    """Read ``input_path`` and replace source ``source`` in ``products`` / ``products_quarantine``.

    ``currency`` is the currency of prices that name none (default: ``ingest.default_currency``).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.storagelevel import StorageLevel

    start = time.monotonic()
    check_partition_value("source", source)
    check_partition_value("run_id", run_id)
    warehouse = settings.warehouse
    rules = _rules(settings, currency)
    raw = read_catalog(spark, input_path, fmt, rules)
    input_columns = [c for c in raw.columns if c not in (CORRUPT, FILE, ROW)]
    cmap = resolve_column_map(input_columns, column_map)
    log.info("ingest %s: %s; attributes: %s", source, cmap.describe(), ", ".join(cmap.attributes) or "none")

    ingested_at = dt.datetime.now(dt.timezone.utc)
    out_schema = (
        "ok boolean, reason string, product_id string, title string, brand string, category string, "
        "description string, price double, currency string, price_raw string, attributes map<string,string>, "
        f"{FILE} string, {ROW} long, raw string"
    )
    keep = [*input_columns, CORRUPT]

    def validate(batches):
        for pdf in batches:
            checked = validate_batch(pdf[keep], cmap, rules)
            checked[FILE] = pdf[FILE].values
            checked[ROW] = pdf[ROW].values
            checked["raw"] = pdf["raw"].values
            yield checked[[*OUTPUT_COLUMNS, FILE, ROW, "raw"]]

    # The raw row, as the export had it: the unsplittable text, else every field as JSON.
    raw_json = F.coalesce(F.col(CORRUPT), F.to_json(F.struct(*[F.col(f"`{c}`") for c in input_columns]), {"ignoreNullFields": "false"}))
    checked = (raw.withColumn("raw", raw_json).mapInPandas(validate, out_schema)
               .withColumn(FILE, _display_path(F.col(FILE))))

    # A product id must be unique within its source: the first valid row (file, row order) wins.
    # Rejected rows stay out of the window, or a broken first row would also discard its valid repeat.
    first = Window.partitionBy("ok", "product_id").orderBy(FILE, ROW)
    checked = (
        checked.withColumn("_dup", F.when(F.col("ok"), F.row_number().over(first)).otherwise(F.lit(1)))
        .withColumn("_first_at", F.when(F.col("ok"), F.first(F.concat_ws(":", F.col(FILE), F.col(ROW).cast("string"))).over(first)))
        .withColumn("reason", F.when(F.col("_dup") > 1, F.concat(
            F.lit("duplicate product_id: "), F.col("product_id"), F.lit(" already at "), F.col("_first_at")))
            .otherwise(F.col("reason")))
        .withColumn("ok", F.col("ok") & (F.col("_dup") == 1))
        .drop("_dup", "_first_at")
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    try:
        with spark_progress(spark, f"ingest {source}"), worker_errors():
            counts = {r["ok"]: r["n"] for r in checked.groupBy("ok").agg(F.count(F.lit(1)).alias("n")).collect()}
            rows_read = raw.count()
        good, bad = counts.get(True, 0), counts.get(False, 0)
        if good + bad != rows_read:
            raise RuntimeError(f"ingest lost rows: {good} + {bad} != {rows_read}; nothing was written")
        if rows_read == 0 and not allow_empty:
            raise InputError(f"{input_path} holds no rows; refusing to empty source {source!r} "
                             "(pass allow_empty=True to do that on purpose)")
        reasons = Counter()
        if bad:
            for r in (checked.filter(~F.col("ok"))
                      .groupBy(F.substring_index("reason", ":", 1).alias("rule")).count().collect()):
                reasons[r["rule"]] = r["count"]
        if rows_read and bad / rows_read > rules.max_quarantine_share:
            top = ", ".join(f"{k} ({v:,})" for k, v in reasons.most_common(3))
            raise InputError(
                f"{bad:,} of {rows_read:,} rows of {input_path} fail validation ({top}); more than "
                f"ingest.max_quarantine_share={rules.max_quarantine_share:.0%} usually means a wrong --format, "
                "--map or delimiter. Nothing was written."
            )
        meta = dict(ingested_at=F.lit(ingested_at), run_id=F.lit(run_id), source=F.lit(source))
        quarantine = (checked.filter(~F.col("ok"))
                      .select(F.col(FILE).alias("source_file"), F.col(ROW).alias("row_number"), "product_id",
                              "reason", "raw")
                      .withColumns(meta))
        products = (checked.filter(F.col("ok"))
                    .select("product_id", "title", "brand", "category", "description", "price", "currency",
                            "price_raw", "attributes")
                    .withColumns(meta))
        versions = {}
        # Quarantine first: if the second commit fails, the main table is the one left untouched.
        for spec, df in ((PRODUCTS_QUARANTINE, quarantine), (PRODUCTS, products)):
            info = delta.write(df, warehouse, spec.name, "replace", partition={"source": source},
                               run_id=run_id, job="ingest", engine=settings.delta.engine,
                               max_rows_per_file=settings.delta.max_rows_per_file)
            versions[spec.name] = info.version
    finally:
        checked.unpersist()
    report = IngestReport(source, input_path, rows_read, good, bad, dict(reasons), cmap.describe(), run_id,
                          time.monotonic() - start, versions)
    log.info("ingest %s: %d rows read, %d products, %d quarantined", source, rows_read, good, bad)
    return report


def _display_path(col):
    """``file:///data/a.csv`` -> ``/data/a.csv``; other URIs stay as they are."""
    from pyspark.sql import functions as F

    return F.when(col.startswith("file:"), F.url_decode(F.regexp_replace(col, r"^file:(//)?", ""))).otherwise(col)
