"""Verbs of the nightly catalog jobs: the dual-encoder, blocking, matching, clusters and prices, and the
night that runs them."""

from __future__ import annotations

from epm_spark.cli.common import common_options, count, default_run_id, run_id_option, show, spark_session
from epm_spark.config import Settings


def add_train_encoder(sub) -> None:
    p = sub.add_parser("train-encoder", help="train the dual-encoder on labelled_pairs: contrastive, then roar")
    p.add_argument("--stage", required=True, choices=["contrastive", "roar"])
    p.add_argument("--benchmark", action="append", default=[], metavar="NAME",
                   help="train on this benchmark of labelled_pairs (repeatable; default: all)")
    p.add_argument("--init", default=None, help="starting model folder (default: encoder.backbone)")
    p.add_argument("--out", default=None, help="model folder to write (default: models/encoder/STAGE-TIME)")
    p.add_argument("--max-steps", type=count, default=None, help="stop after this many steps (smoke runs)")
    common_options(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.encoder.train_encoder import train_encoder

        result = train_encoder(settings, stage=args.stage, benchmarks=args.benchmark, init=args.init,
                               out=args.out, max_steps=args.max_steps)
        print(f"wrote {result.model_dir} ({result.model_version}); best epoch {result.best_epoch}")
        return 0

    p.set_defaults(func=run)


def add_embed(sub) -> None:
    p = sub.add_parser("embed", help="embed listings of one or more sources into embeddings (incremental)")
    p.add_argument("--source", action="append", required=True, metavar="NAME",
                   help="source to embed (repeatable, or comma-separated)")
    p.add_argument("--model", default=None, help="encoder folder (default: encoder.backbone)")
    run_id_option(p)
    common_options(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.catalog.embed import check_embed, embed

        sources = [s.strip() for item in args.source for s in item.split(",") if s.strip()]
        check_embed(settings, sources, args.model)  # before Spark starts
        report = embed(spark_session(settings), settings, sources=sources, run_id=args.run_id or default_run_id(),
                       model=args.model)
        show(report)
        return 0

    p.set_defaults(func=run)


def add_block(sub) -> None:
    p = sub.add_parser("block", help="write candidate pairs: k nearest right listings per left listing")
    p.add_argument("--left", required=True, help="query source (ours)")
    p.add_argument("--right", default=None, help="source searched (a competitor); omitted: de-duplicate --left")
    p.add_argument("--k", type=count, default=None, help="neighbours per listing (default: block.k)")
    run_id_option(p)
    common_options(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.catalog.block import block, check_block

        check_block(settings, sorted({args.left, args.right or args.left}))  # before Spark starts
        report = block(spark_session(settings), settings, left=args.left, right=args.right, k=args.k,
                       run_id=args.run_id or default_run_id())
        show(report)
        return 0

    p.set_defaults(func=run)


def add_match(sub) -> None:
    p = sub.add_parser("match", help="decide every candidate pair: floor, label mode, explain the uncertain")
    p.add_argument("--left", required=True, help="left source of the candidates")
    p.add_argument("--right", default=None, help="right source (omitted: the de-duplication run of --left)")
    p.add_argument("--model", default=None, help="matcher model folder (default: match.model)")
    p.add_argument("--explain", choices=["band", "all", "none"], default=None,
                   help="which pairs get a generated, explained decision (default: match.explain)")
    p.add_argument("--candidates-run-id", default=None, help="run of the candidates (default: --run-id)")
    run_id_option(p)
    common_options(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.catalog.match import match

        report = match(spark_session(settings), settings, left=args.left, right=args.right,
                       run_id=args.run_id or default_run_id(), candidates_run_id=args.candidates_run_id,
                       model=args.model, explain=args.explain)
        show(report)
        return 0

    p.set_defaults(func=run)


def add_dedup(sub) -> None:
    p = sub.add_parser("dedup", help="cluster one catalog's listings from its accepted matches (stable ids)")
    p.add_argument("--source", required=True, help="the catalog to de-duplicate")
    p.add_argument("--matches-run-id", default=None, help="run of the matches to use (default: --run-id)")
    run_id_option(p)
    common_options(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.catalog.dedup import dedup

        report = dedup(spark_session(settings), settings, source=args.source, run_id=args.run_id or default_run_id(),
                       matches_run_id=args.matches_run_id)
        show(report)
        return 0

    p.set_defaults(func=run)


def add_price_match(sub) -> None:
    p = sub.add_parser("price-match", help="compare our prices with matched competitor listings")
    p.add_argument("--ours", required=True, help="our catalog's source")
    p.add_argument("--competitors", required=True, help="competitor sources, comma-separated")
    p.add_argument("--matches-run-id", default=None, help="run of the matches to use (default: --run-id)")
    run_id_option(p)
    common_options(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.catalog.price_match import price_match

        competitors = [c.strip() for c in args.competitors.split(",") if c.strip()]
        report = price_match(spark_session(settings), settings, ours=args.ours, competitors=competitors,
                             run_id=args.run_id or default_run_id(), matches_run_id=args.matches_run_id)
        show(report)
        return 0

    p.set_defaults(func=run)


def add_nightly(sub) -> None:
    p = sub.add_parser("nightly", help="the whole night from a plan: ingest, embed, block, match, dedup, price-match")
    p.add_argument("--plan", required=True, help="plan file, e.g. conf/nightly.yaml")
    p.add_argument("--force", action="store_true",
                   help="redo every step, also those an earlier attempt of this run finished")
    run_id_option(p)
    common_options(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.catalog.nightly import check_plan, load_plan, run_nightly

        plan = load_plan(args.plan)
        check_plan(settings, plan)  # before Spark starts
        night = run_nightly(spark_session(settings), settings, plan, run_id=args.run_id or default_run_id(),
                            force=args.force)
        print()
        print(night.summary())
        return 0

    p.set_defaults(func=run)


VERBS = [add_train_encoder, add_embed, add_block, add_match, add_dedup, add_price_match, add_nightly]
