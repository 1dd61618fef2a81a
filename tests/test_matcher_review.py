"""Rationale rows, the review queue round trip (CSV and JSONL) with bad rows, and the SFT training set."""

from __future__ import annotations

import csv
import json

import pandas as pd
import pytest
from matcher_pairs import hard_pair_frame, write_hard_warehouse

from epm_spark.cli import main
from epm_spark.errors import InputError
from epm_spark.io.schemas import RATIONALES
from epm_spark.models.matcher.decision import parse_decision
from epm_spark.models.matcher.supervision.review import (
    QUEUE_COLUMNS, apply_verdicts, merge_rationales, rationale_rows, read_review_file, review_queue,
    sft_training_set, write_review_file,
)
from epm_spark.models.matcher.supervision.teacher import AgenticTeacher, TeacherResult

NOW = pd.Timestamp("2026-11-23T10:00:00Z")


@pytest.fixture
def frame():
    return hard_pair_frame()


@pytest.fixture
def rows(frame):
    results = AgenticTeacher().decide(frame)
    # One disagreement and one failure besides the agentic decisions.
    flipped = results[1].decision.__class__(**{**results[1].decision.__dict__, "label": "match"})
    results[1] = TeacherResult("agentic", flipped, flipped.to_json())
    results[2] = TeacherResult("agentic", None, "oops", failure="format: text before the JSON object")
    return rationale_rows(frame, results, run_id="r1", now=NOW)


def products(frame) -> pd.DataFrame:
    out = []
    for side in ("left", "right"):
        out.append(pd.DataFrame({"source": frame[f"{side}_source"], "product_id": frame[f"{side}_id"],
                                 "title": frame[f"{side}_title"]}))
    return pd.concat(out, ignore_index=True)


def test_rationale_rows_fit_the_table_and_route_disagreements_to_review(rows):
    assert list(rows.columns) == RATIONALES.columns
    assert rows.loc[0, "review_status"] == "auto_agreed" and bool(rows.loc[0, "agrees_with_gold"])
    assert rows.loc[1, "review_status"] == "pending" and not rows.loc[1, "agrees_with_gold"]
    failed = rows.loc[2]
    assert failed["review_status"] == "pending" and pd.isna(failed["agrees_with_gold"])
    assert failed["teacher_decision"] is None and failed["failure_reason"].startswith("format:")
    # The table accepts the rows as typed.
    import pyarrow as pa
    pa.Table.from_pandas(rows, schema=RATIONALES.schema, preserve_index=False)


def test_rows_without_gold_are_pending(frame):
    frame = frame.assign(label=None)
    rows = rationale_rows(frame, AgenticTeacher().decide(frame), run_id="r", now=NOW)
    assert set(rows["review_status"]) == {"pending"} and rows["label"].isna().all()


def fill(queue: pd.DataFrame, verdicts: dict[int, dict]) -> pd.DataFrame:
    queue = queue.copy()
    for i, values in verdicts.items():
        for k, v in values.items():
            queue.loc[i, k] = v
    return queue


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_review_round_trip(rows, frame, tmp_path, suffix):
    queue = review_queue(rows, products(frame))
    assert list(queue.columns) == QUEUE_COLUMNS
    assert len(queue) == 2  # the disagreement and the failure
    disagreement = queue.index[queue["left_id"] == "l1"][0]
    failure = queue.index[queue["left_id"] == "l2"][0]
    assert queue.loc[disagreement, "left_title"] == frame.loc[1, "left_title"]
    assert queue.loc[disagreement, "gold_label"] == "no_match" and queue.loc[disagreement, "teacher_label"] == "match"
    assert queue.loc[failure, "teacher_rationale"] is None
    path = write_review_file(fill(queue, {
        disagreement: {"verdict": "Correct", "corrected_label": "no_match",
                       "corrected_rationale": "Different capacity (1 TB vs 2 TB).", "reviewer_note": "gold is right"},
        failure: {"verdict": "correct", "corrected_label": "1", "corrected_rationale": "Same WD10EZEX drive."},
    }), tmp_path / f"queue{suffix}")
    verdicts = read_review_file(path)
    updated, report = apply_verdicts(rows, verdicts, run_id="review-1", now=NOW)
    assert (report.corrected, report.accepted, report.rejected, report.skipped) == (2, 0, 0, 0)
    fixed = updated.set_index("left_id").loc["l1"]
    assert fixed["review_status"] == "corrected" and fixed["reviewer_note"] == "gold is right"
    decision = parse_decision(fixed["verified_decision"])
    assert decision.label == "no_match" and decision.rationale == "Different capacity (1 TB vs 2 TB)."
    assert decision.evidence == {}  # the teacher's evidence argued for the other label
    assert parse_decision(updated.set_index("left_id").loc["l2", "verified_decision"]).label == "match"
    # Untouched rows are unchanged.
    assert updated.set_index("left_id").loc["l0", "review_status"] == "auto_agreed"


