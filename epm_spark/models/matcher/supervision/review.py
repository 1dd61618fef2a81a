"""Rationale rows, the human review queue, and the SFT training set: pure functions on pandas frames.

A rationale row (columns of the ``rationales`` table, :data:`epm_spark.io.schemas.RATIONALES`)
holds one teacher's decision on one labelled pair and its review status:

* ``auto_agreed``: the teacher's label equals the gold label; trains the student as is.
* ``pending``: the teacher disagrees with gold, gave no valid decision, or there is no
  gold label; waits for a person.
* ``accepted`` / ``rejected`` / ``corrected``: a person's verdict. Accepted and corrected
  rows train the student (``verified_decision``); rejected rows never do.

The queue goes out as CSV or JSON lines (:func:`review_queue`, :func:`write_review_file`),
a person fills ``verdict`` (accept / reject / correct) and, to correct, ``corrected_label``
and ``corrected_rationale``; :func:`read_review_file` and :func:`apply_verdicts` bring the
verdicts back. Every row is validated first; one bad row and nothing is applied.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from epm_spark.errors import InputError
from epm_spark.io.schemas import RATIONALES, REVIEW_STATUSES
from epm_spark.models.matcher.decision import (
    MATCH, MAX_RATIONALE_CHARS, NO_MATCH, DecisionFormatError, MatchDecision, parse_decision,
)
from epm_spark.models.matcher.pairs import gold_label, join_listings
from epm_spark.models.matcher.supervision.teacher import TeacherResult

__all__ = [
    "RATIONALE_KEY",
    "QUEUE_COLUMNS",
    "VERDICTS",
    "TRAINING_STATUSES",
    "rationale_rows",
    "merge_rationales",
    "review_queue",
    "write_review_file",
    "read_review_file",
    "apply_verdicts",
    "ReviewImport",
    "sft_training_set",
]

RATIONALE_KEY = list(RATIONALES.key)
VERDICTS = ("accept", "reject", "correct")
# Statuses whose decision the student may learn from.
TRAINING_STATUSES = ("auto_agreed", "accepted", "corrected")
# Statuses a person decided; a new teacher run never overwrites these silently.
_REVIEWED = ("accepted", "rejected", "corrected")

QUEUE_COLUMNS = [
    *RATIONALE_KEY, "left_title", "right_title", "gold_label", "teacher_label", "teacher_confidence",
    "teacher_rationale", "failure_reason", "teacher_decision",
    # Filled by the reviewer:
    "verdict", "corrected_label", "corrected_rationale", "reviewer_note",
]
_REVIEWER_COLUMNS = ("verdict", "corrected_label", "corrected_rationale", "reviewer_note")


def _now() -> pd.Timestamp:
    return pd.Timestamp(dt.datetime.now(dt.timezone.utc))


def _blank(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)) or (
        isinstance(value, str) and not value.strip())


def rationale_rows(pairs: pd.DataFrame, results: Sequence[TeacherResult], *, run_id: str,
                   now: pd.Timestamp | None = None) -> pd.DataFrame:
    """One ``rationales`` row per teacher result (``pairs``: the pair frame the teacher decided)."""
    if len(pairs) != len(results):
        raise ValueError(f"{len(results)} teacher results for {len(pairs)} pairs")
    now = now if now is not None else _now()
    rows = []
    for pair, result in zip(pairs.to_dict("records"), results):
        gold = gold_label(pair.get("label"))
        agrees = None if gold is None or not result.ok else result.label == gold
        rows.append({
            "benchmark": str(pair.get("benchmark") or "pairs"),
            "split": str(pair.get("split") or "unsplit"),
            "left_source": str(pair["left_source"]), "left_id": str(pair["left_id"]),
            "right_source": str(pair["right_source"]), "right_id": str(pair["right_id"]),
            "label": None if gold is None else int(gold == MATCH),
            "teacher": result.teacher,
            "teacher_label": result.label,
            "teacher_decision": result.decision.to_json() if result.decision else None,
            "failure_reason": result.failure,
            "prompt_tokens": int(result.prompt_tokens), "completion_tokens": int(result.completion_tokens),
            "agrees_with_gold": agrees,
            "review_status": "auto_agreed" if agrees else "pending",
            "verified_decision": None, "reviewer_note": None, "run_id": run_id, "updated_at": now,
        })
    return _typed(pd.DataFrame(rows, columns=RATIONALES.columns))


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["label"] = frame["label"].astype("Int32")
    frame["agrees_with_gold"] = frame["agrees_with_gold"].astype("boolean")
    for col in ("prompt_tokens", "completion_tokens"):
        frame[col] = frame[col].fillna(0).astype("int64")
    frame["updated_at"] = pd.to_datetime(frame["updated_at"], utc=True)
    return frame


def merge_rationales(existing: pd.DataFrame | None, new: pd.DataFrame) -> pd.DataFrame:
    """``existing`` rows updated with ``new`` ones, by key; re-running a teacher never loses a review.

    A key only in ``new`` is added. For a key in both, the new row wins unless a person
    reviewed the old one: ``corrected`` rows are kept (the correction stands whatever the
    teacher says now); ``accepted`` and ``rejected`` rows are kept while the teacher's
    decision is unchanged, and go back to the queue when it changed.
    """
    if existing is None or existing.empty:
        return _typed(new[RATIONALES.columns].reset_index(drop=True))
    old = existing.set_index(RATIONALE_KEY)
    fresh = new.set_index(RATIONALE_KEY)
    if fresh.index.has_duplicates:
        raise ValueError("new rationale rows repeat a key")
    both = old.index.intersection(fresh.index)
    keep_old = []
    for key in both:
        before, after = old.loc[key], fresh.loc[key]
        if before["review_status"] == "corrected" or (
                before["review_status"] in _REVIEWED and before["teacher_decision"] == after["teacher_decision"]):
            keep_old.append(key)
    fresh = fresh.drop(index=keep_old)
    merged = pd.concat([old.drop(index=fresh.index.intersection(old.index)), fresh])
    return _typed(merged.reset_index()[RATIONALES.columns].reset_index(drop=True))


# ----------------------------------------------------------------------------- the queue


def review_queue(rationales: pd.DataFrame, products: pd.DataFrame | None = None, *,
                 statuses: Sequence[str] = ("pending",)) -> pd.DataFrame:
    """The rows a person should review, with both titles and empty verdict columns."""
    unknown = set(statuses) - set(REVIEW_STATUSES)
    if unknown:
        raise InputError(f"unknown review status {sorted(unknown)}; statuses: {', '.join(REVIEW_STATUSES)}")
    queue = rationales[rationales["review_status"].isin(list(statuses))].copy()
    if products is not None and not queue.empty:
        titles = products[["source", "product_id", "title"]].drop_duplicates(["source", "product_id"])
        for side in ("left", "right"):
            queue = queue.merge(titles.rename(columns={"source": f"{side}_source", "product_id": f"{side}_id",
                                                       "title": f"{side}_title"}),
                                on=[f"{side}_source", f"{side}_id"], how="left")
    for side in ("left", "right"):
        if f"{side}_title" not in queue:
            queue[f"{side}_title"] = None
    decisions = [parse_decision(d) if not _blank(d) else None for d in queue["teacher_decision"]]
    queue["gold_label"] = [gold_label(v) for v in queue["label"]]
    queue["teacher_confidence"] = [d.confidence if d else None for d in decisions]
    queue["teacher_rationale"] = [d.rationale if d else None for d in decisions]
    for col in _REVIEWER_COLUMNS:
        queue[col] = ""
    return queue[QUEUE_COLUMNS].sort_values(RATIONALE_KEY).reset_index(drop=True)


def write_review_file(queue: pd.DataFrame, path: str | Path) -> Path:
    """Write the queue as ``.csv`` or ``.jsonl`` (chosen by the file extension)."""
    path = Path(path)
    kind = _file_kind(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [{k: (None if _blank(v) and k not in _REVIEWER_COLUMNS else v) for k, v in r.items()}
               for r in queue[QUEUE_COLUMNS].astype(object).to_dict("records")]
    if kind == "csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=QUEUE_COLUMNS)
            writer.writeheader()
            for r in records:
                writer.writerow({k: "" if v is None else v for k, v in r.items()})
    else:
        with path.open("w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
    return path


def _file_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise InputError(f"{path}: review files are .csv or .jsonl, not {suffix or 'no extension'!r}")


def read_review_file(path: str | Path) -> pd.DataFrame:
    """A filled-in review file as a frame of strings, with ``line``: the row's line in the file."""
    path = Path(path)
    kind = _file_kind(path)
    if not path.exists():
        raise InputError(f"review file {path} does not exist")
    rows: list[dict[str, Any]] = []
    if kind == "csv":
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in (*RATIONALE_KEY, "verdict") if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"{path}: missing columns {missing}")
            for record in reader:
                rows.append({**record, "line": reader.line_num})
    else:
        errors = []
        with path.open(encoding="utf-8") as f:
            for n, text in enumerate(f, 1):
                if not text.strip():
                    continue
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as exc:
                    errors.append(f"line {n}: not JSON ({exc.msg})")
                    continue
                if not isinstance(record, dict):
                    errors.append(f"line {n}: expected a JSON object")
                    continue
                rows.append({**record, "line": n})
        if errors:
            raise InputError(f"{path}: nothing applied; {len(errors)} bad lines: " + "; ".join(errors[:20]))
        missing = [c for c in (*RATIONALE_KEY, "verdict") if rows and c not in rows[0]]
        if missing:
            raise InputError(f"{path}: missing fields {missing}")
    frame = pd.DataFrame(rows)
    for col in frame.columns:
        if col != "line":
            frame[col] = frame[col].map(lambda v: None if _blank(v) else str(v).strip())
    return frame


