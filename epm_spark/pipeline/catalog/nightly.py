"""The nightly run, step after step: ingest, embed, block, match, dedup, price-match, and, where
the plan asks for it, vacuum.

    epm-spark nightly --plan conf/nightly.yaml [--run-id 2026-11-23] [--force]

    plan = load_plan("conf/nightly.yaml")
    report = run_nightly(spark, settings, plan, run_id="2026-11-23")

Each step is the same job function the CLI verb calls, so a nightly run and a person
running the verbs one by one write the same tables. Every step is recorded in
``job_runs`` with its step name (``ingest:ours``, ``match:ours-competitor_a``, ...); a
re-run with the same run id skips the steps an earlier attempt finished and redoes the
rest, so a night killed during ``match`` resumes at ``match``. The first failing step
stops the night with one line naming it.

``vacuum`` (last, only when the plan's ``steps`` name it) removes the files every table's
retention lets go (:mod:`epm_spark.io.maintenance`): the rows earlier nights replaced and the
files of killed writes, once older than 168 hours unless a table says otherwise. It is not a
default step because it works on local and mounted warehouses only; a plan naming it on an
object store is refused before the night starts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from epm_spark.config import Settings, from_dict, read_yaml_mapping
from epm_spark.errors import ConfigError, EpmError, InputError
from epm_spark.io.maintenance import VacuumResult, check_vacuumable, vacuum_warehouse
from epm_spark.io.schemas import check_partition_value

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["DEFAULT_STEPS", "Export", "NightlyPlan", "NightlyReport", "NightlyStepError", "STEPS", "VacuumReport",
           "check_plan", "load_plan", "run_nightly"]

log = logging.getLogger(__name__)

STEPS = ("ingest", "embed", "block", "match", "dedup", "price-match", "vacuum")
DEFAULT_STEPS = STEPS[:-1]
Step = Literal["ingest", "embed", "block", "match", "dedup", "price-match", "vacuum"]


class NightlyStepError(EpmError):
    """A step of the night failed; the message names the step."""


@dataclass(frozen=True)
class Export:
    """One catalog export as `epm-spark ingest` reads it (a relative path is from the working directory)."""

    path: str
    column_map: dict[str, str] | None = None
    currency: str | None = None
    format: Literal["csv", "parquet", "json", "delta"] | None = None


@dataclass
class NightlyPlan:
    """What a night runs: the exports (ours and the competitors'), the matcher, k, the steps."""

    exports: dict[str, Export] = field(default_factory=dict)
    ours: str = "ours"
    # Matcher folder (default: match.model); neighbours per listing (default: block.k).
    model: str | None = None
    k: int | None = None
    explain: Literal["band", "all", "none"] | None = None
    steps: list[Step] = field(default_factory=lambda: list(DEFAULT_STEPS))

    def __post_init__(self) -> None:
        if self.ours not in self.exports:
            raise ConfigError(f"ours: no export for our catalog {self.ours!r}; exports: "
                              f"{', '.join(self.exports) or 'none'}")
        for source in self.exports:
            try:
                check_partition_value("source", source)
            except InputError as exc:
                raise ConfigError(f"exports: {exc}") from None
        if self.k is not None and self.k <= 0:
            raise ConfigError(f"k must be > 0, got {self.k}")
        if not self.steps:
            raise ConfigError("steps: name at least one of " + ", ".join(STEPS))

    @property
    def competitors(self) -> list[str]:
        return [s for s in self.exports if s != self.ours]


def load_plan(path: str | Path) -> NightlyPlan:
    """Read a plan file strictly: an unknown key or a wrong type is an error naming the file and key."""
    path = Path(path)
    data = read_yaml_mapping(path, "nightly plan")
    try:
        return from_dict(NightlyPlan, data)
    except ConfigError as exc:
        raise ConfigError(f"nightly plan {path}: {exc}") from None


@dataclass
class NightlyReport:
    run_id: str
    reports: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"nightly run {self.run_id}"]
        if self.skipped:
            parts.append(f"  finished by an earlier attempt, not redone: {', '.join(self.skipped)}")
        for step, report in self.reports.items():
            parts.append(report.summary() if hasattr(report, "summary") else f"{step}: {report}")
        total = sum(self.seconds.values())
        parts.append("time per step: " + ", ".join(f"{k} {v:.0f} s" for k, v in self.seconds.items())
                     + f" (total {total:.0f} s)")
        return "\n".join(parts)


@dataclass(frozen=True)
class VacuumReport:
    """The night's vacuum of every table, each past its own retention."""

    tables: tuple[VacuumResult, ...]

    def summary(self) -> str:
        files = sum(len(r.files) for r in self.tables)
        size = sum(r.bytes for r in self.tables)
        touched = sum(1 for r in self.tables if r.files)
        return (f"vacuum: removed {files} files ({size / 2**20:.1f} MiB) from {touched} of {len(self.tables)} "
                f"tables (files past each table's retention)")