def test_accept_reject_and_blank_rows(rows, tmp_path):
    queue = review_queue(rows, statuses=("pending", "auto_agreed"))
    ids = {lid: i for i, lid in enumerate(queue["left_id"])}
    path = write_review_file(fill(queue, {ids["l0"]: {"verdict": "accept"}, ids["l1"]: {"verdict": "reject"}}),
                             tmp_path / "q.csv")
    updated, report = apply_verdicts(rows, read_review_file(path), run_id="r2", now=NOW)
    assert (report.accepted, report.rejected, report.skipped) == (1, 1, len(queue) - 2)
    by_id = updated.set_index("left_id")
    assert by_id.loc["l0", "review_status"] == "accepted"
    assert by_id.loc["l0", "verified_decision"] == by_id.loc["l0", "teacher_decision"]
    assert by_id.loc["l1", "review_status"] == "rejected"
    assert by_id.loc["l2", "review_status"] == "pending"


def test_bad_rows_name_their_line_and_nothing_is_applied(rows, tmp_path):
    queue = review_queue(rows, statuses=("pending", "auto_agreed"))
    ids = {lid: i for i, lid in enumerate(queue["left_id"])}
    filled = fill(queue, {
        ids["l0"]: {"verdict": "accept"},                                      # fine on its own
        ids["l1"]: {"verdict": "maybe"},                                       # unknown verdict
        ids["l2"]: {"verdict": "accept"},                                      # no teacher decision to accept
        ids["l3"]: {"verdict": "correct", "corrected_label": "match"},         # label flips, no rationale
        ids["l4"]: {"verdict": "correct", "corrected_label": "same"},          # invalid label
        ids["l5"]: {"corrected_label": "match"},                               # correction without verdict
    })
    path = write_review_file(filled, tmp_path / "q.csv")
    lines = {lid: n + 2 for n, lid in enumerate(filled["left_id"])}  # header is line 1
    with pytest.raises(InputError) as info:
        apply_verdicts(rows, read_review_file(path), run_id="r", now=NOW)
    message = str(info.value)
    assert "5 bad rows" in message
    assert f"line {lines['l1']}: verdict 'maybe' is not one of accept, reject, correct" in message
    assert f"line {lines['l2']}: cannot accept" in message
    assert f"line {lines['l3']}: verdict 'correct' needs corrected_rationale when the label changes" in message
    assert f"line {lines['l4']}: corrected_label 'same' is not match" in message
    assert f"line {lines['l5']}: corrected_label/corrected_rationale given but verdict is empty" in message
    assert f"line {lines['l0']}" not in message


def test_unknown_and_duplicate_pairs_are_rejected(rows, tmp_path):
    queue = review_queue(rows)
    queue = pd.concat([queue, queue.iloc[[0]]], ignore_index=True)
    queue.loc[1, "right_id"] = "nope"
    queue["verdict"] = "reject"
    path = write_review_file(queue, tmp_path / "q.jsonl")
    with pytest.raises(InputError) as info:
        apply_verdicts(rows, read_review_file(path), run_id="r", now=NOW)
    assert "line 2: no rationale for hard/train" in str(info.value)
    assert "line 3: the same pair as line 1" in str(info.value)


def test_review_file_errors(tmp_path):
    with pytest.raises(InputError, match="review files are .csv or .jsonl"):
        read_review_file(tmp_path / "q.xlsx")
    with pytest.raises(InputError, match="does not exist"):
        read_review_file(tmp_path / "missing.csv")
    broken = tmp_path / "q.jsonl"
    broken.write_text('{"verdict": "accept"}\nnot json\n')
    with pytest.raises(InputError, match="line 2: not JSON"):
        read_review_file(broken)
    headerless = tmp_path / "q.csv"
    headerless.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="missing columns"):
        read_review_file(headerless)


def test_csv_survives_a_spreadsheet_round_trip(rows, tmp_path):
    """Commas, quotes and newlines in rationales stay intact in CSV."""
    queue = review_queue(rows)
    queue["verdict"] = "correct"
    queue["corrected_label"] = "no_match"
    queue["corrected_rationale"] = 'Different "capacity", 1 TB\nvs 2 TB.'
    path = write_review_file(queue, tmp_path / "q.csv")
    with path.open(newline="") as f:
        assert len(list(csv.DictReader(f))) == len(queue)
    updated, _ = apply_verdicts(rows, read_review_file(path), run_id="r", now=NOW)
    corrected = updated[updated["review_status"] == "corrected"]
    assert {parse_decision(d).rationale for d in corrected["verified_decision"]} == {
        'Different "capacity", 1 TB\nvs 2 TB.'}