@dataclass
class ReviewImport:
    """What :func:`apply_verdicts` did."""

    accepted: int = 0
    rejected: int = 0
    corrected: int = 0
    skipped: int = 0  # rows with no verdict: still pending
    benchmarks: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"review: {self.accepted} accepted, {self.rejected} rejected, {self.corrected} corrected, "
                f"{self.skipped} left pending")


def apply_verdicts(rationales: pd.DataFrame, verdicts: pd.DataFrame, *, run_id: str,
                   now: pd.Timestamp | None = None) -> tuple[pd.DataFrame, ReviewImport]:
    """Apply a read review file to the rationale rows; all rows valid or :class:`InputError` and no change.

    Rules per row: ``verdict`` empty leaves the pair pending (and then the correction
    columns must be empty too); ``accept`` needs a teacher decision; ``correct`` needs
    ``corrected_label`` (match / no_match / 1 / 0) and ``corrected_rationale`` when the
    teacher gave no decision or the label changes. Keys must name existing rationale
    rows, each once.
    """
    now = now if now is not None else _now()
    table = rationales.set_index(RATIONALE_KEY)
    errors: list[str] = []
    updates: dict[tuple, dict[str, Any]] = {}
    report = ReviewImport()
    seen: dict[tuple, int] = {}
    for row in verdicts.to_dict("records"):
        line = row.get("line", "?")

        def bad(message: str) -> None:
            errors.append(f"line {line}: {message}")

        key = tuple(row.get(c) for c in RATIONALE_KEY)
        if any(k is None for k in key):
            bad(f"missing {', '.join(c for c, k in zip(RATIONALE_KEY, key) if k is None)}")
            continue
        if key in seen:
            bad(f"the same pair as line {seen[key]}")
            continue
        seen[key] = line
        if key not in table.index:
            bad(f"no rationale for {key[0]}/{key[1]} {key[2]}:{key[3]} vs {key[4]}:{key[5]} by {key[6]}")
            continue
        verdict = (row.get("verdict") or "").lower()
        corrected_label, corrected_rationale = row.get("corrected_label"), row.get("corrected_rationale")
        note = row.get("reviewer_note")
        current = table.loc[key]
        teacher_decision = None if _blank(current["teacher_decision"]) else parse_decision(current["teacher_decision"])
        if not verdict:
            if corrected_label or corrected_rationale:
                bad("corrected_label/corrected_rationale given but verdict is empty (use verdict 'correct')")
            else:
                report.skipped += 1
            continue
        if verdict not in VERDICTS:
            bad(f"verdict {row.get('verdict')!r} is not one of {', '.join(VERDICTS)}")
            continue
        if verdict == "accept":
            if teacher_decision is None:
                bad("cannot accept: the teacher gave no valid decision for this pair (use 'correct')")
                continue
            updates[key] = {"review_status": "accepted", "verified_decision": teacher_decision.to_json()}
            report.accepted += 1
        elif verdict == "reject":
            updates[key] = {"review_status": "rejected", "verified_decision": None}
            report.rejected += 1
        else:
            decision, message = _corrected(teacher_decision, corrected_label, corrected_rationale)
            if message:
                bad(message)
                continue
            updates[key] = {"review_status": "corrected", "verified_decision": decision.to_json()}
            report.corrected += 1
        updates[key].update(reviewer_note=note, run_id=run_id, updated_at=now)
    if errors:
        shown = "; ".join(errors[:20]) + (f"; ... {len(errors) - 20} more" if len(errors) > 20 else "")
        raise InputError(f"review file not applied, {len(errors)} bad rows: {shown}")
    out = table.copy()
    for key, values in updates.items():
        for col, value in values.items():
            out.at[key, col] = value
    report.benchmarks = sorted({k[0] for k in updates})
    return _typed(out.reset_index()[RATIONALES.columns]), report


