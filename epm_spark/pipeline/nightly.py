"""The nightly run, job after job: ingest, embed, block, match, dedup, price-match.

    reports = run_nightly(spark, settings, exports={"ours": "exports/ours.csv", ...},
                          ours="ours", run_id="2026-11-23", model="models/matcher/sft-v1")

Each step is the same job function the CLI verb calls, so a nightly run and a person
running the verbs one by one write the same tables. Every step replaces only its own
run's partitions: re-running a night with the same ``run_id`` changes nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from epm_spark.config import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["Export", "NightlyReport", "run_nightly"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Export:
    """One catalog export as `epm-spark ingest` reads it."""

    path: str
    column_map: dict[str, str] | None = None
    currency: str | None = None


@dataclass
class NightlyReport:
    run_id: str
    reports: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        parts = []
        for step, report in self.reports.items():
            parts.append(report.summary() if hasattr(report, "summary") else f"{step}: {report}")
        total = sum(self.seconds.values())
        parts.append("time per step: " + ", ".join(f"{k} {v:.0f} s" for k, v in self.seconds.items())
                     + f" (total {total:.0f} s)")
        return "\n".join(parts)


def run_nightly(spark: SparkSession, settings: Settings, *, exports: dict[str, Export], ours: str, run_id: str,
                model: str | None = None, explain: str | None = None, ingest_exports: bool = True) -> NightlyReport:
    """Run every nightly job for our catalog ``ours`` and the competitor catalogs among ``exports``.

    ``ingest_exports=False`` starts at ``embed`` (the exports were ingested for this run already).
    """
    from epm_spark.pipeline.block import block
    from epm_spark.pipeline.dedup import dedup
    from epm_spark.pipeline.embed import embed
    from epm_spark.pipeline.ingest import ingest
    from epm_spark.pipeline.match import match
    from epm_spark.pipeline.price_match import price_match

    if ours not in exports:
        raise ValueError(f"no export for our catalog {ours!r}")
    competitors = [s for s in exports if s != ours]
    night = NightlyReport(run_id)

    def step(name: str, fn, *args, **kwargs):
        start = time.monotonic()
        print(f"\n-- {name}", flush=True)
        result = fn(*args, **kwargs)
        night.seconds[name.split(" ")[0]] = night.seconds.get(name.split(" ")[0], 0.0) + time.monotonic() - start
        night.reports[name] = result
        print(result.summary(), flush=True)
        return result

    default_currency = settings.ingest.default_currency
    try:
        for source, export in exports.items() if ingest_exports else ():
            settings.ingest.default_currency = export.currency or default_currency
            step(f"ingest {source}", ingest, spark, settings, input_path=export.path, source=source,
                 column_map=export.column_map, run_id=run_id)
    finally:
        settings.ingest.default_currency = default_currency
    step("embed", embed, spark, settings, sources=list(exports), run_id=run_id)
    pairs = [(ours, ours)] + [(ours, c) for c in competitors]
    for left, right in pairs:
        step(f"block {left}->{right}", block, spark, settings, left=left, right=right, run_id=run_id)
    for left, right in pairs:
        step(f"match {left}->{right}", match, spark, settings, left=left, right=right, run_id=run_id, model=model,
             explain=explain)
    step(f"dedup {ours}", dedup, spark, settings, source=ours, run_id=run_id)
    if competitors:
        step("price-match", price_match, spark, settings, ours=ours, competitors=competitors, run_id=run_id)
    return night
