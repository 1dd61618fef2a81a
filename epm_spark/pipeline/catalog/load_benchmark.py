"""``epm-spark load-benchmark``: a benchmark folder becomes ``products`` and ``labelled_pairs`` rows.

Each table of a DeepMatcher folder is one source (``<name>_left``, ``<name>_right``), a WDC
file's pool of offers one (``<name>``); reloading replaces those sources and the benchmark's
pairs, so it never duplicates. The files are
read on the driver (they are small and already on its disk), so no Spark job is needed.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field

import pandas as pd

from epm_spark.config import Settings
from epm_spark.io import delta
from epm_spark.io.benchmarks import load_benchmark
from epm_spark.io.schemas import check_partition_value

__all__ = ["BenchmarkLoadReport", "load_benchmark_tables"]

log = logging.getLogger(__name__)


@dataclass
class BenchmarkLoadReport:
    name: str
    layout: str
    listings: dict[str, int] = field(default_factory=dict)
    pairs: dict[str, tuple[int, int]] = field(default_factory=dict)  # split -> (pairs, positives)
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [f"benchmark {self.name} ({self.layout} layout) loaded in {self.seconds:.1f} s"]
        for source, n in self.listings.items():
            lines.append(f"  products   {source:<28} {n:>7,} listings")
        for split, (n, pos) in sorted(self.pairs.items()):
            lines.append(f"  pairs      {split:<28} {n:>7,} ({pos:,} matches)")
        return "\n".join(lines)


def load_benchmark_tables(spark, settings: Settings, *, path: str, name: str | None = None,
                          run_id: str) -> BenchmarkLoadReport:
    start = time.monotonic()
    bench = load_benchmark(path, name)
    check_partition_value("benchmark", bench.name)
    check_partition_value("run_id", run_id)
    now = pd.Timestamp(dt.datetime.now(dt.timezone.utc))
    report = BenchmarkLoadReport(bench.name, bench.layout)
    # Both sides in one commit: a job killed between two commits would leave one side reloaded.
    rows = bench.listings().assign(ingested_at=now, run_id=run_id)
    sources = sorted(set(rows["source"]))
    if bench.one_pool:
        # Loads before WDC files became one pool wrote each side as a source of its own: a reload clears them.
        sources += [f"{bench.name}_left", f"{bench.name}_right"]
    delta.write_pandas(settings.warehouse, "products", rows, "replace", partition={"source": sources},
                       run_id=run_id, job="load-benchmark")
    report.listings = rows.groupby("source").size().to_dict()
    delta.write_pandas(settings.warehouse, "labelled_pairs", bench.pairs, "replace",
                       partition={"benchmark": bench.name}, run_id=run_id, job="load-benchmark")
    for split, group in bench.pairs.groupby("split"):
        report.pairs[split] = (len(group), int(group["label"].sum()))
    report.seconds = time.monotonic() - start
    return report