def _corrected(teacher: MatchDecision | None, label: str | None,
               rationale: str | None) -> tuple[MatchDecision | None, str | None]:
    if not label:
        return None, "verdict 'correct' needs corrected_label (match or no_match)"
    try:
        new_label = gold_label(label)
    except ValueError:
        return None, f"corrected_label {label!r} is not match, no_match, 1 or 0"
    if new_label not in (MATCH, NO_MATCH):
        return None, f"corrected_label {label!r} is not match, no_match, 1 or 0"
    label_changed = teacher is None or teacher.label != new_label
    if not rationale and label_changed:
        why = "the teacher gave no decision" if teacher is None else "the label changes"
        return None, f"verdict 'correct' needs corrected_rationale when {why}"
    if rationale and len(rationale) > MAX_RATIONALE_CHARS:
        return None, f"corrected_rationale is longer than {MAX_RATIONALE_CHARS} characters"
    # A changed label invalidates the teacher's per-attribute evidence, which argued the other way.
    evidence = {} if label_changed else dict(teacher.evidence)
    noise = () if teacher is None else teacher.noise_ignored
    try:
        decision = MatchDecision.from_dict({
            "label": new_label, "confidence": 1.0, "evidence": evidence, "noise_ignored": list(noise),
            "rationale": rationale or teacher.rationale,
        })
    except DecisionFormatError as exc:
        return None, f"corrected decision is invalid: {exc.reason}"
    return decision, None


