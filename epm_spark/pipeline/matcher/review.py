"""``epm-spark review export`` / ``review import``: the review queue out, a person's verdicts in.

The imported file is validated as a whole first (:func:`apply_verdicts` raises on any bad row);
then every benchmark partition it touches is replaced in a single Delta transaction, so
a failure at any point leaves ``rationales`` exactly as it was: all rows or none.
"""

from __future__ import annotations

from pathlib import Path

from epm_spark.config import Settings
from epm_spark.errors import InputError
from epm_spark.io import delta
from epm_spark.models.matcher.supervision.review import (
    ReviewImport, apply_verdicts, read_review_file, review_queue, write_review_file,
)
from epm_spark.pipeline.matcher.teach import read_rationales

__all__ = ["export_review", "import_review"]


def export_review(settings: Settings, out: str | Path, *, benchmark: str | None = None,
                  statuses: tuple[str, ...] = ("pending",)) -> tuple[Path, int]:
    """Write the review queue to ``out`` (.csv or .jsonl); returns the path and the number of rows."""
    rationales = read_rationales(settings.warehouse, benchmark)
    if rationales.empty and benchmark:  # a mistyped benchmark, not an empty queue
        taught = delta.partition_values(settings.warehouse, "rationales", "benchmark")
        if benchmark not in taught:
            raise InputError(f"rationales holds no benchmark {benchmark!r} (benchmarks there: "
                             f"{', '.join(sorted(taught)) or 'none'}); teach it first: epm-spark teach --benchmark NAME")
    products = None
    if delta.table_exists(settings.warehouse, "products") and not rationales.empty:
        sources = sorted(set(rationales["left_source"]) | set(rationales["right_source"]))
        products = delta.read_pandas(settings.warehouse, "products", columns=["source", "product_id", "title"],
                                     filters=[("source", "in", sources)])
    queue = review_queue(rationales, products, statuses=statuses)
    return write_review_file(queue, out), len(queue)


def import_review(settings: Settings, file: str | Path, *, run_id: str) -> ReviewImport:
    """Validate a filled-in review file and apply it to ``rationales`` (all rows or none)."""
    verdicts = read_review_file(file)
    if verdicts.empty:
        raise InputError(f"{file} holds no rows")
    rationales = read_rationales(settings.warehouse, None)
    updated, report = apply_verdicts(rationales, verdicts, run_id=run_id)
    if report.benchmarks:
        touched = updated[updated["benchmark"].isin(report.benchmarks)]
        delta.write_pandas(settings.warehouse, "rationales", touched, mode="replace",
                           partition={"benchmark": report.benchmarks})
    return report
