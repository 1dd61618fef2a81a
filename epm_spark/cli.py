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
from epm_spark.errors import EpmError, InputError

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


def _observe(report: Any) -> None:
    from epm_spark.pipeline.runs import observe

    observe(report)


def _show(report: Any) -> None:
    """Print a job's report, and hand it to the job_runs row of this attempt."""
    _observe(report)
    print(report.summary())


def _print_result(result: dict[str, Any], as_json: bool) -> None:
    """A flat evaluation result: JSON, or one aligned ``key value`` line per figure."""
    if as_json:
        _print_json(result)
        return
    width = max(map(len, result), default=0) + 2
    for key, value in result.items():
        print(f"{key:<{width}} {value}")


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
        _show(report)
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

        report = ingest(_spark(settings), settings, input_path=args.input, source=args.source,
                        fmt=args.format, column_map=parse_column_map(args.map), currency=args.currency,
                        run_id=args.run_id or default_run_id())
        _show(report)
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
        _show(report)
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


def _verb_vacuum(sub) -> None:
    p = sub.add_parser("vacuum", help="remove files no recent table version uses (replaced rows, killed writes)")
    p.add_argument("--table", action="append", default=[], help="one table (repeatable; default: every table)")
    p.add_argument("--retain-hours", type=int, default=None,
                   help="keep files needed by versions of the last H hours (default and minimum: the table's, 168)")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    p.add_argument("--json", action="store_true")
    _common(p)

    def run(args, settings: Settings) -> int:
        from dataclasses import asdict

        from epm_spark.io.maintenance import vacuum_warehouse

        results = vacuum_warehouse(settings.warehouse, args.table, retain_hours=args.retain_hours,
                                   dry_run=args.dry_run)
        if args.json:
            _print_json([asdict(r) for r in results])
        else:
            for r in results:
                print(r.summary())
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


