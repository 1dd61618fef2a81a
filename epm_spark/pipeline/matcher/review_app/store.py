"""The review page's warehouse side: reading what to show, and writing a verdict into ``rationales``.

Reads go through :func:`epm_spark.io.delta.read_pandas` (delta-rs, no Spark) and are cached per
table version, so a page load after nothing changed reads only the Delta logs.

A verdict is a read-modify-write of the ``rationales`` partitions of the pairs' benchmarks:
read at version ``v``, apply the verdict with the same rules as ``review import``
(:func:`~epm_spark.models.matcher.supervision.review.apply_verdicts`), commit with
``based_on=v``. If another commit changed those partitions since ``v`` (another reviewer, a
second server, a ``teach`` run), the commit fails with :class:`ConcurrentWriteError` and the
verdict is applied again on a fresh read; a pair that a person decided in the meantime is then
refused, never decided twice.

Page verdicts map onto the review file's: *match* / *no match* equal to the teacher's label is
``accept`` (the teacher's decision becomes the verified one); otherwise ``correct``, with the
reviewer's note as the corrected rationale (required, as in the file: it is what SFT learns).
The reviewer is recorded as the row's ``run_id`` (``review:<name>``) and the time as ``updated_at``.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from epm_spark.config import Settings
from epm_spark.errors import ConcurrentWriteError, EpmError, InputError, TableNotFoundError
from epm_spark.io import delta
from epm_spark.io.schemas import RATIONALES
from epm_spark.models.matcher.decision import MATCH, NO_MATCH, MatchDecision, parse_decision
from epm_spark.models.matcher.pairs import join_listings
from epm_spark.models.matcher.supervision.review import apply_verdicts, rationale_rows
from epm_spark.models.matcher.supervision.teacher import AgenticTeacher, TeacherResult
from epm_spark.pipeline.matcher.review_app import queue as q

__all__ = ["PairRef", "ReviewStore", "VerdictRefused", "AlreadyDecided", "reviewer_run_id", "check_reviewer"]

log = logging.getLogger(__name__)

RATIONALE_KEY = list(RATIONALES.key)
_REVIEWED = ("accepted", "rejected", "corrected")
# Commit attempts of one verdict; each lost race costs one re-read of a few partitions.
_TRIES = 12
_REVIEWER = re.compile(r"^[\w .@-]{1,40}$")


class VerdictRefused(EpmError):
    """A verdict the page does not record, with the reason for the reviewer."""


class AlreadyDecided(VerdictRefused):
    """A person decided the pair already."""


def check_reviewer(name: str) -> str:
    name = (name or "").strip()
    if not _REVIEWER.match(name):
        raise VerdictRefused("a reviewer name is 1 to 40 letters, digits, spaces or . _ - @")
    return name


def reviewer_run_id(reviewer: str) -> str:
    return f"review:{reviewer}"


@dataclass(frozen=True)
class PairRef:
    """The ``rationales`` key a verdict on one pair is written under."""

    benchmark: str
    split: str
    left_source: str
    left_id: str
    right_source: str
    right_id: str
    teacher: str

    @property
    def key(self) -> tuple[str, ...]:
        return tuple(getattr(self, c) for c in RATIONALE_KEY)

    @property
    def pair(self) -> tuple[str, str, str, str]:
        return q.pair_key(self.left_source, self.left_id, self.right_source, self.right_id)

    def as_dict(self) -> dict[str, str]:
        return {c: getattr(self, c) for c in RATIONALE_KEY}

    @classmethod
    def of(cls, mapping: Any) -> PairRef:
        try:
            return cls(**{c: str(mapping[c]) for c in RATIONALE_KEY})
        except KeyError as exc:
            raise VerdictRefused(f"the form lacks the pair's {exc.args[0]}") from None


class ReviewStore:
    """Reads the warehouse for the views and records verdicts; safe to share between request threads."""

    def __init__(self, settings: Settings, *, teacher: Any = None):
        self.settings = settings
        self.warehouse = settings.warehouse
        self.review = settings.review
        self.teacher = teacher or AgenticTeacher()
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[Any, Any]] = {}
        self._decisions: dict[tuple, TeacherResult] = {}

    # ------------------------------------------------------------------ reading

    def check(self) -> None:
        """One clear line when the warehouse cannot serve the page at all."""
        root = str(self.warehouse)
        if "://" not in root and not Path(root).is_dir():
            raise InputError(f"warehouse {root} does not exist; pass --warehouse DIR (or set EPM_WAREHOUSE) "
                             "to the folder `make demo` or the nightly job wrote")
        if not delta.table_exists(root, "products"):
            delta.read_pandas(root, "products")  # raises the one-line not-found error naming the table
        if not (delta.table_exists(root, "rationales") or delta.table_exists(root, "matches")):
            raise TableNotFoundError(f"warehouse {root} has neither a rationales table (written by `epm-spark "
                                     "teach`) nor a matches table (written by `epm-spark match`): nothing to review")

    def _version(self, table: str) -> int | None:
        return delta.table_version(self.warehouse, table)

    def _cached(self, name: str, tables: tuple[str, ...], build: Callable[[], Any]) -> Any:
        versions = tuple(self._version(t) for t in tables)
        with self._lock:
            hit = self._cache.get(name)
            if hit is not None and hit[0] == versions:
                return hit[1]
        value = build()
        with self._lock:
            self._cache[name] = (versions, value)
        return value

    def _table(self, table: str, **kwargs: Any) -> pd.DataFrame | None:
        if not delta.table_exists(self.warehouse, table):
            return None
        return delta.read_pandas(self.warehouse, table, **kwargs)

    def rationales(self) -> pd.DataFrame | None:
        return self._cached("rationales", ("rationales",), lambda: self._table("rationales"))

    def labelled(self) -> pd.DataFrame | None:
        return self._cached("labelled", ("labelled_pairs",), lambda: self._table(
            "labelled_pairs", columns=["benchmark", "split", *q.SIDES, "label"]))

    def last_matches(self) -> pd.DataFrame:
        """The rows of the newest match run of each catalog pairing."""
        def build() -> pd.DataFrame:
            runs = self._table("matches", columns=["run_id", "left_source", "right_source", "scored_at"])
            if runs is None or runs.empty:
                return pd.DataFrame(columns=[*q.SIDES, "label", "probability", "decided_by", "run_id", "rationale"])
            newest = q.latest_runs(runs, ["left_source", "right_source"], "scored_at")[
                ["left_source", "right_source", "run_id"]].drop_duplicates()
            rows = delta.read_pandas(self.warehouse, "matches", filters=[("run_id", "in", sorted(newest.run_id))],
                                     columns=[*q.SIDES, "label", "probability", "decided_by", "run_id", "rationale",
                                              "scored_at"])
            return rows.merge(newest, on=["left_source", "right_source", "run_id"])
        return self._cached("matches", ("matches",), build)

    def queue(self) -> pd.DataFrame:
        """The pairs queue (see :func:`.queue.pairs_queue`), rebuilt when one of its tables changed."""
        return self._cached("queue", ("rationales", "matches", "labelled_pairs"), lambda: q.pairs_queue(
            self.rationales(), self.last_matches(), self.labelled(), margin=self.review.uncertainty_margin))

    def listings(self, ids: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        """``products`` rows by (source, product_id)."""
        if not ids:
            return {}
        sources = sorted({s for s, _ in ids})
        wanted = sorted({i for _, i in ids})
        rows = delta.read_pandas(self.warehouse, "products", filters=[("source", "in", sources),
                                                                       ("product_id", "in", wanted)])
        return {(r["source"], str(r["product_id"])): r for r in rows.to_dict("records")}

    def human_verdicts(self) -> dict[tuple, dict[str, Any]]:
        """What people decided, by :func:`.queue.pair_key`: status, label (None when rejected), who, when, note."""
        rows = self.rationales()
        out: dict[tuple, dict[str, Any]] = {}
        if rows is None or rows.empty:
            return out
        for r in rows[rows["review_status"].isin(_REVIEWED)].sort_values("updated_at").to_dict("records"):
            verified = r["verified_decision"]
            label = parse_decision(verified).label if isinstance(verified, str) and verified else None
            out[q.pair_key(*(r[c] for c in q.SIDES))] = {
                "status": r["review_status"], "label": label, "by": _reviewer_of(r["run_id"]),
                "at": r["updated_at"], "note": r["reviewer_note"]}
        return out

    # ------------------------------------------------------------------ one pair

    def pair_frame(self, refs: list[PairRef], labels: dict[tuple, str | None] | None = None) -> pd.DataFrame:
        """A pair frame (rationale key + gold label + both listings) for ``refs``."""
        labels = labels or {}
        pairs = pd.DataFrame([{**r.as_dict(), "label": _label_int(labels.get(r.pair))} for r in refs])
        listings = self.listings([(r.left_source, r.left_id) for r in refs]
                                 + [(r.right_source, r.right_id) for r in refs])
        products = pd.DataFrame(list(listings.values()))
        if products.empty:
            raise VerdictRefused("the pair's listings are no longer in products")
        return join_listings(pairs, products)

    def rows_by_key(self) -> dict[tuple, dict[str, Any]]:
        """Rationale rows by their key."""
        def build() -> dict[tuple, dict[str, Any]]:
            rows = self.rationales()
            if rows is None:
                return {}
            return {tuple(r[c] for c in RATIONALE_KEY): r for r in rows.to_dict("records")}
        return self._cached("rows_by_key", ("rationales",), build)

    def rows_by_pair(self) -> dict[tuple, dict[str, Any]]:
        """Rationale rows by :func:`.queue.pair_key` (the first by key when several teachers wrote one)."""
        def build() -> dict[tuple, dict[str, Any]]:
            out: dict[tuple, dict[str, Any]] = {}
            rows = self.rows_by_key()
            for key in sorted(rows):
                row = rows[key]
                out.setdefault(q.pair_key(*(row[c] for c in q.SIDES)), row)
            return out
        return self._cached("rows_by_pair", ("rationales",), build)

    def decision(self, ref: PairRef) -> TeacherResult:
        """The teacher's answer for a pair: its rationale row's, else the page teacher's."""
        row = self.rows_by_key().get(ref.key)
        return _stored_result(row) if row is not None else self._page_decision(ref)

    def _page_decision(self, ref: PairRef) -> TeacherResult:
        # Deterministic rules: computing it once per pair keeps the shown and the recorded decision equal.
        with self._lock:
            hit = self._decisions.get(ref.key)
        if hit is None:
            gold = q.labelled_index(self.labelled()).get(ref.pair, {}).get("gold")
            hit = self.teacher.decide(self.pair_frame([ref], {ref.pair: gold}))[0]
            with self._lock:
                self._decisions[ref.key] = hit
        return hit

    def ref_for(self, left_source: str, left_id: str, right_source: str, right_id: str) -> PairRef:
        """The rationale key of a nightly pair: its existing row's, else where a new row would be filed."""
        sides = [left_source, left_id, right_source, right_id]
        row = self.rows_by_pair().get(q.pair_key(*sides))
        if row is not None:
            return PairRef.of(row)
        return PairRef.of(q.filed_under(sides, q.labelled_index(self.labelled())))

    # ------------------------------------------------------------------ writing

    def record(self, reviewer: str, refs: list[PairRef], label: str, note: str | None) -> None:
        """Write ``label`` (match / no_match) on every pair of ``refs`` as ``reviewer``'s verdict, in one commit.

        :class:`VerdictRefused` (nothing written) when a pair was decided by a person already or a
        verdict against the teacher comes without a note.
        """
        if label not in (MATCH, NO_MATCH):
            raise VerdictRefused(f"a verdict is match or no_match, not {label!r}")
        if not refs:
            raise VerdictRefused("no pair to record a verdict on")
        note = (note or "").strip() or None
        run_id = reviewer_run_id(check_reviewer(reviewer))
        benchmarks = sorted({r.benchmark for r in refs})
        self._ensure_rationales()
        for attempt in range(_TRIES):
            version = self._version("rationales")
            current = delta.read_pandas(self.warehouse, "rationales", version=version,
                                        filters=[("benchmark", "in", benchmarks)])
            rows, verdicts = self._apply_to(current, refs, label, note, run_id)
            try:
                updated, _ = apply_verdicts(rows, verdicts, run_id=run_id)
            except InputError as exc:
                raise VerdictRefused(str(exc).replace("line page: ", "")) from None
            try:
                delta.write_pandas(self.warehouse, "rationales", updated, mode="replace",
                                   partition={"benchmark": benchmarks}, based_on=version, job="review-page")
                return
            except ConcurrentWriteError:
                log.info("rationales changed while %s's verdict was written; applying it again", reviewer)
                time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
        raise ConcurrentWriteError(f"rationales: other commits kept landing first ({_TRIES} tries); the verdict "
                                   "was not recorded, send it again")

    def _apply_to(self, current: pd.DataFrame, refs: list[PairRef], label: str, note: str | None,
                  run_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The partitions' rows with a fresh teacher row for each new pair, and the review-file rows to apply."""
        keyed = {tuple(r[c] for c in RATIONALE_KEY): r for r in current.to_dict("records")}
        new = [r for r in refs if r.key not in keyed]
        for ref in refs:
            row = keyed.get(ref.key)
            if row is not None and row["review_status"] in _REVIEWED:
                raise AlreadyDecided(
                    f"{ref.left_id} vs {ref.right_id} was already decided ({row['review_status']}) by "
                    f"{_reviewer_of(row['run_id'])} at {pd.Timestamp(row['updated_at']):%Y-%m-%d %H:%M} UTC; "
                    "nothing was changed")
        rows = current
        if new:
            labels = q.labelled_index(self.labelled())
            frame = self.pair_frame(new, {r.pair: labels.get(r.pair, {}).get("gold") for r in new})
            fresh = rationale_rows(frame, [self._page_decision(r) for r in new], run_id=run_id)
            rows = fresh if current.empty else pd.concat([current, fresh], ignore_index=True)
        verdicts = []
        for ref in refs:
            row = keyed.get(ref.key)
            teacher_label = (self._page_decision(ref) if row is None else _stored_result(row)).label
            if teacher_label == label:
                verdicts.append({**ref.as_dict(), "verdict": "accept", "reviewer_note": note, "line": "page"})
                continue
            if note is None:
                said = f"said {teacher_label}" if teacher_label else "gave no decision"
                raise VerdictRefused(f"the teacher {said} for {ref.left_id} vs {ref.right_id}: write in the note "
                                     "why it is " + label.replace("_", " ") + " (the note becomes the rationale "
                                     "the student learns); nothing was recorded")
            verdicts.append({**ref.as_dict(), "verdict": "correct", "corrected_label": label,
                             "corrected_rationale": note, "reviewer_note": note, "line": "page"})
        return rows, pd.DataFrame(verdicts)

    def _ensure_rationales(self) -> None:
        """Create an empty ``rationales`` table first, so every verdict commit has a version to be based on."""
        if delta.table_exists(self.warehouse, "rationales"):
            return
        empty = pd.DataFrame({c: pd.Series([], dtype=object) for c in RATIONALES.columns})
        delta.write_pandas(self.warehouse, "rationales", empty, mode="append", job="review-page")


def _reviewer_of(run_id: Any) -> str:
    text = str(run_id or "")
    return text.removeprefix("review:") if text.startswith("review:") else f"run {text}"


def _label_int(gold: str | None) -> int | None:
    return None if gold is None else int(gold == MATCH)


def _stored_result(row: dict[str, Any]) -> TeacherResult:
    text = row.get("teacher_decision")
    decision: MatchDecision | None = parse_decision(text) if isinstance(text, str) and text else None
    return TeacherResult(str(row.get("teacher")), decision, failure=row.get("failure_reason"))
