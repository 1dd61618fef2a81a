"""The ``epm-spark`` command: every job of the suite for a person at a terminal.

    epm-spark [--conf FILE] [--warehouse DIR] [--set KEY=VALUE ...] VERB [ARGS]

Each verb parses its arguments, loads the settings once, and calls the job
function of the same name in :mod:`epm_spark.pipeline` (or the model layer for
verbs that need no Spark). Errors the user can act on print as one line and exit
with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from epm_spark import __version__
from epm_spark.config import Settings, load_settings
from epm_spark.errors import EpmError

log = logging.getLogger("epm_spark")

Handler = Callable[[argparse.Namespace, Settings], int | None]


def default_run_id() -> str:
    """Nightly runs default to the UTC date, so re-running the same night replaces, not duplicates."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="set_verb", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set block.k=20 (repeatable)")


def _run_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-id", default=None,
                        help="identifies this run in every table it writes (default: today's UTC date)")


def _spark(settings: Settings):
    from epm_spark.spark import get_spark

    return get_spark(settings)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


# ----------------------------------------------------------------------------- verbs


def _verb_generate(sub) -> None:
    p = sub.add_parser("generate", help="write synthetic noisy catalogs (ours + competitors) with ground truth")
    p.add_argument("--products", type=int, default=None, help="listings in our catalog")
    p.add_argument("--competitors", type=int, default=None, help="competitor catalogs")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", default=None, help="folder for the CSV/JSON exports (default: WAREHOUSE/../exports)")
    _common(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.generate import generate

        report = generate(settings, out=args.out, products=args.products, competitors=args.competitors,
                          seed=args.seed)
        print(report.summary())
        return 0

    p.set_defaults(func=run)


def _verb_ingest(sub) -> None:
    p = sub.add_parser("ingest", help="read a catalog export into products (bad rows into products_quarantine)")
    p.add_argument("--input", required=True, help="file or folder (CSV, Parquet, JSON lines, Delta)")
    p.add_argument("--source", required=True, help="catalog name, e.g. ours or competitor_a")
    p.add_argument("--format", choices=["csv", "parquet", "json", "delta"], default=None,
                   help="input format (default: from the file extension)")
    p.add_argument("--map", action="append", default=[], metavar="COLUMN=INPUT_COLUMN",
                   help="read products column COLUMN from INPUT_COLUMN, e.g. --map product_id=sku")
    p.add_argument("--currency", default=None,
                   help="currency of prices that name none, e.g. EUR (default: ingest.default_currency)")
    _run_id(p)
    _common(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.ingest import ingest, parse_column_map

        if args.currency:
            settings.ingest.default_currency = args.currency
        report = ingest(_spark(settings), settings, input_path=args.input, source=args.source,
                        fmt=args.format, column_map=parse_column_map(args.map),
                        run_id=args.run_id or default_run_id())
        print(report.summary())
        return 0

    p.set_defaults(func=run)


def _verb_load_benchmark(sub) -> None:
    p = sub.add_parser("load-benchmark", help="load a benchmark folder into products and labelled_pairs")
    p.add_argument("--benchmark", required=True, help="DeepMatcher folder or WDC Products folder")
    p.add_argument("--name", default=None, help="benchmark name (default: the folder's name)")
    _run_id(p)
    _common(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.load_benchmark import load_benchmark_tables

        report = load_benchmark_tables(None, settings, path=args.benchmark, name=args.name,
                                       run_id=args.run_id or default_run_id())
        print(report.summary())
        return 0

    p.set_defaults(func=run)


def _verb_sql(sub) -> None:
    p = sub.add_parser("sql", help="run Spark SQL over every table of the warehouse")
    p.add_argument("query", help='e.g. "SELECT source, count(*) FROM products GROUP BY source"')
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--limit", type=int, default=1000, help="rows to print at most (0: all)")
    _common(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.sql import run_sql

        run_sql(_spark(settings), settings, args.query, fmt=args.format, limit=args.limit, out=sys.stdout)
        return 0

    p.set_defaults(func=run)


def _verb_tables(sub) -> None:
    p = sub.add_parser("tables", help="list the warehouse's tables with their version and row count")
    p.add_argument("--json", action="store_true")
    _common(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.io.delta import describe_warehouse

        rows = describe_warehouse(settings.warehouse)
        if args.json:
            _print_json(rows)
        else:
            for r in rows:
                print(f"{r['table']:<22} version {r['version']:<4} {r['rows']:>10,} rows  {r['path']}")
        return 0

    p.set_defaults(func=run)


def _verb_schema(sub) -> None:
    p = sub.add_parser("schema", help="show the declared columns of the warehouse tables")
    p.add_argument("table", nargs="?", help="one table (default: all)")
    _common(p)

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


def _verb_train_encoder(sub) -> None:
    p = sub.add_parser("train-encoder", help="train the dual-encoder on labelled_pairs: contrastive, then roar")
    p.add_argument("--stage", required=True, choices=["contrastive", "roar"])
    p.add_argument("--benchmark", action="append", default=[], metavar="NAME",
                   help="train on this benchmark of labelled_pairs (repeatable; default: all)")
    p.add_argument("--init", default=None, help="starting model folder (default: encoder.backbone)")
    p.add_argument("--out", default=None, help="model folder to write (default: models/encoder/STAGE-TIME)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke runs)")
    _common(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.models.encoder.jobs import train_encoder

        result = train_encoder(settings, stage=args.stage, benchmarks=args.benchmark, init=args.init,
                               out=args.out, max_steps=args.max_steps)
        print(f"wrote {result.model_dir} ({result.model_version}); best epoch {result.best_epoch}")
        return 0

    p.set_defaults(func=run)


def _verb_embed(sub) -> None:
    p = sub.add_parser("embed", help="embed listings of one or more sources into embeddings (incremental)")
    p.add_argument("--source", action="append", required=True, metavar="NAME",
                   help="source to embed (repeatable, or comma-separated)")
    p.add_argument("--model", default=None, help="encoder folder (default: encoder.backbone)")
    _run_id(p)
    _common(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.embed import embed

        sources = [s.strip() for item in args.source for s in item.split(",") if s.strip()]
        report = embed(_spark(settings), settings, sources=sources, run_id=args.run_id or default_run_id(),
                       model=args.model)
        print(report.summary())
        return 0

    p.set_defaults(func=run)


def _verb_block(sub) -> None:
    p = sub.add_parser("block", help="write candidate pairs: k nearest right listings per left listing")
    p.add_argument("--left", required=True, help="query source (ours)")
    p.add_argument("--right", default=None, help="source searched (a competitor); omitted: de-duplicate --left")
    p.add_argument("--k", type=int, default=None, help="neighbours per listing (default: block.k)")
    _run_id(p)
    _common(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.block import block

        report = block(_spark(settings), settings, left=args.left, right=args.right, k=args.k,
                       run_id=args.run_id or default_run_id())
        print(report.summary())
        return 0

    p.set_defaults(func=run)


VERBS: list[Callable[[Any], None]] = [
    _verb_generate,
    _verb_ingest,
    _verb_load_benchmark,
    _verb_sql,
    _verb_tables,
    _verb_schema,
    _verb_train_encoder,
    _verb_embed,
    _verb_block,
]

# `evaluate` groups one sub-verb per thing measured (retrieval, blocking, matching, pipeline).
EVALUATIONS: list[Callable[[Any], None]] = []


def _evaluate_retrieval(evaluations) -> None:
    p = evaluations.add_parser("retrieval", help="recall@k, MRR, NDCG of the encoder on a benchmark folder")
    p.add_argument("--benchmark", required=True, help="DeepMatcher folder or WDC Products folder")
    p.add_argument("--model", default=None, help="encoder folder (default: encoder.backbone)")
    p.add_argument("--k", type=int, default=10, help="candidates per listing for the reduction ratio")
    p.add_argument("--split", default="test", help="train, valid, test or a stored split name")
    p.add_argument("--json", action="store_true")
    _common(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.models.encoder.jobs import evaluate_retrieval_job

        metrics = evaluate_retrieval_job(settings, benchmark=args.benchmark, model=args.model, k=args.k,
                                         split=args.split)
        if args.json:
            _print_json(metrics)
        else:
            print(f"{metrics['benchmark']} {metrics['split']}: {int(metrics['queries'])} queries, "
                  f"{int(metrics['corpus'])} candidates, model {metrics['model_version']}")
            for key in ("recall@1", f"recall@{args.k}", "recall@50", "mrr", f"reduction_ratio@{args.k}", "ndcg@10"):
                if key in metrics:
                    print(f"  {key:<20} {metrics[key]:.4f}")
        return 0

    p.set_defaults(func=run)


EVALUATIONS.append(_evaluate_retrieval)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="epm-spark", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"epm-spark {__version__}")
    parser.add_argument("--conf", default=None, help="settings file (default: conf/local.yaml)")
    parser.add_argument("--warehouse", default=None,
                        help="folder of the Delta tables (default: $EPM_WAREHOUSE or ./warehouse)")
    parser.add_argument("--set", dest="set_global", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set block.k=20 (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for register in VERBS:
        register(sub)
    if EVALUATIONS:
        evaluate = sub.add_parser("evaluate", help="measure quality on labelled benchmark data")
        evaluations = evaluate.add_subparsers(dest="evaluation", metavar="WHAT", required=True)
        for register in EVALUATIONS:
            register(evaluations)
    return parser


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("py4j", "urllib3", "filelock", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # PySpark logs every failed query as a JSON error with its JVM stack; the CLI reports it in one line.
    logging.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        settings = load_settings(args.conf, [*args.set_global, *getattr(args, "set_verb", [])],
                                 warehouse=args.warehouse)
        return int(args.func(args, settings) or 0)
    except EpmError as exc:
        print(f"epm-spark {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; no table was changed by the unfinished step", file=sys.stderr)
        return 130


def job_main(verb: list[str], argv: list[str] | None = None) -> int:
    """Entry point of the ``jobs/*.py`` scripts: ``spark-submit jobs/ingest.py [GLOBAL OPTIONS] ARGS``.

    Global options (``--conf``, ``--warehouse``, ``--set``, ``-v``) may come anywhere in the
    job's arguments; they are moved before the verb.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    front, rest, i = [], [], 0
    while i < len(args):
        if args[i] in ("--conf", "--warehouse", "--set") and i + 1 < len(args):
            front += args[i: i + 2]
            i += 2
        elif args[i] in ("-v", "--verbose"):
            front.append(args[i])
            i += 1
        else:
            rest.append(args[i])
            i += 1
    return main([*front, *verb, *rest])


if __name__ == "__main__":
    sys.exit(main())
