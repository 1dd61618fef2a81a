"""Verbs of product search: engagement logs, the multi-task ranker, and the query rewriter."""

from __future__ import annotations

import argparse

from epm_spark.cli.common import (
    common_options, count, default_run_id, observe, print_json, print_report, run_id_option, show, spark_session,
)
from epm_spark.config import Settings
from epm_spark.errors import InputError


def add_generate_search_log(sub) -> None:
    p = sub.add_parser("generate-search-log",
                       help="simulate a search log on real titles: queries, graded listings, sessions")
    p.add_argument("--benchmark", action="append", default=None, metavar="DIR",
                   help="benchmark folder whose listings are the catalog (repeatable; default: search_log.benchmarks)")
    p.add_argument("--from-source", default=None, metavar="NAME",
                   help="search an ingested products source instead of benchmark listings")
    p.add_argument("--queries", type=count, default=None, help="queries to make (default: search_log.queries.queries)")
    p.add_argument("--seed", type=int, default=None)
    run_id_option(p)
    common_options(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.search.search_log import generate_search_log

        report = generate_search_log(settings, run_id=args.run_id or default_run_id(), benchmarks=args.benchmark,
                                     from_source=args.from_source, queries=args.queries, seed=args.seed)
        show(report)
        return 0

    p.set_defaults(func=run)


def add_ingest_events(sub) -> None:
    p = sub.add_parser("ingest-events", help="read a search log into search_events (bad rows into quarantine)")
    p.add_argument("--input", required=True, help="file or folder (CSV, Parquet, JSON lines, Delta)")
    p.add_argument("--source", default=None,
                   help="products source the listings belong to (default: search_log.source)")
    p.add_argument("--format", choices=["csv", "parquet", "json", "delta"], default=None,
                   help="input format (default: from the file extension)")
    run_id_option(p)
    common_options(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.search.ingest_events import ingest_events

        report = ingest_events(spark_session(settings), settings, input_path=args.input, fmt=args.format,
                               source=args.source or settings.search_log.source,
                               run_id=args.run_id or default_run_id())
        show(report)
        return 0

    p.set_defaults(func=run)


def add_train_ranker(sub) -> None:
    p = sub.add_parser("train-ranker", help="train the multi-task (click, cart, purchase) ranker on search_events")
    p.add_argument("--tasks", default=None,
                   help="comma-separated heads, e.g. purchase for a single-task baseline (default: ranker.tasks)")
    p.add_argument("--chain", action=argparse.BooleanOptionalAction, default=None,
                   help="conditional chain p_purchase = p_cart * s(z), p_cart = p_click * s(z) (default: ranker.chain)")
    p.add_argument("--source", default=None, help="products source of the listings (default: search_log.source)")
    p.add_argument("--events-run-id", default=None, help="train on this run's events only (default: all)")
    p.add_argument("--out", default=None, help="model folder (default: ranker.models_dir/<name>-v<N>)")
    p.add_argument("--max-queries", type=count, default=None,
                   help="training queries at most (default: ranker.max_train_queries)")
    p.add_argument("--max-steps", type=count, default=None, help="stop after N optimizer steps (smoke runs)")
    p.add_argument("--json", action="store_true", help="print the model card as JSON")
    common_options(p)

    def run(args, settings: Settings) -> int:
        from dataclasses import asdict

        from epm_spark.pipeline.search.train_ranker import train_ranker

        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
        card, folder = train_ranker(settings, tasks=tasks, chain=args.chain, source=args.source, out=args.out,
                                    events_run_id=args.events_run_id, max_steps=args.max_steps,
                                    max_queries=args.max_queries)
        if args.json:
            print_json({"folder": str(folder), **asdict(card)})
        else:
            t = card.training
            print(f"train-ranker: {folder} ({card.name}; {t['pairs']:,} pairs of {t['queries']} queries, "
                  f"{t['steps']} steps, {t['seconds']} s; loss {t['loss_history'][0]['loss']} -> "
                  f"{t['loss_history'][-1]['loss']})")
        return 0

    p.set_defaults(func=run)


def add_rank(sub) -> None:
    p = sub.add_parser("rank", help="score each query's k nearest listings with the ranker into search_scores")
    p.add_argument("--queries", required=True, metavar="TABLE",
                   help="warehouse table with a query column, e.g. search_queries")
    p.add_argument("--k", type=count, default=50, help="candidates per query from the dual-encoder index (default 50)")
    p.add_argument("--model", required=True, help="ranker folder (epm-spark train-ranker)")
    p.add_argument("--source", default=None, help="products source to search (default: search_log.source)")
    p.add_argument("--split", default=None, help="only queries of this split (tables with a split column)")
    p.add_argument("--encoder", default=None, help="dual-encoder of the embeddings (default: encoder.backbone)")
    run_id_option(p)
    common_options(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.search.rank import rank

        report = rank(spark_session(settings), settings, queries_table=args.queries, k=args.k, model=args.model,
                      source=args.source or settings.search_log.source, split=args.split, encoder=args.encoder,
                      run_id=args.run_id or default_run_id())
        show(report)
        return 0

    p.set_defaults(func=run)


def add_teach_rewrites(sub) -> None:
    p = sub.add_parser("teach-rewrites", help="rewrite a table's queries with the teacher into rewrite_examples")
    p.add_argument("--queries", default=None, metavar="TABLE",
                   help="warehouse table with a query column (default: rewriter.queries_table, search_queries)")
    p.add_argument("--split", default=None, help="only queries of this split (train, valid, test)")
    p.add_argument("--teacher", choices=["agentic", "endpoint"], default=None, help="default: rewriter.teacher")
    p.add_argument("--limit", type=count, default=None, help="the N most frequent queries only")
    p.add_argument("--json", action="store_true")
    run_id_option(p)
    common_options(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.search.train_rewriter import teach_rewrites

        report = teach_rewrites(settings, run_id=args.run_id or default_run_id(), queries_table=args.queries,
                                split=args.split, limit=args.limit, teacher=args.teacher)
        print_report(report, args.json)
        return 0

    p.set_defaults(func=run)


def add_train_rewriter(sub) -> None:
    p = sub.add_parser("train-rewriter", help="train the query rewriter: distill the teacher (LoRA SFT), then RL (GRPO)")
    p.add_argument("--stage", choices=["distill", "rl", "all"], required=True,
                   help="distill: SFT on rewrite_examples; rl: GRPO from the newest distill model; all: both")
    p.add_argument("--init", default=None,
                   help="distill: a rewriter folder to continue; rl: the distilled folder (default: the newest)")
    p.add_argument("--out", default=None, help="model folder (default: rewriter.models_dir/<stage>-v<N>)")
    p.add_argument("--max-steps", type=count, default=None, help="stop after N optimizer steps (a small budget)")
    p.add_argument("--max-examples", type=count, default=None,
                   help="distill: teacher rewrites at most; rl: training queries to draw prompts from")
    p.add_argument("--examples-run-id", default=None, help="teach-rewrites run to distill (default: the newest)")
    p.add_argument("--encoder", default=None, help="dual-encoder of the retrieval judge (default: encoder.backbone)")
    p.add_argument("--json", action="store_true", help="print the model cards as JSON")
    common_options(p)

    def run(args, settings: Settings) -> int:
        from dataclasses import asdict

        from epm_spark.pipeline.search.train_rewriter import train_rewriter

        done = train_rewriter(settings, stage=args.stage, init=args.init, out=args.out, max_steps=args.max_steps,
                              max_examples=args.max_examples, examples_run_id=args.examples_run_id,
                              encoder=args.encoder)
        for card, _ in done:
            observe(card)
        if args.json:
            print_json([{"folder": str(folder), **asdict(card)} for card, folder in done])
            return 0
        for card, folder in done:
            t, m = card.training, card.metrics
            trend = (f"loss {m['loss_history'][0]} -> {m['loss_history'][-1]}" if m.get("loss_history") else
                     f"reward {m.get('reward_first_10')} -> {m.get('reward_last_10')}")
            print(f"train-rewriter {card.stage}: {folder} ({card.model_version}; {t['steps']} steps, "
                  f"{m['train_seconds']} s; {trend})")
        return 0

    p.set_defaults(func=run)


def add_rewrite(sub) -> None:
    p = sub.add_parser("rewrite", help="rewrite a table's queries into the query_rewrites cache (never worse)")
    p.add_argument("--queries", required=True, metavar="TABLE",
                   help="warehouse table with a query column (and frequency), e.g. search_queries")
    p.add_argument("--model", default=None,
                   help="rewriter folder (default: the newest rl-v<N>, else distill-v<N>, in rewriter.models_dir)")
    p.add_argument("--source", default=None, help="products source searched (default: rewriter.source)")
    p.add_argument("--split", default=None, help="only queries of this split (tables with a split column)")
    p.add_argument("--limit", type=count, default=None, help="the N most frequent queries only (head and torso)")
    p.add_argument("--encoder", default=None, help="dual-encoder of the embeddings (default: encoder.backbone)")
    run_id_option(p)
    common_options(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.search.rewrite import rewrite
        from epm_spark.pipeline.search.train_rewriter import latest_rewriter

        model = args.model or latest_rewriter(settings.rewriter.models_dir, "rl") or \
            latest_rewriter(settings.rewriter.models_dir, "distill")
        if model is None:
            raise InputError(f"no rewriter under {settings.rewriter.models_dir}; train one (train-rewriter) or "
                             "give --model")
        report = rewrite(spark_session(settings), settings, queries_table=args.queries, model=str(model),
                         run_id=args.run_id or default_run_id(), source=args.source, split=args.split,
                         encoder=args.encoder, limit=args.limit)
        show(report)
        return 0

    p.set_defaults(func=run)


VERBS = [add_generate_search_log, add_ingest_events, add_train_ranker, add_rank, add_teach_rewrites, add_train_rewriter,
         add_rewrite]
