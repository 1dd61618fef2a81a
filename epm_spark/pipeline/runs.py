"""``job_runs``: one row per job attempt, written by every job (verbs, ``jobs/``, nightly).

    with recorded(settings, "ingest", run_id="2026-11-23", arguments={...}) as run:
        report = ingest(...)
        run.observe(report)

The row is appended as ``running`` before the job does anything, and replaced by its
final state (``succeeded`` or ``failed`` with the error) when the job ends. A process
killed mid-way cannot write that second row, so its attempt stays ``running`` with no
``finished_at``; the next attempt of the same job and run says so.

Rows and versions written come from the Delta commits themselves
(:func:`epm_spark.io.delta.observe_commits`); rows read and model versions come from the
job's report. No Spark: the table is small and written on the driver.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa

from epm_spark import __version__
from epm_spark.config import Settings
from epm_spark.io import delta
from epm_spark.io.schemas import JOB_RUNS, check_partition_value

__all__ = ["JobRun", "recorded", "observe", "read_runs", "unfinished_attempts", "succeeded_steps", "format_runs"]

log = logging.getLogger(__name__)

# What each job's report says it read: report attribute -> input name in rows_read.
_READS: dict[str, dict[str, str]] = {
    "ingest": {"rows_read": "input"},
    "embed": {"listings": "products"},
    "block": {"queries": "embeddings (left)", "indexed": "embeddings (right)"},
    "match": {"candidates": "candidates"},
    "dedup": {"listings": "products", "edges": "matches"},
    "price-match": {"comparisons": "matches"},
    "ingest-events": {"rows_read": "input"},
    "rank": {"queries": "queries", "candidates": "embeddings (nearest listings)"},
    "rewrite": {"queries": "queries"},
    "teach-rewrites": {"queries": "queries"},
}
_CURRENT: ContextVar["JobRun | None"] = ContextVar("epm_job_run", default=None)
# Concurrent jobs of one run rewrite the same partition; a conflicting commit is retried.
_COMMIT_TRIES = 8


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class JobRun:
    """The row of one attempt, filled in while the job runs."""

    run_id: str
    job: str
    arguments: dict[str, Any]
    step: str | None = None
    attempt_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    started_at: dt.datetime = field(default_factory=_now)
    finished_at: dt.datetime | None = None
    status: str = "running"
    error: str | None = None
    rows_read: dict[str, int] = field(default_factory=dict)
    rows_written: dict[str, int] = field(default_factory=dict)
    table_versions: dict[str, int] = field(default_factory=dict)
    model_versions: dict[str, str] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)

    def commit(self, info: delta.CommitInfo) -> None:
        if info.table == JOB_RUNS.name or info.skipped:
            return
        if info.rows >= 0:
            self.rows_written[info.table] = self.rows_written.get(info.table, 0) + info.rows
        if info.version is not None:
            self.table_versions[info.table] = info.version

    def observe(self, report: Any) -> None:
        """Take rows read, model versions and seconds from a job's report."""
        for attr, name in _READS.get(self.job, {}).items():
            value = getattr(report, attr, None)
            if isinstance(value, int):
                key = getattr(report, "input_path", name) if attr == "rows_read" else name
                self.rows_read[key] = self.rows_read.get(key, 0) + value
        model = getattr(report, "model_version", None) or getattr(report, "model", None)
        if isinstance(model, str) and model:
            kind = {"match": "matcher", "rank": "ranker", "rewrite": "rewriter"}.get(self.job, "encoder")
            if self.job == "train-rewriter":
                kind = f"rewriter_{getattr(report, 'stage', 'model')}"
            self.model_versions[kind] = model
        encoder = getattr(report, "encoder_version", None)
        if isinstance(encoder, str) and encoder:
            self.model_versions["encoder"] = encoder
        for attr in ("seconds", "search_seconds"):
            value = getattr(report, attr, None)
            if isinstance(value, (int, float)):
                self.stage_seconds[attr.replace("seconds", "").strip("_") or "total"] = round(float(value), 3)

    def row(self) -> dict[str, Any]:
        pairs = lambda d: list(d.items())  # noqa: E731  (Arrow builds map columns from key/value pairs)
        return {
            "run_id": self.run_id, "attempt_id": self.attempt_id, "job": self.job, "step": self.step,
            "arguments": json.dumps(self.arguments, sort_keys=True, default=str),
            "started_at": self.started_at, "finished_at": self.finished_at, "status": self.status,
            "error": self.error, "rows_read": pairs(self.rows_read), "rows_written": pairs(self.rows_written),
            "table_versions": pairs(self.table_versions), "model_versions": pairs(self.model_versions),
            "stage_seconds": pairs(self.stage_seconds), "host": self.host, "pid": self.pid,
            "version": __version__,
        }


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=JOB_RUNS.schema)


def _run_rows(warehouse: str, run_id: str, version: int | None = None) -> list[dict[str, Any]]:
    if not delta.table_exists(warehouse, JOB_RUNS.name):
        return []
    frame = delta.read_pandas(warehouse, JOB_RUNS.name, version, filters=[("run_id", "=", run_id)])
    return [{k: (list(v.items()) if isinstance(v, dict) else (None if _missing(v) else v)) for k, v in r.items()}
            for r in frame.to_dict("records")]


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, (list, dict, str)) and pd.isna(value))


