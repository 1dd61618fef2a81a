"""``epm-spark evaluate WHAT``: one sub-verb per thing measured, each on labelled benchmark data."""

from __future__ import annotations

import json

from epm_spark.cli.common import common_options, count, print_json, print_result, spark_session
from epm_spark.config import Settings


def add_teacher(evaluations) -> None:
    p = evaluations.add_parser("teacher", help="a teacher's agreement with the gold labels of a benchmark folder")
    p.add_argument("--benchmark", required=True, help="DeepMatcher or WDC Products folder")
    p.add_argument("--split", default="train")
    p.add_argument("--teacher", choices=["agentic", "endpoint"], default=None, help="default: teacher.kind")
    p.add_argument("--limit", type=count, default=None)
    p.add_argument("--json", action="store_true")
    common_options(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.matcher.teach import evaluate_teacher

        result = evaluate_teacher(settings, args.benchmark, split=args.split, kind=args.teacher, limit=args.limit)
        if args.json:
            print(json.dumps(result, sort_keys=True))
        else:
            print(f"{result['benchmark']} {result['split']}: {result['teacher']} precision {result['precision']:.4f} "
                  f"recall {result['recall']:.4f} F1 {result['f1']:.4f}; {result['to_review']} of {result['pairs']} "
                  f"pairs to review; {result['seconds']} s ({result['pairs_per_s']} pairs/s)")
        return 0

    p.set_defaults(func=run)


def add_matching(sub) -> None:
    p = sub.add_parser("matching", help="precision, recall, F1, format-valid rate and speed of a matcher")
    p.add_argument("--benchmark", required=True, help="benchmark folder (DeepMatcher or WDC Products layout)")
    p.add_argument("--split", default="test", help="test, valid, test_000un, ... (default: test)")
    p.add_argument("--model", default=None, help="matcher model folder (default: matcher.student, zero-shot)")
    p.add_argument("--mode", choices=["label", "explain"], default="label",
                   help="label: one forward pass per pair; explain: generate the full decision")
    p.add_argument("--limit", type=count, default=None, help="evaluate a stratified sample of N pairs")
    p.add_argument("--threshold", default="model",
                   help="model (stored with the model), tune (on the valid split) or a number (default: model)")
    p.add_argument("--ablation", action="store_true",
                   help="cascade folders: also score each tier alone on the same pairs")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    common_options(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.evaluate.matching import evaluate_matching

        report = evaluate_matching(settings, benchmark=args.benchmark, split=args.split, model=args.model,
                                   mode=args.mode, limit=args.limit, threshold=args.threshold,
                                   ablation=args.ablation)
        if args.json:
            print_json(report)
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


def add_retrieval(evaluations) -> None:
    p = evaluations.add_parser("retrieval", help="recall@k, MRR, NDCG of the encoder on a benchmark folder")
    p.add_argument("--benchmark", required=True, help="DeepMatcher folder or WDC Products folder")
    p.add_argument("--model", default=None, help="encoder folder (default: encoder.backbone)")
    p.add_argument("--k", type=count, default=10, help="candidates per listing for the reduction ratio")
    p.add_argument("--split", default="test", help="train, valid, test or a stored split name")
    p.add_argument("--json", action="store_true")
    common_options(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.evaluate.retrieval import evaluate_retrieval_job

        metrics = evaluate_retrieval_job(settings, benchmark=args.benchmark, model=args.model, k=args.k,
                                         split=args.split)
        if args.json:
            print_json(metrics)
        else:
            print(f"{metrics['benchmark']} {metrics['split']}: {int(metrics['queries'])} queries, "
                  f"{int(metrics['corpus'])} candidates, model {metrics['model_version']}")
            for key in ("recall@1", f"recall@{args.k}", "recall@50", "mrr", f"reduction_ratio@{args.k}", "ndcg@10"):
                if key in metrics:
                    print(f"  {key:<20} {metrics[key]:.4f}")
        return 0

    p.set_defaults(func=run)


def add_blocking(evaluations) -> None:
    p = evaluations.add_parser("blocking", help="pair completeness and reduction ratio of embed + block")
    p.add_argument("--benchmark", required=True, help="DeepMatcher folder or WDC Products folder")
    p.add_argument("--k", type=count, action="append", default=None, help="neighbours (repeatable; default 10)")
    p.add_argument("--split", default="test")
    p.add_argument("--model", default=None, help="encoder folder (default: encoder.backbone)")
    p.add_argument("--keep", default=None, metavar="DIR", help="keep the scratch warehouse in DIR")
    p.add_argument("--json", action="store_true")
    common_options(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.evaluate.blocking import evaluate_blocking

        result = evaluate_blocking(spark_session(settings), settings, benchmark=args.benchmark, ks=args.k or [10],
                                   split=args.split, model=args.model, keep=args.keep)
        print_result(result, args.json)
        return 0

    p.set_defaults(func=run)


def add_pipeline(evaluations) -> None:
    p = evaluations.add_parser("pipeline", help="embed + block + match end to end: completeness, P/R/F1, stage times")
    p.add_argument("--benchmark", required=True, help="DeepMatcher folder or WDC Products folder")
    p.add_argument("--split", default="test")
    p.add_argument("--k", type=count, default=None, help="neighbours per listing (default: block.k)")
    p.add_argument("--encoder", default=None, help="encoder folder (default: encoder.backbone)")
    p.add_argument("--model", default=None, help="matcher model folder (default: match.model)")
    p.add_argument("--explain", choices=["band", "all", "none"], default="none",
                   help="explain mode for the matcher (default: none, label mode only)")
    p.add_argument("--queries", type=count, default=None,
                   help="a random sample of N left listings of the split (default: all of them)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --queries sample")
    p.add_argument("--keep", default=None, metavar="DIR", help="keep the scratch warehouse in DIR")
    p.add_argument("--json", action="store_true")
    common_options(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.evaluate.end_to_end import evaluate_pipeline

        result = evaluate_pipeline(spark_session(settings), settings, benchmark=args.benchmark, split=args.split,
                                   k=args.k, encoder=args.encoder, matcher=args.model, explain=args.explain,
                                   queries=args.queries, seed=args.seed, keep=args.keep)
        print_result(result, args.json)
        return 0

    p.set_defaults(func=run)


def add_ranking(evaluations) -> None:
    p = evaluations.add_parser("ranking", help="NDCG@10 and MRR per signal on held-out queries: BM25, zero-shot, rankers")
    p.add_argument("--model", action="append", required=True, metavar="DIR",
                   help="ranker folder (repeatable); the first is compared with every other system")
    p.add_argument("--source", default=None, help="products source of the listings (default: search_log.source)")
    p.add_argument("--split", default="test", help="query split to evaluate (default: test)")
    p.add_argument("--events-run-id", default=None, help="this run's events only (default: all)")
    p.add_argument("--encoder", default=None, help="the zero-shot bi-encoder (default: encoder.backbone)")
    p.add_argument("--json", action="store_true")
    common_options(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.evaluate.ranking import evaluate_ranking, format_ranking

        report = evaluate_ranking(settings, models=args.model, source=args.source or settings.search_log.source,
                                  split=args.split, events_run_id=args.events_run_id, encoder=args.encoder)
        if args.json:
            print_json(report)
        else:
            print(format_ranking(report))
        return 0

    p.set_defaults(func=run)


def add_rewriting(evaluations) -> None:
    p = evaluations.add_parser("rewriting",
                               help="NDCG@10, recall@10, drift of original, teacher, distilled and RL rewrites")
    p.add_argument("--distill", default=None, metavar="DIR", help="distilled rewriter (default: the newest)")
    p.add_argument("--rl", default=None, metavar="DIR", help="RL rewriter (default: the newest)")
    p.add_argument("--split", default="test", help="query split to evaluate (default: test)")
    p.add_argument("--limit", type=count, default=None, help="a random sample of N held-out queries")
    p.add_argument("--encoder", default=None, help="dual-encoder of the retrieval judge (default: encoder.backbone)")
    p.add_argument("--json", action="store_true")
    common_options(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.evaluate.rewriting import evaluate_rewriting, format_rewriting

        report = evaluate_rewriting(settings, distill=args.distill, rl=args.rl, split=args.split, limit=args.limit,
                                    encoder=args.encoder)
        if args.json:
            print_json(report)
        else:
            print(format_rewriting(report))
        return 0

    p.set_defaults(func=run)


EVALUATIONS = [add_teacher, add_matching, add_retrieval, add_blocking, add_pipeline, add_ranking, add_rewriting]