def vacuum(spark: SparkSession, settings: Settings, *, run_id: str) -> VacuumReport:
    """The ``vacuum`` step (Spark and the run id are the steps' common arguments; it needs neither)."""
    return VacuumReport(tuple(vacuum_warehouse(settings.warehouse)))


def _steps(plan: NightlyPlan) -> list[tuple[str, str, Callable[..., Any], dict[str, Any]]]:
    """``(step name, job, job function, keyword arguments)`` in run order."""
    from epm_spark.pipeline.catalog.block import block
    from epm_spark.pipeline.catalog.dedup import dedup
    from epm_spark.pipeline.catalog.embed import embed
    from epm_spark.pipeline.catalog.ingest import ingest
    from epm_spark.pipeline.catalog.match import match
    from epm_spark.pipeline.catalog.price_match import price_match

    ours, competitors = plan.ours, plan.competitors
    pairs = [(ours, ours)] + [(ours, c) for c in competitors]
    steps: list[tuple[str, str, Callable[..., Any], dict[str, Any]]] = []
    for source, export in plan.exports.items():
        steps.append((f"ingest:{source}", "ingest", ingest,
                      dict(input_path=export.path, source=source, fmt=export.format, column_map=export.column_map,
                           currency=export.currency)))
    steps.append(("embed", "embed", embed, dict(sources=list(plan.exports))))
    for left, right in pairs:
        steps.append((f"block:{left}-{right}", "block", block, dict(left=left, right=right, k=plan.k)))
    for left, right in pairs:
        steps.append((f"match:{left}-{right}", "match", match,
                      dict(left=left, right=right, model=plan.model, explain=plan.explain)))
    steps.append((f"dedup:{ours}", "dedup", dedup, dict(source=ours)))
    if competitors:
        steps.append(("price-match", "price-match", price_match, dict(ours=ours, competitors=competitors)))
    steps.append(("vacuum", "vacuum", vacuum, {}))
    return [s for s in steps if s[1] in plan.steps]


def check_plan(settings: Settings, plan: NightlyPlan) -> None:
    """Refuse a missing export, an unknown currency, a mistyped encoder or matcher, a vacuum the
    warehouse cannot run, before the first step: not hours later at its own, and not after the
    exports before it were ingested."""
    from epm_spark.models.encoder.model import resolve_backbone
    from epm_spark.pipeline.catalog.ingest import check_export
    from epm_spark.pipeline.catalog.match import resolve_matcher_model

    if "vacuum" in plan.steps:
        try:
            check_vacuumable(settings.warehouse)
        except InputError as exc:
            raise ConfigError(f"steps: {exc}; or leave vacuum out of the plan's steps") from None
    if "ingest" in plan.steps:
        for source, export in plan.exports.items():
            try:
                check_export(settings, export.path, export.format, export.currency, export.column_map)
            except InputError as exc:
                raise ConfigError(f"exports: {source}: {exc}") from None
    if "embed" in plan.steps:
        try:
            resolve_backbone(settings.encoder.backbone)
        except InputError as exc:
            raise ConfigError(f"encoder.backbone: {exc}") from None
    if "match" in plan.steps:
        try:
            resolve_matcher_model(settings, plan.model)
        except InputError as exc:
            raise ConfigError(f"model: {exc}") from None


def run_nightly(spark: SparkSession, settings: Settings, plan: NightlyPlan, *, run_id: str,
                force: bool = False) -> NightlyReport:
    """Run the plan's steps for ``run_id``; steps an earlier attempt of the run finished are skipped
    unless ``force``."""
    from epm_spark.pipeline.runs import recorded, succeeded_steps

    check_partition_value("run_id", run_id)
    check_plan(settings, plan)
    night = NightlyReport(run_id)
    arguments = {"plan": repr(plan), "force": force}
    with recorded(settings, "nightly", run_id=run_id, arguments=arguments) as nightly_run:
        done = set() if force else succeeded_steps(settings.warehouse, run_id)
        for name, job, fn, kwargs in _steps(plan):
            if name in done:
                night.skipped.append(name)
                continue
            print(f"\n-- {name}", flush=True)
            start = time.monotonic()
            try:
                with recorded(settings, job, run_id=run_id, arguments=kwargs, step=name) as step_run:
                    result = fn(spark, settings, run_id=run_id, **kwargs)
                    step_run.observe(result)
            except EpmError as exc:
                raise NightlyStepError(f"step {name} failed: {exc}") from exc
            except Exception as exc:
                log.exception("nightly step %s failed", name)
                raise NightlyStepError(f"step {name} failed: {type(exc).__name__}: {exc}") from exc
            finally:
                seconds = round(time.monotonic() - start, 3)
                night.seconds[name] = seconds
                nightly_run.stage_seconds[name] = seconds
            night.reports[name] = result
            print(result.summary(), flush=True)
    if night.skipped:
        log.info("nightly %s: skipped %d steps finished earlier: %s", run_id, len(night.skipped),
                 ", ".join(night.skipped))
    return night
