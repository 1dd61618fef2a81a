"""Verbs that fill, inspect and maintain the warehouse: catalogs and benchmarks in, SQL, tables, runs, vacuum."""

from __future__ import annotations

import sys

from epm_spark.cli.common import common_options, count, default_run_id, print_json, run_id_option, show, spark_session
from epm_spark.config import Settings
from epm_spark.errors import InputError


def add_generate(sub) -> None:
    p = sub.add_parser("generate", help="write synthetic noisy catalogs (ours + competitors) with ground truth")
    p.add_argument("--products", type=count, default=None, help="listings in our catalog")
    p.add_argument("--competitors", type=int, default=None, help="competitor catalogs")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", default=None, help="folder for the CSV/JSON exports (default: WAREHOUSE/../exports)")
    common_options(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.catalog.generate import generate

        report = generate(settings, out=args.out, products=args.products, competitors=args.competitors,
                          seed=args.seed)
        show(report)
        return 0

    p.set_defaults(func=run)


def add_ingest(sub) -> None:
    p = sub.add_parser("ingest", help="read a catalog export into products (bad rows into products_quarantine)")
    p.add_argument("--input", required=True, help="file or folder (CSV, Parquet, JSON lines, Delta)")
    p.add_argument("--source", required=True, help="catalog name, e.g. ours or competitor_a")
    p.add_argument("--format", choices=["csv", "parquet", "json", "delta"], default=None,
                   help="input format (default: from the file extension)")
    p.add_argument("--map", action="append", default=[], metavar="COLUMN=INPUT_COLUMN",
                   help="read products column COLUMN from INPUT_COLUMN, e.g. --map product_id=sku")
    p.add_argument("--currency", default=None,
                   help="currency of prices that name none, e.g. EUR (default: ingest.default_currency)")
    run_id_option(p)
    common_options(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.catalog.ingest import check_export, ingest, parse_column_map

        column_map = parse_column_map(args.map)
        check_export(settings, args.input, args.format, args.currency, column_map)  # before Spark starts
        report = ingest(spark_session(settings), settings, input_path=args.input, source=args.source,
                        fmt=args.format, column_map=column_map, currency=args.currency,
                        run_id=args.run_id or default_run_id())
        show(report)
        return 0

    p.set_defaults(func=run)


def add_load_benchmark(sub) -> None:
    p = sub.add_parser("load-benchmark", help="load a benchmark folder into products and labelled_pairs")
    p.add_argument("--benchmark", required=True, help="DeepMatcher folder or WDC Products folder")
    p.add_argument("--name", default=None, help="benchmark name (default: the folder's name)")
    run_id_option(p)
    common_options(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.catalog.load_benchmark import load_benchmark_tables

        report = load_benchmark_tables(None, settings, path=args.benchmark, name=args.name,
                                       run_id=args.run_id or default_run_id())
        show(report)
        return 0

    p.set_defaults(func=run)


def add_sql(sub) -> None:
    p = sub.add_parser("sql", help="run Spark SQL over every table of the warehouse")
    p.add_argument("query", help='e.g. "SELECT source, count(*) FROM products GROUP BY source"')
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--limit", type=int, default=1000, help="rows to print at most (0: all)")
    common_options(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.sql import run_sql

        run_sql(spark_session(settings), settings, args.query, fmt=args.format, limit=args.limit, out=sys.stdout)
        return 0

    p.set_defaults(func=run)


def add_tables(sub) -> None:
    p = sub.add_parser("tables", help="list the warehouse's tables with their version and row count")
    p.add_argument("--json", action="store_true")
    common_options(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.io.delta import describe_warehouse

        rows = describe_warehouse(settings.warehouse)
        if args.json:
            print_json(rows)
        else:
            for r in rows:
                print(f"{r['table']:<22} version {r['version']:<4} {r['rows']:>10,} rows  {r['path']}")
        return 0

    p.set_defaults(func=run)


def add_vacuum(sub) -> None:
    p = sub.add_parser("vacuum", help="remove files no recent table version uses (replaced rows, killed writes)")
    p.add_argument("--table", action="append", default=[], help="one table (repeatable; default: every table)")
    p.add_argument("--retain-hours", type=int, default=None,
                   help="keep files needed by versions of the last H hours (default and minimum: the table's, 168)")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    p.add_argument("--json", action="store_true")
    common_options(p)

    def run(args, settings: Settings) -> int:
        from dataclasses import asdict

        from epm_spark.io.maintenance import vacuum_warehouse

        results = vacuum_warehouse(settings.warehouse, args.table, retain_hours=args.retain_hours,
                                   dry_run=args.dry_run)
        if args.json:
            print_json([asdict(r) for r in results])
        else:
            for r in results:
                print(r.summary())
        return 0

    p.set_defaults(func=run)


def add_schema(sub) -> None:
    p = sub.add_parser("schema", help="show the declared columns of the warehouse tables")
    p.add_argument("table", nargs="?", help="one table (default: all)")
    common_options(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.io.schemas import TABLES, spec

        for t in [spec(args.table)] if args.table else TABLES.values():
            parts = f"  partitioned by {', '.join(t.partition_by)}" if t.partition_by else ""
            print(f"{t.name}: {t.description}{parts}")
            for f in t.schema:
                req = " (required)" if f.name in t.required else ""
                print(f"  {f.name:<26} {str(f.type):<28} {t.columns_doc.get(f.name, '')}{req}")
            print()
        return 0

    p.set_defaults(func=run)


def add_runs(sub) -> None:
    p = sub.add_parser("runs", help="list job attempts from job_runs, newest first")
    p.add_argument("--last", type=int, default=20, help="attempts to show (0: all; default 20)")
    p.add_argument("--run-id", default=None, help="only this run")
    p.add_argument("--json", action="store_true")
    common_options(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.runs import format_runs, read_runs

        if args.last < 0:
            raise InputError(f"--last must be >= 0, got {args.last}")
        frame = read_runs(settings.warehouse, last=args.last or None, run_id=args.run_id)
        if args.json:
            print_json(frame.to_dict("records"))
        else:
            print(format_runs(frame))
        return 0

    p.set_defaults(func=run)


VERBS = [add_generate, add_ingest, add_load_benchmark, add_sql, add_tables, add_vacuum, add_schema, add_runs]
