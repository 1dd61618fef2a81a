"""``epm-spark price-match``: our listings against the competitor listings they match, in one currency.

For every accepted match (``label = match``) of our source against a competitor in the
run, both prices are converted to ``price_match.currency`` with the rate table
``price_match.rates`` (units of the reporting currency per unit of each currency), and
the difference is written to ``price_comparisons``:

    difference = competitor_price - our_price        percent = difference / our_price * 100

A negative difference means the competitor undercuts us, unless the comparison is
``implausible``: a competitor price below ``price_match.min_ratio`` or above
``price_match.max_ratio`` times ours is more likely a wrong match, a multipack or a unit
error than a real price, so it is flagged, left out of the undercut figures, and listed
apart in the summary. A price in a currency the rate
table does not know stays in the table with no converted value, and the run says how
many there were, rather than guessing a rate.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from epm_spark.config import Settings
from epm_spark.errors import InputError, worker_errors
from epm_spark.io import delta
from epm_spark.io.schemas import check_partition_value
from epm_spark.progress import spark_progress

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["PriceMatchReport", "price_match"]

log = logging.getLogger(__name__)


@dataclass
class PriceMatchReport:
    ours: str
    competitors: list[str]
    currency: str
    comparisons: int
    our_products_matched: int
    undercut: int
    median_undercut_percent: float | None
    unknown_currency: dict[str, int] = field(default_factory=dict)
    biggest_gaps: list[dict] = field(default_factory=list)
    implausible: int = 0
    implausible_rows: list[dict] = field(default_factory=list)
    ratios: tuple[float, float] = (0.0, 0.0)
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [
            f"price-match {self.ours} vs {', '.join(self.competitors)} in {self.currency} ({self.seconds:.1f} s)",
            f"  comparisons: {self.comparisons:,} for {self.our_products_matched:,} of our products",
            f"  undercut: {self.undercut:,} of our products are sold cheaper by a competitor"
            + (f" (median {self.median_undercut_percent:.1f}% below us)" if self.median_undercut_percent is not None else ""),
        ]
        if self.unknown_currency:
            lines.append("  no rate for: " + ", ".join(f"{c} ({n:,} prices)" for c, n in self.unknown_currency.items())
                         + " - add them to price_match.rates")
        lines.extend(_gap_line(gap, "<") for gap in self.biggest_gaps)
        if self.implausible:
            low, high = self.ratios
            lines.append(f"  implausible, not counted above: {self.implausible:,} comparisons with a competitor price "
                         f"under {low:.0%} or over {high:.0%} of ours (check these matches)")
            lines.extend(_gap_line(gap, "vs") for gap in self.implausible_rows)
        return "\n".join(lines)


def _gap_line(gap: dict, sign: str) -> str:
    return (f"    {gap['percent']:7.1f}%  {gap['our_title'][:50]:<50} vs {gap['competitor_source']}: "
            f"{gap['competitor_price']:.2f} {sign} {gap['our_price']:.2f}")


def price_match(spark: SparkSession, settings: Settings, *, ours: str, competitors: list[str],
                run_id: str, matches_run_id: str | None = None) -> PriceMatchReport:
    from pyspark.sql import functions as F

    start = time.monotonic()
    cfg, wh, engine = settings.price_match, settings.warehouse, settings.delta.engine
    if not competitors:
        raise InputError("name at least one competitor source (--competitors A,B)")
    for s in (ours, *competitors):
        check_partition_value("source", s)
    check_partition_value("run_id", run_id)
    matches_run_id = matches_run_id or run_id
    matches = (delta.read(spark, wh, "matches", engine=engine)
               .filter((F.col("run_id") == matches_run_id) & (F.col("left_source") == ours)
                       & F.col("right_source").isin(competitors)))
    present = {r["right_source"] for r in matches.select("right_source").distinct().collect()}
    missing = [c for c in competitors if c not in present]
    if missing:
        raise InputError(f"matches of run {matches_run_id!r} hold no pairs of {ours} against {missing}; run "
                         "`epm-spark block` and `epm-spark match` for them first")
    accepted = matches.filter(F.col("label") == "match")
    if cfg.min_probability is not None:
        accepted = accepted.filter(F.col("probability") >= cfg.min_probability)

    products = delta.read(spark, wh, "products", engine=engine).select("source", "product_id", "title", "price",
                                                                        "currency")
    rates = spark.createDataFrame(list(cfg.rates.items()), "code string, rate double")
    our = products.filter(F.col("source") == ours).select(
        F.col("product_id").alias("left_id"), F.col("title").alias("our_title"),
        F.col("price").alias("our_price_original"), F.col("currency").alias("our_currency"))
    their = products.select(
        F.col("source").alias("right_source"), F.col("product_id").alias("right_id"),
        F.col("title").alias("competitor_title"), F.col("price").alias("competitor_price_original"),
        F.col("currency").alias("competitor_currency"))
    our_rate = rates.select(F.col("code").alias("our_currency"), F.col("rate").alias("our_rate"))
    their_rate = rates.select(F.col("code").alias("competitor_currency"), F.col("rate").alias("their_rate"))
    joined = (accepted.join(our, "left_id").join(their, ["right_source", "right_id"])
              .join(F.broadcast(our_rate), "our_currency", "left").join(F.broadcast(their_rate), "competitor_currency", "left"))
    our_price = F.col("our_price_original") * F.col("our_rate")
    their_price = F.col("competitor_price_original") * F.col("their_rate")
    comparisons = joined.select(
        F.col("left_id").alias("our_id"), F.lit(ours).alias("our_source"),
        F.col("right_id").alias("competitor_id"), F.col("right_source").alias("competitor_source"),
        "our_title", "competitor_title",
        F.round(our_price, 2).alias("our_price"), F.round(their_price, 2).alias("competitor_price"),
        "competitor_price_original", "competitor_currency", F.lit(cfg.currency).alias("currency"),
        F.round(their_price - our_price, 2).alias("difference"),
        F.round((their_price - our_price) / our_price * 100, 2).alias("percent"),
        F.coalesce((their_price < our_price * cfg.min_ratio) | (their_price > our_price * cfg.max_ratio),
                   F.lit(False)).alias("implausible"),
        F.col("probability").alias("match_probability"), "rationale", F.lit(run_id).alias("run_id"))

    with spark_progress(spark, "price-match"), worker_errors():
        info = delta.write(comparisons, wh, "price_comparisons", "replace",
                           partition={"run_id": run_id, "our_source": ours}, run_id=run_id, job="price-match",
                           engine=engine, max_rows_per_file=settings.delta.max_rows_per_file)
        written = (delta.read(spark, wh, "price_comparisons", engine=engine)
                   .filter((F.col("run_id") == run_id) & (F.col("our_source") == ours)))
        unknown = {}
        for r in (joined.filter(F.col("our_rate").isNull() & F.col("our_price_original").isNotNull())
                  .groupBy(F.coalesce("our_currency", F.lit("(none)")).alias("c")).count().collect()):
            unknown[r["c"]] = unknown.get(r["c"], 0) + r["count"]
        for r in (joined.filter(F.col("their_rate").isNull() & F.col("competitor_price_original").isNotNull())
                  .groupBy(F.coalesce("competitor_currency", F.lit("(none)")).alias("c")).count().collect()):
            unknown[r["c"]] = unknown.get(r["c"], 0) + r["count"]
        # Per our product, its cheapest competitor offer decides whether we are undercut.
        plausible = written.filter(~F.col("implausible"))
        cheapest = (plausible.filter(F.col("percent").isNotNull()).groupBy("our_id")
                    .agg(F.min("percent").alias("percent")))
        stats = cheapest.agg(F.count(F.lit(1)).alias("priced"),
                             F.sum((F.col("percent") < 0).cast("int")).alias("undercut"),
                             F.percentile_approx(F.when(F.col("percent") < 0, -F.col("percent")), 0.5)
                             .alias("median")).collect()[0]
        matched = written.select("our_id").distinct().count()
        shown = ("our_source", "our_id", "competitor_source", "competitor_id", "our_title", "our_price",
                 "competitor_price", "percent")
        gaps = [r.asDict() for r in plausible.filter(F.col("percent") < 0).orderBy("percent")
                .select(*shown).limit(5).collect()]
        flagged = written.filter(F.col("implausible"))
        implausible = flagged.count()
        flagged_rows = [r.asDict() for r in flagged.orderBy(F.abs(F.col("percent")).desc()).select(*shown)
                        .limit(5).collect()]
    if unknown:
        log.warning("price-match: no exchange rate for %s; those comparisons have no converted prices", unknown)
    return PriceMatchReport(ours, competitors, cfg.currency, info.rows, matched, int(stats["undercut"] or 0),
                            float(stats["median"]) if stats["median"] is not None else None, unknown, gaps,
                            implausible, flagged_rows, (cfg.min_ratio, cfg.max_ratio), time.monotonic() - start)
