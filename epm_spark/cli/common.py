"""What every verb shares: the run id and ``--set`` options, the Spark session, printing a report."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from epm_spark.config import Settings


def default_run_id() -> str:
    """Nightly runs default to the UTC date, so re-running the same night replaces, not duplicates."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")


def count(value: str) -> int:
    """An argparse type for sizes (``--k``, ``--limit``, ``--max-steps``...): a whole number >= 1.

    Zero or a negative number would otherwise fall back to the default (``k or block.k``) or
    slice from the end (``head(-5)``) without a word.
    """
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {number}")
    return number


def common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="set_verb", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set block.k=20 (repeatable)")


def run_id_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-id", default=None,
                        help="identifies this run in every table it writes (default: today's UTC date)")


def spark_session(settings: Settings):
    from epm_spark.spark import get_spark

    return get_spark(settings)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def observe(report: Any) -> None:
    """Hand a report to the job_runs row of this attempt."""
    from epm_spark.pipeline import runs

    runs.observe(report)


def show(report: Any) -> None:
    """Print a job's report, and hand it to the job_runs row of this attempt."""
    observe(report)
    print(report.summary())


def print_result(result: dict[str, Any], as_json: bool) -> None:
    """A flat evaluation result: JSON, or one aligned ``key value`` line per figure."""
    if as_json:
        print_json(result)
        return
    width = max(map(len, result), default=0) + 2
    for key, value in result.items():
        print(f"{key:<{width}} {value}")


def print_report(report: Any, as_json: bool) -> None:
    if as_json:
        observe(report)
        print_json(report.as_dict())
    else:
        show(report)
