"""The parser, logging, and running a verb as a recorded job."""

from __future__ import annotations

import argparse
import logging
import sys

from epm_spark import __version__
from epm_spark.cli import catalog, evaluate, matcher, search, warehouse
from epm_spark.cli.common import default_run_id
from epm_spark.config import Settings, load_settings
from epm_spark.errors import EpmError, InputError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="epm-spark", description="every job of the suite for a person at a terminal",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"epm-spark {__version__}")
    parser.add_argument("--conf", default=None, help="settings file (default: conf/local.yaml)")
    parser.add_argument("--warehouse", default=None,
                        help="folder of the Delta tables (default: $EPM_WAREHOUSE or ./warehouse)")
    parser.add_argument("--set", dest="set_global", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set block.k=20 (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for family in (warehouse, catalog, matcher, search):
        for register in family.VERBS:
            register(sub)
    measure = sub.add_parser("evaluate", help="measure quality on labelled benchmark data")
    evaluations = measure.add_subparsers(dest="evaluation", metavar="WHAT", required=True)
    for register in evaluate.EVALUATIONS:
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


# Verbs that may start a warehouse, and verbs that never open one. Every other verb refuses a
# warehouse folder that is not there: a mistyped --warehouse would otherwise be created for the
# verb's job_runs row (or Spark's SQL catalog) before the verb found no table in it.
_STARTS_WAREHOUSE = {"generate", "ingest", "load-benchmark", "generate-search-log", "nightly"}
_NO_WAREHOUSE = {"schema", "evaluate teacher", "evaluate matching", "evaluate retrieval", "evaluate blocking",
                 "evaluate pipeline"}  # benchmark folders and scratch warehouses


def _job_name(args: argparse.Namespace) -> str | None:
    name = f"{args.verb} {args.action}" if getattr(args, "action", None) else args.verb
    return None if name in _UNRECORDED else name.replace(" ", "-")


def _check_warehouse(args: argparse.Namespace, settings: Settings) -> None:
    if args.verb in _STARTS_WAREHOUSE:
        return
    if f"{args.verb} {getattr(args, 'evaluation', '')}".strip() in _NO_WAREHOUSE:
        return
    if args.verb == "train-judge" and args.from_benchmark:
        return  # judged on benchmark folders: the warehouse only gets the job_runs row
    from epm_spark.io.delta import warehouse_exists

    if not warehouse_exists(settings.warehouse):
        raise InputError(
            f"warehouse {settings.warehouse} does not exist; check --warehouse (or $EPM_WAREHOUSE); "
            "generate, ingest, load-benchmark, generate-search-log and nightly start a new one"
        )


def _run(args: argparse.Namespace, settings: Settings) -> int:
    _check_warehouse(args, settings)
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
