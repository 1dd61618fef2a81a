"""`epm-spark review import` applies a file to every benchmark it touches in one commit: all rows or none."""

from __future__ import annotations

import pandas as pd
import pytest
from matcher_pairs import hard_pair_frame

from epm_spark.cli import main
from epm_spark.io import delta
from epm_spark.models.matcher.supervision.review import RATIONALE_KEY, rationale_rows
from epm_spark.models.matcher.supervision.teacher import AgenticTeacher

NOW = pd.Timestamp("2026-11-23T10:00:00Z")


@pytest.fixture
def two_benchmarks(tmp_path):
    """Rationales of two benchmarks, and a review file rejecting one pair of each."""
    wh = str(tmp_path / "warehouse")
    frame = hard_pair_frame().head(2)
    both = pd.concat([frame.assign(benchmark="a"), frame.assign(benchmark="b")], ignore_index=True)
    rows = rationale_rows(both, AgenticTeacher().decide(both), run_id="t1", now=NOW)
    delta.write_pandas(wh, "rationales", rows, mode="overwrite")
    review = tmp_path / "review.csv"
    rows.groupby("benchmark").head(1)[RATIONALE_KEY].assign(verdict="reject").to_csv(review, index=False)
    return wh, review


def statuses(wh: str) -> dict[str, list[str]]:
    rows = delta.read_pandas(wh, "rationales").sort_values(["benchmark", "left_id"])
    return rows.groupby("benchmark").review_status.apply(list).to_dict()


def test_import_touching_two_benchmarks_is_one_commit(two_benchmarks, capsys):
    wh, review = two_benchmarks
    before = delta.table_version(wh, "rationales")
    assert main(["--warehouse", wh, "review", "import", "--file", str(review), "--run-id", "r1"]) == 0
    assert "2 rejected" in capsys.readouterr().out
    assert delta.table_version(wh, "rationales") == before + 1
    assert [s[0] for s in statuses(wh).values()] == ["rejected", "rejected"]


def test_import_failing_while_writing_leaves_every_benchmark_as_it_was(two_benchmarks, monkeypatch, capsys):
    wh, review = two_benchmarks
    before, unchanged = delta.table_version(wh, "rationales"), statuses(wh)
    real_add = delta._FileWriter.add

    def full_disk_at_b(self, batch):
        if "benchmark" in batch.column_names and "b" in batch.column("benchmark").to_pylist():
            raise OSError(28, "No space left on device")
        return real_add(self, batch)

    monkeypatch.setattr(delta._FileWriter, "add", full_disk_at_b)
    with pytest.raises(OSError, match="No space left"):
        main(["--warehouse", wh, "review", "import", "--file", str(review), "--run-id", "r1"])
    assert delta.table_version(wh, "rationales") == before
    assert statuses(wh) == unchanged