def _verb_nightly(sub) -> None:
    p = sub.add_parser("nightly", help="the whole night from a plan: ingest, embed, block, match, dedup, price-match")
    p.add_argument("--plan", required=True, help="plan file, e.g. conf/nightly.yaml")
    p.add_argument("--force", action="store_true",
                   help="redo every step, also those an earlier attempt of this run finished")
    _run_id(p)
    _common(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.nightly import load_plan, run_nightly

        plan = load_plan(args.plan)
        night = run_nightly(_spark(settings), settings, plan, run_id=args.run_id or default_run_id(),
                            force=args.force)
        print()
        print(night.summary())
        return 0

    p.set_defaults(func=run)


def _verb_runs(sub) -> None:
    p = sub.add_parser("runs", help="list job attempts from job_runs, newest first")
    p.add_argument("--last", type=int, default=20, help="attempts to show (0: all; default 20)")
    p.add_argument("--run-id", default=None, help="only this run")
    p.add_argument("--json", action="store_true")
    _common(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.runs import format_runs, read_runs

        if args.last < 0:
            raise InputError(f"--last must be >= 0, got {args.last}")
        frame = read_runs(settings.warehouse, last=args.last or None, run_id=args.run_id)
        if args.json:
            _print_json(frame.to_dict("records"))
        else:
            print(format_runs(frame))
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
        _show(report)
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
        _show(report)
        return 0

    p.set_defaults(func=run)


def _verb_match(sub) -> None:
    p = sub.add_parser("match", help="decide every candidate pair: floor, label mode, explain the uncertain")
    p.add_argument("--left", required=True, help="left source of the candidates")
    p.add_argument("--right", default=None, help="right source (omitted: the de-duplication run of --left)")
    p.add_argument("--model", default=None, help="matcher model folder (default: match.model)")
    p.add_argument("--explain", choices=["band", "all", "none"], default=None,
                   help="which pairs get a generated, explained decision (default: match.explain)")
    p.add_argument("--candidates-run-id", default=None, help="run of the candidates (default: --run-id)")
    _run_id(p)
    _common(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.match import match

        report = match(_spark(settings), settings, left=args.left, right=args.right,
                       run_id=args.run_id or default_run_id(), candidates_run_id=args.candidates_run_id,
                       model=args.model, explain=args.explain)
        _show(report)
        return 0

    p.set_defaults(func=run)


def _verb_dedup(sub) -> None:
    p = sub.add_parser("dedup", help="cluster one catalog's listings from its accepted matches (stable ids)")
    p.add_argument("--source", required=True, help="the catalog to de-duplicate")
    p.add_argument("--matches-run-id", default=None, help="run of the matches to use (default: --run-id)")
    _run_id(p)
    _common(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.dedup import dedup

        report = dedup(_spark(settings), settings, source=args.source, run_id=args.run_id or default_run_id(),
                       matches_run_id=args.matches_run_id)
        _show(report)
        return 0

    p.set_defaults(func=run)


def _verb_price_match(sub) -> None:
    p = sub.add_parser("price-match", help="compare our prices with matched competitor listings")
    p.add_argument("--ours", required=True, help="our catalog's source")
    p.add_argument("--competitors", required=True, help="competitor sources, comma-separated")
    p.add_argument("--matches-run-id", default=None, help="run of the matches to use (default: --run-id)")
    _run_id(p)
    _common(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.price_match import price_match

        competitors = [c.strip() for c in args.competitors.split(",") if c.strip()]
        report = price_match(_spark(settings), settings, ours=args.ours, competitors=competitors,
                             run_id=args.run_id or default_run_id(), matches_run_id=args.matches_run_id)
        _show(report)
        return 0

    p.set_defaults(func=run)


def _print_report(report: Any, as_json: bool) -> None:
    if as_json:
        _observe(report)
        _print_json(report.as_dict())
    else:
        _show(report)


def _verb_teach(sub) -> None:
    p = sub.add_parser("teach", help="write teacher decisions with rationales for labelled pairs into rationales")
    p.add_argument("--benchmark", default=None, help="benchmark name in labelled_pairs (default: all)")
    p.add_argument("--split", default="train", help="labelled_pairs split (default: train)")
    p.add_argument("--teacher", choices=["agentic", "endpoint"], default=None, help="default: teacher.kind")
    p.add_argument("--limit", type=int, default=None, help="first N pairs only")
    p.add_argument("--json", action="store_true")
    _run_id(p)
    _common(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.teach import teach

        report = teach(settings, benchmark=args.benchmark, split=args.split, kind=args.teacher, limit=args.limit,
                       run_id=args.run_id or default_run_id())
        _print_report(report, args.json)
        return 0

    p.set_defaults(func=run)


def _verb_review(sub) -> None:
    p = sub.add_parser("review", help="review decisions in the browser, or export the queue and import verdicts")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = actions.add_parser("export", help="write pending rationales to a CSV or JSONL file to review")
    export.add_argument("--out", required=True, help="FILE.csv or FILE.jsonl")
    export.add_argument("--benchmark", default=None)
    export.add_argument("--status", action="append", default=None,
                        help="review statuses to export (repeatable; default: pending)")
    imp = actions.add_parser("import", help="apply a reviewed file (verdict: accept, reject, correct)")
    imp.add_argument("--file", required=True)
    _run_id(imp)
    serve = actions.add_parser("serve", help="the review page in the browser: pairs queue, clusters, price gaps")
    serve.add_argument("--host", default=None,
                       help="address to listen on (default: review.host, 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=None, help="port (default: review.port, 8765)")
    for q in (export, imp, serve):
        _common(q)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.review import export_review, import_review

        if args.action == "serve":
            from epm_spark.pipeline.review_app import serve as serve_page

            serve_page(settings, host=args.host, port=args.port)
        elif args.action == "export":
            path, n = export_review(settings, args.out, benchmark=args.benchmark,
                                    statuses=tuple(args.status or ("pending",)))
            print(f"review export: {n} pairs to review in {path}; fill verdict (accept, reject, correct), "
                  "corrected_label and corrected_rationale, then `epm-spark review import --file`")
        else:
            print(import_review(settings, args.file, run_id=args.run_id or default_run_id()).summary())
        return 0

    p.set_defaults(func=run)


def _verb_train_judge(sub) -> None:
    p = sub.add_parser("train-judge", help="train the learned preference judge (cross-encoder reward model)")
    p.add_argument("--out", default=None, help="judge folder (default: models/preference-judge/RUN_ID)")
    p.add_argument("--benchmark", default=None, help="train on this benchmark's rationales (default: all)")
    p.add_argument("--split", default="train")
    p.add_argument("--from-benchmark", action="append", default=None, metavar="DIR",
                   help="instead of rationales: the agentic teacher's agreeing decisions on a benchmark folder")
    p.add_argument("--limit", type=int, default=None, help="first N pairs per source")
    p.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps")
    p.add_argument("--json", action="store_true")
    _run_id(p)
    _common(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.teach import train_judge

        out = args.out or f"models/preference-judge/{args.run_id or default_run_id()}"
        report = train_judge(settings, out=out, benchmark=args.benchmark, split=args.split,
                             from_benchmarks=args.from_benchmark, limit=args.limit, max_steps=args.max_steps)
        _print_report(report, args.json)
        return 0

    p.set_defaults(func=run)


def _evaluate_teacher(evaluations) -> None:
    p = evaluations.add_parser("teacher", help="a teacher's agreement with the gold labels of a benchmark folder")
    p.add_argument("--benchmark", required=True, help="DeepMatcher or WDC Products folder")
    p.add_argument("--split", default="train")
    p.add_argument("--teacher", choices=["agentic", "endpoint"], default=None, help="default: teacher.kind")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--json", action="store_true")
    _common(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.teach import evaluate_teacher

        result = evaluate_teacher(settings, args.benchmark, split=args.split, kind=args.teacher, limit=args.limit)
        if args.json:
            print(json.dumps(result, sort_keys=True))
        else:
            print(f"{result['benchmark']} {result['split']}: {result['teacher']} precision {result['precision']:.4f} "
                  f"recall {result['recall']:.4f} F1 {result['f1']:.4f}; {result['to_review']} of {result['pairs']} "
                  f"pairs to review; {result['seconds']} s ({result['pairs_per_s']} pairs/s)")
        return 0

    p.set_defaults(func=run)


def _verb_train_matcher(sub) -> None:
    p = sub.add_parser("train-matcher", help="train the matcher cascade (--stage all), or the student's SFT or RL alone")
    p.add_argument("--stage", choices=["all", "sft", "rl"], required=True,
                   help="all: teacher, cross-encoder, student SFT and RL, combiners, into one folder (resumable)")
    p.add_argument("--benchmark", action="append", default=None, metavar="NAME",
                   help="train on this benchmark of labelled_pairs (repeatable; default: all)")
    p.add_argument("--init", default=None,
                   help="start from this model folder (rl default: the newest sft-v<N> in matcher.models_dir)")
    p.add_argument("--out", default=None, help="model folder to write (default: matcher.models_dir/<stage>-v<N>)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps (a small budget)")
    p.add_argument("--max-examples", type=int, default=None,
                   help="sft: training pairs at most; rl: pairs scored to pick prompts from")
    p.add_argument("--json", action="store_true", help="print the model card as JSON")
    _common(p)

    def run(args, settings: Settings) -> int:
        from dataclasses import asdict

        from epm_spark.pipeline.train_matcher import train_matcher

        card, folder = train_matcher(settings, stage=args.stage, benchmarks=args.benchmark, init=args.init,
                                     out=args.out, max_steps=args.max_steps, max_examples=args.max_examples)
        if args.json:
            _print_json({"folder": str(folder), **asdict(card)})
        elif card.stage == "cascade":
            held_out = card.metrics["validation"]["fast_combiner_held_out"]
            print(f"train-matcher all: {folder} (cascade; held-out valid F1 {held_out['f1']:.4f}, "
                  f"thresholds {card.thresholds}, seconds {card.metrics['seconds']})")
        else:
            valid = card.metrics.get("valid_f1/pooled")
            print(f"train-matcher {args.stage}: {folder} ({card.training.get('steps')} steps, "
                  f"valid F1 {valid if valid is None else round(valid, 4)}, thresholds {card.thresholds})")
        return 0

    p.set_defaults(func=run)


def _evaluate_matching(sub) -> None:
    p = sub.add_parser("matching", help="precision, recall, F1, format-valid rate and speed of a matcher")
    p.add_argument("--benchmark", required=True, help="benchmark folder (DeepMatcher or WDC Products layout)")
    p.add_argument("--split", default="test", help="test, valid, test_000un, ... (default: test)")
    p.add_argument("--model", default=None, help="matcher model folder (default: matcher.student, zero-shot)")
    p.add_argument("--mode", choices=["label", "explain"], default="label",
                   help="label: one forward pass per pair; explain: generate the full decision")
    p.add_argument("--limit", type=int, default=None, help="evaluate a stratified sample of N pairs")
    p.add_argument("--threshold", default="model",
                   help="model (stored with the model), tune (on the valid split) or a number (default: model)")
    p.add_argument("--ablation", action="store_true",
                   help="cascade folders: also score each tier alone on the same pairs")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    _common(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.evaluate_matching import evaluate_matching

        report = evaluate_matching(settings, benchmark=args.benchmark, split=args.split, model=args.model,
                                   mode=args.mode, limit=args.limit, threshold=args.threshold,
                                   ablation=args.ablation)
        if args.json:
            _print_json(report)
        elif "cascade" in report:
            rows = {"cascade": report["cascade"], **report.get("tiers_alone", {})}
            print(f"{report['benchmark']} {report['split']} ({report['pairs']} pairs)")
            for tier, r in rows.items():
                print(f"  {tier:<14} P {r['precision']:.4f} R {r['recall']:.4f} F1 {r['f1']:.4f} "
                      f"{r['pairs_per_s']} pairs/s")
            print(f"  decided by: {report['cascade']['decided_by']}")
            if "explain" in report:
                e = report["explain"]
                print(f"  explain: format-valid {e['format_valid_rate']:.3f}, agrees with the cascade "
                      f"{e['agrees_with_cascade']:.3f}")
        else:
            print(f"{report['benchmark']} {report['split']} ({report['pairs']} pairs, {report['mode']} mode): "
                  f"P {report['precision']:.4f} R {report['recall']:.4f} F1 {report['f1']:.4f} "
                  f"format-valid {report['format_valid_rate']:.3f} {report['pairs_per_s']:.2f} pairs/s")
        return 0

    p.set_defaults(func=run)


def _verb_generate_search_log(sub) -> None:
    p = sub.add_parser("generate-search-log",
                       help="simulate a search log on real titles: queries, graded listings, sessions")
    p.add_argument("--benchmark", action="append", default=None, metavar="DIR",
                   help="benchmark folder whose listings are the catalog (repeatable; default: search_log.benchmarks)")
    p.add_argument("--from-source", default=None, metavar="NAME",
                   help="search an ingested products source instead of benchmark listings")
    p.add_argument("--queries", type=int, default=None, help="queries to make (default: search_log.queries.queries)")
    p.add_argument("--seed", type=int, default=None)
    _run_id(p)
    _common(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.search_log import generate_search_log

        report = generate_search_log(settings, run_id=args.run_id or default_run_id(), benchmarks=args.benchmark,
                                     from_source=args.from_source, queries=args.queries, seed=args.seed)
        _show(report)
        return 0

    p.set_defaults(func=run)


def _verb_ingest_events(sub) -> None:
    p = sub.add_parser("ingest-events", help="read a search log into search_events (bad rows into quarantine)")
    p.add_argument("--input", required=True, help="file or folder (CSV, Parquet, JSON lines, Delta)")
    p.add_argument("--source", default=None,
                   help="products source the listings belong to (default: search_log.source)")
    p.add_argument("--format", choices=["csv", "parquet", "json", "delta"], default=None,
                   help="input format (default: from the file extension)")
    _run_id(p)
    _common(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.ingest_events import ingest_events

        report = ingest_events(_spark(settings), settings, input_path=args.input, fmt=args.format,
                               source=args.source or settings.search_log.source,
                               run_id=args.run_id or default_run_id())
        _show(report)
        return 0

    p.set_defaults(func=run)


def _verb_train_ranker(sub) -> None:
    p = sub.add_parser("train-ranker", help="train the multi-task (click, cart, purchase) ranker on search_events")
    p.add_argument("--tasks", default=None,
                   help="comma-separated heads, e.g. purchase for a single-task baseline (default: ranker.tasks)")
    p.add_argument("--chain", action=argparse.BooleanOptionalAction, default=None,
                   help="conditional chain p_purchase = p_cart * s(z), p_cart = p_click * s(z) (default: ranker.chain)")
    p.add_argument("--source", default=None, help="products source of the listings (default: search_log.source)")
    p.add_argument("--events-run-id", default=None, help="train on this run's events only (default: all)")
    p.add_argument("--out", default=None, help="model folder (default: ranker.models_dir/<name>-v<N>)")
    p.add_argument("--max-queries", type=int, default=None,
                   help="training queries at most (default: ranker.max_train_queries)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps (smoke runs)")
    p.add_argument("--json", action="store_true", help="print the model card as JSON")
    _common(p)

    def run(args, settings: Settings) -> int:
        from dataclasses import asdict

        from epm_spark.pipeline.train_ranker import train_ranker

        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
        card, folder = train_ranker(settings, tasks=tasks, chain=args.chain, source=args.source, out=args.out,
                                    events_run_id=args.events_run_id, max_steps=args.max_steps,
                                    max_queries=args.max_queries)
        if args.json:
            _print_json({"folder": str(folder), **asdict(card)})
        else:
            t = card.training
            print(f"train-ranker: {folder} ({card.name}; {t['pairs']:,} pairs of {t['queries']} queries, "
                  f"{t['steps']} steps, {t['seconds']} s; loss {t['loss_history'][0]['loss']} -> "
                  f"{t['loss_history'][-1]['loss']})")
        return 0

    p.set_defaults(func=run)


def _verb_rank(sub) -> None:
    p = sub.add_parser("rank", help="score each query's k nearest listings with the ranker into search_scores")
    p.add_argument("--queries", required=True, metavar="TABLE",
                   help="warehouse table with a query column, e.g. search_queries")
    p.add_argument("--k", type=int, default=50, help="candidates per query from the dual-encoder index (default 50)")
    p.add_argument("--model", required=True, help="ranker folder (epm-spark train-ranker)")
    p.add_argument("--source", default=None, help="products source to search (default: search_log.source)")
    p.add_argument("--split", default=None, help="only queries of this split (tables with a split column)")
    p.add_argument("--encoder", default=None, help="dual-encoder of the embeddings (default: encoder.backbone)")
    _run_id(p)
    _common(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.rank import rank

        report = rank(_spark(settings), settings, queries_table=args.queries, k=args.k, model=args.model,
                      source=args.source or settings.search_log.source, split=args.split, encoder=args.encoder,
                      run_id=args.run_id or default_run_id())
        _show(report)
        return 0

    p.set_defaults(func=run)


def _verb_teach_rewrites(sub) -> None:
    p = sub.add_parser("teach-rewrites", help="rewrite a table's queries with the teacher into rewrite_examples")
    p.add_argument("--queries", default=None, metavar="TABLE",
                   help="warehouse table with a query column (default: rewriter.queries_table, search_queries)")
    p.add_argument("--split", default=None, help="only queries of this split (train, valid, test)")
    p.add_argument("--teacher", choices=["agentic", "endpoint"], default=None, help="default: rewriter.teacher")
    p.add_argument("--limit", type=int, default=None, help="the N most frequent queries only")
    p.add_argument("--json", action="store_true")
    _run_id(p)
    _common(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.train_rewriter import teach_rewrites

        report = teach_rewrites(settings, run_id=args.run_id or default_run_id(), queries_table=args.queries,
                                split=args.split, limit=args.limit, teacher=args.teacher)
        _print_report(report, args.json)
        return 0

    p.set_defaults(func=run)


def _verb_train_rewriter(sub) -> None:
    p = sub.add_parser("train-rewriter", help="train the query rewriter: distill the teacher (LoRA SFT), then RL (GRPO)")
    p.add_argument("--stage", choices=["distill", "rl", "all"], required=True,
                   help="distill: SFT on rewrite_examples; rl: GRPO from the newest distill model; all: both")
    p.add_argument("--init", default=None,
                   help="distill: a rewriter folder to continue; rl: the distilled folder (default: the newest)")
    p.add_argument("--out", default=None, help="model folder (default: rewriter.models_dir/<stage>-v<N>)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps (a small budget)")
    p.add_argument("--max-examples", type=int, default=None,
                   help="distill: teacher rewrites at most; rl: training queries to draw prompts from")
    p.add_argument("--examples-run-id", default=None, help="teach-rewrites run to distill (default: the newest)")
    p.add_argument("--encoder", default=None, help="dual-encoder of the retrieval judge (default: encoder.backbone)")
    p.add_argument("--json", action="store_true", help="print the model cards as JSON")
    _common(p)

    def run(args, settings: Settings) -> int:
        from dataclasses import asdict

        from epm_spark.pipeline.train_rewriter import train_rewriter

        done = train_rewriter(settings, stage=args.stage, init=args.init, out=args.out, max_steps=args.max_steps,
                              max_examples=args.max_examples, examples_run_id=args.examples_run_id,
                              encoder=args.encoder)
        for card, _ in done:
            _observe(card)
        if args.json:
            _print_json([{"folder": str(folder), **asdict(card)} for card, folder in done])
            return 0
        for card, folder in done:
            t, m = card.training, card.metrics
            trend = (f"loss {m['loss_history'][0]} -> {m['loss_history'][-1]}" if m.get("loss_history") else
                     f"reward {m.get('reward_first_10')} -> {m.get('reward_last_10')}")
            print(f"train-rewriter {card.stage}: {folder} ({card.model_version}; {t['steps']} steps, "
                  f"{m['train_seconds']} s; {trend})")
        return 0

    p.set_defaults(func=run)


def _verb_rewrite(sub) -> None:
    p = sub.add_parser("rewrite", help="rewrite a table's queries into the query_rewrites cache (never worse)")
    p.add_argument("--queries", required=True, metavar="TABLE",
                   help="warehouse table with a query column (and frequency), e.g. search_queries")
    p.add_argument("--model", default=None,
                   help="rewriter folder (default: the newest rl-v<N>, else distill-v<N>, in rewriter.models_dir)")
    p.add_argument("--source", default=None, help="products source searched (default: rewriter.source)")
    p.add_argument("--split", default=None, help="only queries of this split (tables with a split column)")
    p.add_argument("--limit", type=int, default=None, help="the N most frequent queries only (head and torso)")
    p.add_argument("--encoder", default=None, help="dual-encoder of the embeddings (default: encoder.backbone)")
    _run_id(p)
    _common(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.rewrite import rewrite
        from epm_spark.pipeline.train_rewriter import latest_rewriter

        model = args.model or latest_rewriter(settings.rewriter.models_dir, "rl") or \
            latest_rewriter(settings.rewriter.models_dir, "distill")
        if model is None:
            raise InputError(f"no rewriter under {settings.rewriter.models_dir}; train one (train-rewriter) or "
                             "give --model")
        report = rewrite(_spark(settings), settings, queries_table=args.queries, model=str(model),
                         run_id=args.run_id or default_run_id(), source=args.source, split=args.split,
                         encoder=args.encoder, limit=args.limit)
        _show(report)
        return 0

    p.set_defaults(func=run)


VERBS: list[Callable[[Any], None]] = [
    _verb_generate,
    _verb_ingest,
    _verb_load_benchmark,
    _verb_sql,
    _verb_tables,
    _verb_vacuum,
    _verb_schema,
    _verb_runs,
    _verb_train_encoder,
    _verb_embed,
    _verb_block,
    _verb_match,
    _verb_dedup,
    _verb_price_match,
    _verb_nightly,
    _verb_teach,
    _verb_review,
    _verb_train_judge,
    _verb_train_matcher,
    _verb_generate_search_log,
    _verb_ingest_events,
    _verb_train_ranker,
    _verb_rank,
    _verb_teach_rewrites,
    _verb_train_rewriter,
    _verb_rewrite,
]

# `evaluate` groups one sub-verb per thing measured (retrieval, blocking, matching, pipeline).
EVALUATIONS: list[Callable[[Any], None]] = []
EVALUATIONS.extend([_evaluate_teacher, _evaluate_matching])


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


def _evaluate_blocking(evaluations) -> None:
    p = evaluations.add_parser("blocking", help="pair completeness and reduction ratio of embed + block")
    p.add_argument("--benchmark", required=True, help="DeepMatcher folder or WDC Products folder")
    p.add_argument("--k", type=int, action="append", default=None, help="neighbours (repeatable; default 10)")
    p.add_argument("--split", default="test")
    p.add_argument("--model", default=None, help="encoder folder (default: encoder.backbone)")
    p.add_argument("--keep", default=None, metavar="DIR", help="keep the scratch warehouse in DIR")
    p.add_argument("--json", action="store_true")
    _common(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.evaluate_blocking import evaluate_blocking

        result = evaluate_blocking(_spark(settings), settings, benchmark=args.benchmark, ks=args.k or [10],
                                   split=args.split, model=args.model, keep=args.keep)
        _print_result(result, args.json)
        return 0

    p.set_defaults(func=run)


EVALUATIONS.append(_evaluate_blocking)


def _evaluate_pipeline(evaluations) -> None:
    p = evaluations.add_parser("pipeline", help="embed + block + match end to end: completeness, P/R/F1, stage times")
    p.add_argument("--benchmark", required=True, help="DeepMatcher folder or WDC Products folder")
    p.add_argument("--split", default="test")
    p.add_argument("--k", type=int, default=None, help="neighbours per listing (default: block.k)")
    p.add_argument("--encoder", default=None, help="encoder folder (default: encoder.backbone)")
    p.add_argument("--model", default=None, help="matcher model folder (default: match.model)")
    p.add_argument("--explain", choices=["band", "all", "none"], default="none",
                   help="explain mode for the matcher (default: none, label mode only)")
    p.add_argument("--queries", type=int, default=None,
                   help="a random sample of N left listings of the split (default: all of them)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --queries sample")
    p.add_argument("--keep", default=None, metavar="DIR", help="keep the scratch warehouse in DIR")
    p.add_argument("--json", action="store_true")
    _common(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.evaluate_pipeline import evaluate_pipeline

        result = evaluate_pipeline(_spark(settings), settings, benchmark=args.benchmark, split=args.split, k=args.k,
                                   encoder=args.encoder, matcher=args.model, explain=args.explain,
                                   queries=args.queries, seed=args.seed, keep=args.keep)
        _print_result(result, args.json)
        return 0

    p.set_defaults(func=run)


EVALUATIONS.append(_evaluate_pipeline)


def _evaluate_ranking(evaluations) -> None:
    p = evaluations.add_parser("ranking", help="NDCG@10 and MRR per signal on held-out queries: BM25, zero-shot, rankers")
    p.add_argument("--model", action="append", required=True, metavar="DIR",
                   help="ranker folder (repeatable); the first is compared with every other system")
    p.add_argument("--source", default=None, help="products source of the listings (default: search_log.source)")
    p.add_argument("--split", default="test", help="query split to evaluate (default: test)")
    p.add_argument("--events-run-id", default=None, help="this run's events only (default: all)")
    p.add_argument("--encoder", default=None, help="the zero-shot bi-encoder (default: encoder.backbone)")
    p.add_argument("--json", action="store_true")
    _common(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.evaluate_ranking import evaluate_ranking, format_ranking

        report = evaluate_ranking(settings, models=args.model, source=args.source or settings.search_log.source,
                                  split=args.split, events_run_id=args.events_run_id, encoder=args.encoder)
        if args.json:
            _print_json(report)
        else:
            print(format_ranking(report))
        return 0

    p.set_defaults(func=run)


EVALUATIONS.append(_evaluate_ranking)


def _evaluate_rewriting(evaluations) -> None:
    p = evaluations.add_parser("rewriting",
                               help="NDCG@10, recall@10, drift of original, teacher, distilled and RL rewrites")
    p.add_argument("--distill", default=None, metavar="DIR", help="distilled rewriter (default: the newest)")
    p.add_argument("--rl", default=None, metavar="DIR", help="RL rewriter (default: the newest)")
    p.add_argument("--split", default="test", help="query split to evaluate (default: test)")
    p.add_argument("--limit", type=int, default=None, help="a random sample of N held-out queries")
    p.add_argument("--encoder", default=None, help="dual-encoder of the retrieval judge (default: encoder.backbone)")
    p.add_argument("--json", action="store_true")
    _common(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.evaluate_rewriting import evaluate_rewriting, format_rewriting

        report = evaluate_rewriting(settings, distill=args.distill, rl=args.rl, split=args.split, limit=args.limit,
                                    encoder=args.encoder)
        if args.json:
            _print_json(report)
        else:
            print(format_rewriting(report))
        return 0

    p.set_defaults(func=run)


EVALUATIONS.append(_evaluate_rewriting)


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


# Verbs that change nothing (or only a scratch warehouse) leave no job_runs row; nightly
# records itself and its steps. The review page is a server, not a job: each verdict carries its
# reviewer and time in rationales itself.
_UNRECORDED = {"sql", "tables", "schema", "runs", "evaluate", "review export", "review serve", "nightly"}


def _job_name(args: argparse.Namespace) -> str | None:
    name = f"{args.verb} {args.action}" if getattr(args, "action", None) else args.verb
    return None if name in _UNRECORDED else name.replace(" ", "-")


def _run(args: argparse.Namespace, settings: Settings) -> int:
    job = _job_name(args)
    if job is None:
        return int(args.func(args, settings) or 0)
    from epm_spark.pipeline.runs import recorded

    # One run id for the job's tables and its job_runs row, even when none was given.
    run_id = getattr(args, "run_id", None) or default_run_id()
    if hasattr(args, "run_id"):
        args.run_id = run_id
    arguments = {k: v for k, v in vars(args).items() if k not in ("func", "verbose")}
    with recorded(settings, job, run_id=run_id, arguments=arguments):
        return int(args.func(args, settings) or 0)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        settings = load_settings(args.conf, [*args.set_global, *getattr(args, "set_verb", [])],
                                 warehouse=args.warehouse)
        return _run(args, settings)
    except EpmError as exc:
        print(f"epm-spark {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # A job may commit several tables (or partitions) one after another: those already
        # committed keep their new version; only the commit in progress is not applied.
        print(f"epm-spark {args.verb}: interrupted; tables committed before the interruption keep their new "
              "version, the commit in progress was not applied; re-run the same command to finish",
              file=sys.stderr)
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