def test_rerunning_the_teacher_keeps_reviews(rows, frame):
    reviewed = rows.copy()
    reviewed.loc[1, ["review_status", "verified_decision"]] = ["rejected", None]
    reviewed.loc[2, ["review_status", "verified_decision"]] = ["corrected", rows.loc[0, "teacher_decision"]]
    rerun = rationale_rows(frame, AgenticTeacher().decide(frame), run_id="r2", now=NOW)
    merged = merge_rationales(reviewed, rerun).set_index("left_id")
    assert len(merged) == len(rows)
    assert merged.loc["l2", "review_status"] == "corrected"  # a correction always stands
    # The rejected decision was the flipped one; the new decision differs, so it is decided afresh.
    assert merged.loc["l1", "review_status"] == "auto_agreed" and merged.loc["l1", "run_id"] == "r2"
    # Running the same teacher again changes nothing reviewed.
    again = merge_rationales(merged.reset_index(), rerun).set_index("left_id")
    assert again.loc["l2", "review_status"] == "corrected"


def test_sft_training_set_holds_only_verified_or_agreeing(rows, frame):
    reviewed = rows.copy()
    reviewed.loc[1, ["review_status", "verified_decision"]] = ["rejected", None]
    reviewed.loc[2, "review_status"] = "corrected"
    reviewed.loc[2, "verified_decision"] = json.dumps({"label": "match", "confidence": 1.0, "evidence": {},
                                                       "noise_ignored": [], "rationale": "Same drive."})
    train = sft_training_set(reviewed, products(frame).assign(brand=None))
    assert set(train["status"]) == {"auto_agreed", "corrected"}
    assert "l1" not in set(train["left_id"])
    assert set(rows.loc[rows["review_status"] == "pending", "left_id"]) & set(train["left_id"]) <= {"l2"}
    assert train.set_index("left_id").loc["l2", "target_label"] == "match"
    assert train.set_index("left_id").loc["l0", "left_title"] == frame.loc[0, "left_title"]
    only_verified = sft_training_set(reviewed, include_auto_agreed=False)
    assert list(only_verified["left_id"]) == ["l2"]


def test_teach_review_and_training_set_through_the_warehouse(frame, tmp_path, capsys):
    """The CLI verbs over real Delta tables: teach, export, import, then the SFT set."""
    from epm_spark.config import load_settings
    from epm_spark.io.delta import read_pandas
    from epm_spark.pipeline.matcher.teach import load_sft_training_set

    warehouse = str(tmp_path / "wh")
    write_hard_warehouse(warehouse)

    assert main(["--warehouse", warehouse, "teach", "--benchmark", "hard", "--run-id", "t1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pairs"] == len(frame) and report["f1"] == 1.0 and report["to_review"] == 0
    rationales = read_pandas(warehouse, "rationales")
    assert len(rationales) == len(frame) and set(rationales["review_status"]) == {"auto_agreed"}
    # Re-running the same teach gives the same table, not duplicates.
    assert main(["--warehouse", warehouse, "teach", "--benchmark", "hard", "--run-id", "t1"]) == 0
    assert len(read_pandas(warehouse, "rationales")) == len(frame)

    out = tmp_path / "queue.jsonl"
    assert main(["--warehouse", warehouse, "review", "export", "--out", str(out), "--benchmark", "hrad"]) == 2
    assert "rationales holds no benchmark 'hrad' (benchmarks there: hard)" in capsys.readouterr().err
    assert not out.exists()
    assert main(["--warehouse", warehouse, "review", "export", "--out", str(out), "--status", "auto_agreed"]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == len(frame) and lines[0]["left_title"]
    lines[0].update(verdict="reject")
    out.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert main(["--warehouse", warehouse, "review", "import", "--file", str(out)]) == 0
    assert "1 rejected" in capsys.readouterr().out

    settings = load_settings(None, warehouse=warehouse)
    train = load_sft_training_set(settings, benchmark="hard", split="train")
    assert len(train) == len(frame) - 1 and "left_title" in train
    # A bad file is refused with the line, and the CLI prints one line, exit status 2.
    lines[1].update(verdict="perhaps")
    out.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert main(["--warehouse", warehouse, "review", "import", "--file", str(out)]) == 2
    assert "line 2: verdict 'perhaps'" in capsys.readouterr().err
    assert len(load_sft_training_set(settings, benchmark="hard")) == len(frame) - 1


def test_split_names_resolve_per_benchmark():
    from epm_spark.pipeline.matcher.teach import select_split

    rows = pd.DataFrame({"benchmark": ["abt", "abt", "wdc", "wdc", "wdc"],
                         "split": ["train", "test", "train_medium", "train_small", "test_050un"]})
    assert sorted(select_split(rows, "train")["split"]) == ["train", "train_medium"]
    assert list(select_split(rows, "test_050un")["benchmark"]) == ["wdc"]
    assert len(select_split(rows, None)) == 5
    with pytest.raises(InputError, match="no rows in split 'valid'"):
        select_split(rows, "valid")
