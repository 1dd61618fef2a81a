"""``epm-spark review import``: a person's verdicts applied to ``rationales`` in one commit.

The file is validated as a whole first (:func:`apply_verdicts` raises on any bad row);
then every benchmark partition it touches is replaced in a single Delta transaction, so
a failure at any point leaves ``rationales`` exactly as it was: all rows or none.
"""

from __future__ import annotations

from pathlib import Path

from epm_spark.config import Settings
from epm_spark.errors import InputError
from epm_spark.io import delta
from epm_spark.models.matcher.jobs import _rationales
from epm_spark.models.matcher.supervision.review import ReviewImport, apply_verdicts, read_review_file

__all__ = ["import_review"]


def import_review(settings: Settings, file: str | Path, *, run_id: str) -> ReviewImport:
    verdicts = read_review_file(file)
    if verdicts.empty:
        raise InputError(f"{file} holds no rows")
    rationales = _rationales(settings.warehouse, None)
    updated, report = apply_verdicts(rationales, verdicts, run_id=run_id)
    if report.benchmarks:
        touched = updated[updated["benchmark"].isin(report.benchmarks)]
        delta.write_pandas(settings.warehouse, "rationales", touched, mode="replace",
                           partition={"benchmark": report.benchmarks})
    return report