# ----------------------------------------------------------------------------- SFT training set


def sft_training_set(rationales: pd.DataFrame, products: pd.DataFrame | None = None, *,
                     include_auto_agreed: bool = True) -> pd.DataFrame:
    """The decisions the student may learn from: verified (accepted, corrected) and agreeing ones.

    Returns the key columns, ``label`` (gold), ``status``, ``decision_json`` (the target
    text: the verified decision, or the teacher's own when it agreed with gold) and
    ``target_label``. With ``products``, both listings are joined in as ``left_*`` /
    ``right_*`` columns, ready to render prompts. Pending and rejected rows never appear.
    """
    statuses = TRAINING_STATUSES if include_auto_agreed else ("accepted", "corrected")
    rows = rationales[rationales["review_status"].isin(list(statuses))].copy()
    rows["decision_json"] = [
        r["teacher_decision"] if r["review_status"] == "auto_agreed" else r["verified_decision"]
        for r in rows.to_dict("records")
    ]
    if rows["decision_json"].map(_blank).any():
        bad = rows[rows["decision_json"].map(_blank)].iloc[0]
        raise InputError(f"rationale {bad['benchmark']}/{bad['left_id']}/{bad['right_id']} is "
                         f"{bad['review_status']} but has no decision")
    rows["target_label"] = [parse_decision(d).label for d in rows["decision_json"]]
    rows = rows.rename(columns={"review_status": "status"})
    out = rows[[*RATIONALE_KEY, "label", "status", "target_label", "decision_json"]].reset_index(drop=True)
    if products is not None:
        out = join_listings(out, products)
    return out
