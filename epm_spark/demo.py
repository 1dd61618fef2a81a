"""``make demo``: the nightly run on the embedded default, end to end on this machine.

    python -m epm_spark.demo [--warehouse DIR] [--products N] [--competitors M]

Generates our catalog and the competitors' as export files, ingests each the way a
user would (with ``--map`` for the shop whose export speaks German), then prints a
summary from SQL, where the tables are, and example queries to try.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import time
from pathlib import Path

from epm_spark.cli import default_run_id, setup_logging
from epm_spark.config import Settings, load_settings

log = logging.getLogger("epm_spark.demo")

# How each synthetic shop's export maps onto products columns (what a user passes as --map).
EXPORT_MAPS = {
    "competitor_a": {"product_id": "artikelnummer", "title": "bezeichnung", "brand": "marke", "price": "preis",
                     "category": "kategorie", "description": "beschreibung"},
}
EXPORT_CURRENCY = {"ours": "EUR", "competitor_a": "EUR", "competitor_c": "GBP"}

EXAMPLE_QUERIES = [
    "SELECT source, count(*) AS listings, round(avg(price), 2) AS avg_price FROM products GROUP BY source ORDER BY source",
    "SELECT substring_index(reason, ':', 1) AS rule, count(*) AS n FROM products_quarantine GROUP BY 1 ORDER BY n DESC",
    "SELECT category, count(*) AS n FROM products WHERE source = 'ours' GROUP BY category ORDER BY n DESC LIMIT 5",
]


def _step(title: str):
    print(f"\n== {title}", flush=True)
    return time.monotonic()


def run_demo(settings: Settings, *, products: int | None = None, competitors: int | None = None) -> dict:
    from epm_spark.pipeline.generate import generate
    from epm_spark.pipeline.ingest import ingest
    from epm_spark.pipeline.sql import run_sql
    from epm_spark.spark import get_spark

    run_id = default_run_id()
    timings: dict[str, float] = {}

    t = _step("1/3 generate synthetic catalog exports (ours + competitors, with ground truth)")
    report = generate(settings, products=products, competitors=competitors)
    print(report.summary())
    timings["generate"] = time.monotonic() - t

    spark = get_spark(settings)
    t = _step("2/3 ingest every export into products (bad rows into products_quarantine)")
    for source, path in report.files.items():
        settings.ingest.default_currency = EXPORT_CURRENCY.get(source)
        result = ingest(spark, settings, input_path=str(path), source=source,
                        column_map=EXPORT_MAPS.get(source), run_id=run_id)
        print(result.summary())
    timings["ingest"] = time.monotonic() - t

    t = _step("3/3 summary from SQL")
    out = io.StringIO()
    run_sql(spark, settings, EXAMPLE_QUERIES[0], out=out)
    print(out.getvalue(), end="")
    timings["sql"] = time.monotonic() - t

    print(f"\nwarehouse: {Path(settings.warehouse).resolve()}")
    from epm_spark.io.delta import describe_warehouse

    for row in describe_warehouse(settings.warehouse):
        print(f"  {row['table']:<22} {row['rows']:>8,} rows  version {row['version']}")
    print("\ntry:")
    for q in EXAMPLE_QUERIES:
        print(f'  .venv/bin/epm-spark sql "{q}"')
    print("\ntimings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m epm_spark.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--warehouse", default=None)
    parser.add_argument("--products", type=int, default=None)
    parser.add_argument("--competitors", type=int, default=None)
    args = parser.parse_args(argv)
    setup_logging()
    settings = load_settings(warehouse=args.warehouse)
    run_demo(settings, products=args.products, competitors=args.competitors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
