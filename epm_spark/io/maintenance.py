"""Keeping a warehouse's folders to the files its tables use: ``VACUUM``.

Nightly jobs replace their run's partitions, so every night leaves the files of the rows it
replaced: out of the table's current version, but kept so that readers can still open recent
versions (time travel, a read that started before the commit). A job killed before its commit
(SIGKILL, a lost machine) leaves the Parquet files it had written and no log entry: no reader
ever sees them, and nothing else removes them.

:func:`vacuum_warehouse` removes both kinds once they are older than the retention period, with delta-rs's
full vacuum: files the log removed more than ``retain_hours`` ago, and files the log never
named whose modification time is older than that. The retention guards the files of a write in
progress (written, not yet committed) as much as old versions, so it may not go below the
table's ``delta.deletedFileRetentionDuration`` (7 days unless the table says otherwise).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from epm_spark.errors import InputError
from epm_spark.io.delta import _open, _remote, _storage, list_tables, table_uri

__all__ = ["VacuumResult", "check_vacuumable", "vacuum_warehouse"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VacuumResult:
    table: str
    files: tuple[str, ...]  # paths relative to the table folder
    bytes: int
    dry_run: bool
    version: int  # the table's version after the vacuum (a vacuum commits START/END entries)

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        return f"{self.table:<22} {verb} {len(self.files):>5} files, {self.bytes / 2**20:>9.1f} MiB"


def vacuum_warehouse(warehouse: str | os.PathLike[str], tables: Sequence[str] = (), *,
                     retain_hours: int | None = None, dry_run: bool = False) -> list[VacuumResult]:
    """Remove the files of ``tables`` (default: every table of the warehouse) that no version
    within ``retain_hours`` (default: each table's retention) reads.

    Every table is checked (its name, the retention, the files to remove) before any file of any
    table is removed: a typo or a refused retention leaves the whole warehouse as it was.
    """
    check_vacuumable(warehouse)
    if retain_hours is not None and retain_hours < 0:
        raise InputError(f"--retain-hours must be >= 0, got {retain_hours}")
    names = list(dict.fromkeys(tables)) or list_tables(warehouse)
    opened = {name: _open(warehouse, name) for name in names}
    uris = {name: table_uri(warehouse, name) for name in names}
    planned = {name: _plan(name, dt, uris[name], retain_hours) for name, dt in opened.items()}
    results = []
    for name, dt in opened.items():
        files, uri = planned[name], uris[name]
        size = sum(_size(Path(uri) / f) for f in files)
        version = dt.version()
        if files and not dry_run:
            with _storage(name, uri):
                removed = dt.vacuum(retention_hours=retain_hours, dry_run=False, full=True)
            # Files that turned old enough between the plan and now went too: report what did.
            files = sorted(set(files) | set(_relative(removed, uri)))
            log.info("vacuum: %s: removed %d files (%.1f MiB)", name, len(files), size / 2**20)
            version = _open(warehouse, name).version()  # the vacuum's own commits
        results.append(VacuumResult(name, tuple(files), size, dry_run, version))
    return results


def check_vacuumable(warehouse: str | os.PathLike[str]) -> None:
    """Refuse an object-store warehouse: delta-rs's full vacuum lists local folders."""
    if _remote(warehouse):
        raise InputError(f"vacuum works on local or mounted warehouses; {warehouse} is an object store: "
                         f"run `VACUUM delta.`<path>`` in Spark with the Delta jars")


def _plan(table: str, dt, uri: str, retain_hours: int | None) -> list[str]:
    """What a vacuum of ``dt`` would remove (a dry run: it refuses a retention below the table's)."""
    try:
        files = dt.vacuum(retention_hours=retain_hours, dry_run=True, full=True)
    except Exception as exc:
        if "retention" in str(exc).lower():
            raise InputError(f"table '{table}': --retain-hours {retain_hours} is below the table's retention "
                             f"(delta.deletedFileRetentionDuration, 168 hours unless set); files of a write "
                             f"in progress and of recent versions are kept that long") from None
        raise
    return sorted(_relative(files, uri))


def _relative(files: Sequence[str], uri: str) -> list[str]:
    return [os.path.relpath(f, uri) if os.path.isabs(f) else f for f in files]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
