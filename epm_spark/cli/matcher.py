"""Verbs that supervise and train the matcher: teacher rationales, human review, the judge, the cascade."""

from __future__ import annotations

from epm_spark.cli.common import common_options, count, default_run_id, print_json, print_report, run_id_option
from epm_spark.config import Settings


def add_teach(sub) -> None:
    p = sub.add_parser("teach", help="write teacher decisions with rationales for labelled pairs into rationales")
    p.add_argument("--benchmark", default=None, help="benchmark name in labelled_pairs (default: all)")
    p.add_argument("--split", default="train", help="labelled_pairs split (default: train)")
    p.add_argument("--teacher", choices=["agentic", "endpoint"], default=None, help="default: teacher.kind")
    p.add_argument("--limit", type=count, default=None, help="first N pairs only")
    p.add_argument("--json", action="store_true")
    run_id_option(p)
    common_options(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.matcher.teach import teach

        report = teach(settings, benchmark=args.benchmark, split=args.split, kind=args.teacher, limit=args.limit,
                       run_id=args.run_id or default_run_id())
        print_report(report, args.json)
        return 0

    p.set_defaults(func=run)


def add_review(sub) -> None:
    p = sub.add_parser("review", help="review decisions in the browser, or export the queue and import verdicts")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = actions.add_parser("export", help="write pending rationales to a CSV or JSONL file to review")
    export.add_argument("--out", required=True, help="FILE.csv or FILE.jsonl")
    export.add_argument("--benchmark", default=None)
    export.add_argument("--status", action="append", default=None,
                        help="review statuses to export (repeatable; default: pending)")
    imp = actions.add_parser("import", help="apply a reviewed file (verdict: accept, reject, correct)")
    imp.add_argument("--file", required=True)
    run_id_option(imp)
    serve = actions.add_parser("serve", help="the review page in the browser: pairs queue, clusters, price gaps")
    serve.add_argument("--host", default=None,
                       help="address to listen on (default: review.host, 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=None, help="port (default: review.port, 8765)")
    for q in (export, imp, serve):
        common_options(q)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.matcher.review import export_review, import_review

        if args.action == "serve":
            from epm_spark.pipeline.matcher.review_app import serve as serve_page

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


def add_train_judge(sub) -> None:
    p = sub.add_parser("train-judge", help="train the learned preference judge (cross-encoder reward model)")
    p.add_argument("--out", default=None, help="judge folder (default: models/preference-judge/RUN_ID)")
    p.add_argument("--benchmark", default=None, help="train on this benchmark's rationales (default: all)")
    p.add_argument("--split", default="train")
    p.add_argument("--from-benchmark", action="append", default=None, metavar="DIR",
                   help="instead of rationales: the agentic teacher's agreeing decisions on a benchmark folder")
    p.add_argument("--limit", type=count, default=None, help="first N pairs per source")
    p.add_argument("--max-steps", type=count, default=None, help="stop after N optimizer steps")
    p.add_argument("--json", action="store_true")
    run_id_option(p)
    common_options(p)

    def run(args, settings: Settings) -> int:
        from epm_spark.pipeline.matcher.teach import train_judge

        out = args.out or f"models/preference-judge/{args.run_id or default_run_id()}"
        report = train_judge(settings, out=out, benchmark=args.benchmark, split=args.split,
                             from_benchmarks=args.from_benchmark, limit=args.limit, max_steps=args.max_steps)
        print_report(report, args.json)
        return 0

    p.set_defaults(func=run)


def add_train_matcher(sub) -> None:
    p = sub.add_parser("train-matcher", help="train the matcher cascade (--stage all), or the student's SFT or RL alone")
    p.add_argument("--stage", choices=["all", "sft", "rl"], required=True,
                   help="all: teacher, cross-encoder, student SFT and RL, combiners, into one folder (resumable)")
    p.add_argument("--benchmark", action="append", default=None, metavar="NAME",
                   help="train on this benchmark of labelled_pairs (repeatable; default: all)")
    p.add_argument("--init", default=None,
                   help="start from this model folder (rl default: the newest sft-v<N> in matcher.models_dir)")
    p.add_argument("--out", default=None, help="model folder to write (default: matcher.models_dir/<stage>-v<N>)")
    p.add_argument("--max-steps", type=count, default=None, help="stop after N optimizer steps (a small budget)")
    p.add_argument("--max-examples", type=count, default=None,
                   help="sft: training pairs at most; rl: pairs scored to pick prompts from")
    p.add_argument("--json", action="store_true", help="print the model card as JSON")
    common_options(p)

    def run(args, settings: Settings) -> int:
        from dataclasses import asdict

        from epm_spark.pipeline.matcher.train_matcher import train_matcher

        card, folder = train_matcher(settings, stage=args.stage, benchmarks=args.benchmark, init=args.init,
                                     out=args.out, max_steps=args.max_steps, max_examples=args.max_examples)
        if args.json:
            print_json({"folder": str(folder), **asdict(card)})
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


VERBS = [add_teach, add_review, add_train_judge, add_train_matcher]