def _save(warehouse: str, run: JobRun, *, first: bool) -> None:
    from epm_spark.errors import ConcurrentWriteError

    if first:
        delta.write_pandas(warehouse, JOB_RUNS.name, _table([run.row()]), mode="append")
        return
    for attempt in range(_COMMIT_TRIES):
        # Read and replace the run's rows against one version: a commit between the two (another job
        # of the run recording itself) fails this one, which then reads again; no row is lost.
        version = delta.table_version(warehouse, JOB_RUNS.name)
        rows = [r for r in _run_rows(warehouse, run.run_id, version) if r["attempt_id"] != run.attempt_id]
        try:
            delta.write_pandas(warehouse, JOB_RUNS.name, _table([*rows, run.row()]), mode="replace",
                               partition={"run_id": run.run_id}, based_on=version)
            return
        except ConcurrentWriteError:
            time.sleep(0.05 * 2 ** attempt)
    raise RuntimeError(f"job_runs: could not record attempt {run.attempt_id} of run {run.run_id}")


def unfinished_attempts(warehouse: str, run_id: str, job: str, step: str | None = None) -> list[dict[str, Any]]:
    """Earlier attempts of ``job`` (and ``step``) in ``run_id`` still marked running."""
    return [r for r in _run_rows(warehouse, run_id)
            if r["job"] == job and r["status"] == "running" and (step is None or r["step"] == step)]


def succeeded_steps(warehouse: str, run_id: str) -> set[str]:
    """The nightly steps of ``run_id`` that some attempt finished."""
    return {r["step"] for r in _run_rows(warehouse, run_id) if r["step"] and r["status"] == "succeeded"}


def _alive(row: dict[str, Any]) -> bool:
    if row["host"] != socket.gethostname():
        return False
    try:
        os.kill(int(row["pid"]), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True


@contextmanager
def recorded(settings: Settings, job: str, *, run_id: str, arguments: dict[str, Any],
             step: str | None = None) -> Iterator[JobRun]:
    """Record one attempt of ``job`` in ``job_runs`` around the block (see the module docstring)."""
    from epm_spark.errors import EpmError

    check_partition_value("run_id", run_id)
    warehouse = settings.warehouse
    run = JobRun(run_id, job, arguments, step)
    for old in unfinished_attempts(warehouse, run_id, job, step):
        state = ("is still running" if _alive(old) else
                 "never finished (the process was killed); its tables keep their last committed versions")
        log.warning("job_runs: an earlier %s attempt of run %s (attempt %s, started %s on %s, pid %s) %s",
                    job, run_id, old["attempt_id"], old["started_at"], old["host"], old["pid"], state)
    _save(warehouse, run, first=True)
    token = _CURRENT.set(run)
    try:
        with delta.observe_commits(run.commit):
            yield run
    except BaseException as exc:
        run.status, run.finished_at = "failed", _now()
        run.error = "interrupted" if isinstance(exc, KeyboardInterrupt) else (
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        if not isinstance(exc, EpmError) and not isinstance(exc, KeyboardInterrupt):
            run.error = f"{type(exc).__name__}: {run.error}"
        try:
            _save(warehouse, run, first=False)
        except Exception as record_error:  # the job's own error is the one to report
            log.warning("job_runs: could not record the failure of %s: %s", job, record_error)
        raise
    finally:
        _CURRENT.reset(token)
    run.status, run.finished_at = "succeeded", _now()
    _save(warehouse, run, first=False)


def observe(report: Any) -> None:
    """Give the job's report to the attempt being recorded, if any (see :meth:`JobRun.observe`)."""
    run = _CURRENT.get()
    if run is not None:
        run.observe(report)


def read_runs(warehouse: str, last: int | None = None, run_id: str | None = None) -> pd.DataFrame:
    """Attempts, newest first."""
    if not delta.table_exists(warehouse, JOB_RUNS.name):
        return pd.DataFrame(columns=JOB_RUNS.columns)
    frame = delta.read_pandas(warehouse, JOB_RUNS.name,
                              filters=[("run_id", "=", run_id)] if run_id else None)
    frame = frame.sort_values("started_at", ascending=False, kind="stable")
    return (frame.head(last) if last else frame).reset_index(drop=True)


def format_runs(frame: pd.DataFrame) -> str:
    """One line per attempt: when, what, status, seconds, rows written, error."""
    lines = []
    for r in frame.to_dict("records"):
        started = pd.Timestamp(r["started_at"]).strftime("%Y-%m-%d %H:%M:%S")
        if _missing(r["finished_at"]):
            took = "killed or running" if r["status"] == "running" else "-"
        else:
            took = f"{(pd.Timestamp(r['finished_at']) - pd.Timestamp(r['started_at'])).total_seconds():.1f} s"
        what = r["job"] + (f" [{r['step']}]" if not _missing(r["step"]) else "")
        written = ", ".join(f"{t} {n:,}" for t, n in (r["rows_written"] or {}).items()) or "-"
        line = f"{started}  {r['run_id']:<12} {what:<34} {r['status']:<9} {took:>18}  wrote {written}"
        if not _missing(r["error"]):
            line += f"  error: {r['error']}"
        lines.append(line)
    return "\n".join(lines) if lines else "no job runs recorded"
