"""Delta tables of the warehouse: one folder per table, every job's reads and writes.

Two engines, one API:

* **native**: ``delta-spark`` when the session has the Delta jars (Databricks, EMR,
  Dataproc with Delta): ``df.write.format("delta")`` with ``replaceWhere`` and
  ``txnAppId``/``txnVersion``.
* **delta-rs** (the embedded default, no jars needed): Spark tasks write Parquet files
  straight into the table folder in parallel (``mapInArrow``); the driver then commits
  the list of files in one Delta transaction. Rows never travel to the driver. Files of
  a write that fails before its commit are not in the log, so readers never see them,
  and the driver deletes them.

Write modes:

* ``overwrite``: the table becomes exactly the written rows.
* ``replace``: the rows of one partition (e.g. ``{"source": "ours"}`` or
  ``{"run_id": "2026-11-23"}``) are replaced; other partitions are untouched. A list
  of values (``{"benchmark": ["a", "b"]}``) replaces several partitions in one commit.
  Re-running a job with the same partition gives the same table, never duplicates.
* ``append``: rows are added; with a ``run_id`` the commit records a Delta application
  transaction ``epm-spark/<table>/<job>/<run_id>``, and a second append of the same run
  is skipped.

Concurrent jobs: a commit that lost a race is committed again on top of the winner when the winner
touched other partitions only; when it touched the same rows the write fails with
:class:`ConcurrentWriteError` and nothing of it is applied. A storage refusing files (read-only,
full) fails the write with :class:`WarehouseWriteError` naming the table; its files are removed.

Reads come from the table's current snapshot, or a given version, via its file list.
Small driver-side tables (training sets, review queues) use :func:`read_pandas` and
:func:`write_pandas`, which go through the same commit code without Spark.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from epm_spark.errors import (ConcurrentWriteError, InputError, TableNotFoundError, WarehouseWriteError,
                              worker_errors)
from epm_spark.io.schemas import TABLES, TableSpec, check_partition_value, spec as table_spec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "WriteMode",
    "CommitInfo",
    "table_uri",
    "table_exists",
    "table_version",
    "read",
    "read_path",
    "read_pandas",
    "write",
    "write_pandas",
    "describe_warehouse",
    "list_tables",
    "uses_native_delta",
    "observe_commits",
]

log = logging.getLogger(__name__)

WriteMode = Literal["append", "overwrite", "replace"]

# What each write task reports back to the driver: one row per Parquet file it wrote, or one row
# holding the storage error that stopped it.
_STAGED = pa.schema([
    ("path", pa.string()),
    ("size", pa.int64()),
    ("partition_values", pa.string()),
    ("stats", pa.string()),
    ("rows", pa.int64()),
    ("error", pa.string()),
])


@dataclass(frozen=True)
class CommitInfo:
    table: str
    version: int | None
    rows: int
    files: int
    mode: str
    skipped: bool = False

    def __str__(self) -> str:
        if self.skipped:
            return f"{self.table}: already committed for this run, nothing written"
        if self.rows < 0:  # delta-spark does not say how many rows it wrote
            return f"{self.table}: {self.mode} via delta-spark -> version {self.version}"
        return f"{self.table}: {self.mode} {self.rows:,} rows in {self.files} files -> version {self.version}"


# Who wants to hear of each commit: job_runs bookkeeping counts rows and versions per table
# without every job reporting them itself.
_LISTENERS: ContextVar[tuple[Callable[[CommitInfo], None], ...]] = ContextVar("epm_commit_listeners", default=())


@contextmanager
def observe_commits(listener: Callable[[CommitInfo], None]) -> Iterator[None]:
    """Call ``listener`` with the :class:`CommitInfo` of every write committed inside the block."""
    token = _LISTENERS.set((*_LISTENERS.get(), listener))
    try:
        yield
    finally:
        _LISTENERS.reset(token)


def _committed(info: CommitInfo) -> CommitInfo:
    log.info("%s", info)
    for listener in _LISTENERS.get():
        listener(info)
    return info


# ----------------------------------------------------------------------------- paths


def _remote(warehouse: str | os.PathLike[str]) -> bool:
    return "://" in str(warehouse) and not str(warehouse).startswith("file://")


def table_uri(warehouse: str | os.PathLike[str], table: str) -> str:
    if _remote(warehouse):
        return f"{str(warehouse).rstrip('/')}/{table}"
    return str(Path(str(warehouse).removeprefix("file://")).resolve() / table)


# A committed version: a numbered log entry or a checkpoint. A first commit killed half-way leaves a
# log folder holding at most delta-rs's temporary file, which is no table yet.
_COMMITTED = re.compile(r"\d{20}\.(json|checkpoint\.parquet|checkpoint\.\d+\.\d+\.parquet)$")


def _has_commit(log_dir: Path) -> bool:
    try:
        return any(_COMMITTED.match(entry.name) for entry in os.scandir(log_dir))
    except (FileNotFoundError, NotADirectoryError):
        return False


def table_exists(warehouse: str | os.PathLike[str], table: str) -> bool:
    if _remote(warehouse):
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(table_uri(warehouse, table))
    return _has_commit(Path(table_uri(warehouse, table)) / "_delta_log")


def warehouse_exists(warehouse: str | os.PathLike[str]) -> bool:
    """Whether a local warehouse folder is there; an object store has no folder, so it always is."""
    return _remote(warehouse) or Path(str(warehouse).removeprefix("file://")).is_dir()


def list_tables(warehouse: str | os.PathLike[str]) -> list[str]:
    """The Delta tables of a warehouse: every folder with a committed log (local), the known tables (object stores)."""
    if _remote(warehouse):
        return [name for name in TABLES if table_exists(warehouse, name)]
    root = Path(str(warehouse).removeprefix("file://"))
    return sorted(p.parent.name for p in root.glob("*/_delta_log") if _has_commit(p))


def _local_writer_check(warehouse: str | os.PathLike[str]) -> None:
    if _remote(warehouse):
        raise InputError(
            f"the delta-rs writer of epm-spark writes to local or mounted warehouses; {warehouse} is an "
            "object store: use the Delta jars (delta.engine=native) or mount the bucket"
        )


def _open(warehouse: str | os.PathLike[str], table: str, version: int | None = None):
    from deltalake import DeltaTable

    uri = table_uri(warehouse, table)
    if not table_exists(warehouse, table):
        existing = list_tables(warehouse)
        hint = _CREATED_BY.get(table, "")
        raise TableNotFoundError(
            f"table '{table}' does not exist in warehouse {warehouse}"
            + (f" (it is written by `epm-spark {hint}`)" if hint else "")
            + (f"; tables there: {', '.join(existing)}" if existing else "; the warehouse is empty")
        )
    try:
        return DeltaTable(uri, version=version)
    except Exception as exc:  # delta-rs raises several types for a version that is not there
        if version is not None:
            raise InputError(f"table '{table}' has no version {version}: {exc}") from None
        raise


_CREATED_BY = {
    "products": "ingest, load-benchmark or generate",
    "products_quarantine": "ingest",
    "labelled_pairs": "load-benchmark or generate",
    "embeddings": "embed",
    "candidates": "block",
    "matches": "match",
    "clusters": "dedup",
    "cluster_changes": "dedup",
    "price_comparisons": "price-match",
}


def table_version(warehouse: str | os.PathLike[str], table: str) -> int | None:
    return _open(warehouse, table).version() if table_exists(warehouse, table) else None


def partition_values(warehouse: str | os.PathLike[str], table: str, column: str) -> set[str]:
    """The values of partition column ``column`` that hold rows now, from the table's log (no data is
    read): which sources ``products`` has, before a job reads a file of them."""
    return {p[column] for p in _open(warehouse, table).partitions()}


def _check_readable(dt, table: str) -> None:
    protocol = dt.protocol()
    features = set(protocol.reader_features or [])
    unsupported = features & {"deletionVectors", "columnMapping", "v2Checkpoint"}
    if unsupported:
        raise InputError(
            f"table '{table}' uses Delta reader features {sorted(unsupported)}, which the delta-rs "
            "reader of this suite does not apply; run with the Delta jars (delta.engine=native)"
        )


# ----------------------------------------------------------------------------- reads


def uses_native_delta(spark: SparkSession, engine: str = "auto") -> bool:
    """Whether writes and reads go through delta-spark (the session has the Delta jars)."""
    if engine == "delta-rs":
        return False
    has_jars = "DeltaSparkSessionExtension" in spark.conf.get("spark.sql.extensions", "")
    if engine == "native" and not has_jars:
        raise InputError(
            "delta.engine=native but the Spark session has no Delta extension; set "
            "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension (cluster) or use delta.engine=auto"
        )
    return has_jars


def read(spark: SparkSession, warehouse: str, table: str, version: int | None = None,
         engine: str = "auto") -> DataFrame:
    """The table's snapshot (current, or ``version``) as a Spark DataFrame in its declared column order."""
    spec = table_spec(table) if table in TABLES else None
    uri = table_uri(warehouse, table)
    if uses_native_delta(spark, engine):
        if not table_exists(warehouse, table):
            _open(warehouse, table)  # raises the clear not-found error
        reader = spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        df = reader.load(uri)
        return df.select(*spec.columns) if spec else df
    dt = _open(warehouse, table, version)
    return _read_snapshot(spark, dt, table, spec)


def read_path(spark: SparkSession, uri: str, version: int | None = None) -> DataFrame:
    """Any Delta table by its path (e.g. an input catalog), through its snapshot's file list."""
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(uri):
        raise InputError(f"{uri} is not a Delta table (no _delta_log)")
    return _read_snapshot(spark, DeltaTable(uri, version=version), uri, None)


def _read_snapshot(spark: SparkSession, dt, name: str, spec: TableSpec | None) -> DataFrame:
    from epm_spark.io.schemas import to_spark_schema

    _check_readable(dt, name)
    arrow_schema = spec.schema if spec else pa.schema(dt.schema().to_arrow())
    spark_schema = to_spark_schema(arrow_schema)
    files = dt.file_uris()
    if not files:
        return spark.createDataFrame([], spark_schema)
    # Hive-style folders (source=ours/) give Spark the partition values, typed by the schema.
    df = spark.read.schema(spark_schema).option("basePath", _as_uri(dt.table_uri)).parquet(*files)
    return df.select(*arrow_schema.names)


def _as_uri(path: str) -> str:
    return path if "://" in path else Path(path).resolve().as_uri()


def read_pandas(warehouse: str | os.PathLike[str], table: str, version: int | None = None,
                columns: list[str] | None = None, filters: list[tuple] | None = None) -> pd.DataFrame:
    """A small table, or a filtered part of one, as pandas via delta-rs (no Spark, no JVM).

    ``filters`` are DNF tuples such as ``[("benchmark", "=", "abt_buy")]``.
    """
    dt = _open(warehouse, table, version)
    _check_readable(dt, table)
    expr = None
    if filters:
        import pyarrow.dataset as ds

        for col, op, value in filters:
            term = {"=": ds.field(col) == value, "!=": ds.field(col) != value,
                    "in": ds.field(col).isin(list(value))}.get(op)
            if term is None:
                raise ValueError(f"unsupported filter operator {op!r}")
            expr = term if expr is None else expr & term
    result = dt.to_pyarrow_dataset().to_table(columns=columns, filter=expr)
    if columns is None and table in TABLES:
        result = result.select(table_spec(table).columns)
    return result.to_pandas(maps_as_pydicts="strict")


# ----------------------------------------------------------------------------- writes


def _data_schema(spec: TableSpec) -> pa.Schema:
    """Partition columns live in folder names and the log, not in the Parquet files."""
    return pa.schema([f for f in spec.schema if f.name not in spec.partition_by])


def _file_stats(table: pa.Table) -> str:
    stats: dict[str, Any] = {"numRecords": table.num_rows, "nullCount": {}, "minValues": {}, "maxValues": {}}
    for field_ in table.schema:
        column = table.column(field_.name)
        stats["nullCount"][field_.name] = column.null_count
        typ = field_.type
        if not (pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_string(typ)):
            continue
        if column.null_count == len(column):
            continue
        mm = pc.min_max(column)
        lo, hi = mm["min"].as_py(), mm["max"].as_py()
        if isinstance(lo, float) and (lo != lo or hi != hi):  # NaN makes min/max meaningless
            continue
        if isinstance(lo, str) and (len(lo) > 64 or len(hi) > 64):
            continue
        stats["minValues"][field_.name] = lo
        stats["maxValues"][field_.name] = hi
    return json.dumps(stats)


class _FileWriter:
    """Writes Arrow batches of one table into Parquet files under ``uri``; one writer per task."""

    def __init__(self, uri: str, spec: TableSpec, write_id: str, max_rows: int,
                 expect: dict[str, tuple[str, ...]] | None):
        self.uri, self.spec, self.write_id, self.max_rows = uri, spec, write_id, max_rows
        self.expect = expect or {}
        self.data_schema = _data_schema(spec)
        self.pending: dict[tuple, list[pa.Table]] = {}
        self.pending_rows: dict[tuple, int] = {}
        self.staged: list[dict[str, Any]] = []

    def add(self, batch: pa.RecordBatch | pa.Table) -> None:
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        if table.num_rows == 0:
            return
        table = _conform(table, self.spec)
        parts = self.spec.partition_by
        if not parts:
            self._buffer((), table)
            return
        keys = table.select(list(parts)).group_by(list(parts)).aggregate([])
        for key in keys.to_pylist():
            mask = None
            for col in parts:
                value = key[col]
                cond = pc.is_null(table[col]) if value is None else pc.equal(table[col], value)
                mask = cond if mask is None else pc.and_(mask, cond)
            self._buffer(tuple(key[c] for c in parts), table.filter(mask))

    def _buffer(self, key: tuple, table: pa.Table) -> None:
        for col, value in zip(self.spec.partition_by, key):
            if value is None:
                raise InputError(f"table '{self.spec.name}': partition column '{col}' is null in some rows")
            check_partition_value(col, value)
            if col in self.expect and str(value) not in self.expect[col]:
                raise InputError(
                    f"table '{self.spec.name}': replacing {col}={_shown(self.expect[col])} but a row has {col}={value!r}"
                )
        self.pending.setdefault(key, []).append(table)
        self.pending_rows[key] = self.pending_rows.get(key, 0) + table.num_rows
        if self.pending_rows[key] >= self.max_rows:
            self._flush(key)

    def _flush(self, key: tuple) -> None:
        tables = self.pending.pop(key, [])
        self.pending_rows.pop(key, None)
        if not tables:
            return
        data = pa.concat_tables(tables).select(self.data_schema.names).cast(self.data_schema)
        folder = "/".join(f"{c}={v}" for c, v in zip(self.spec.partition_by, key))
        name = f"part-{self.write_id}-{uuid.uuid4().hex[:12]}.parquet"
        rel = f"{folder}/{name}" if folder else name
        full = os.path.join(self.uri, rel)
        with _storage(self.spec.name, self.uri):
            os.makedirs(os.path.dirname(full), exist_ok=True)
            pq.write_table(data, full, compression="zstd")
        self.staged.append({
            "path": rel,
            "size": os.path.getsize(full),
            "partition_values": json.dumps(dict(zip(self.spec.partition_by, map(str, key)))),
            "stats": _file_stats(data),
            "rows": data.num_rows,
        })

    def close(self) -> list[dict[str, Any]]:
        for key in list(self.pending):
            self._flush(key)
        return self.staged


def _conform(table: pa.Table, spec: TableSpec) -> pa.Table:
    """Select and cast the spec's columns; name what is missing or null that may not be."""
    missing = [c for c in spec.columns if c not in table.column_names]
    if missing:
        raise InputError(f"table '{spec.name}': rows lack columns {missing}")
    table = table.select(spec.columns)
    try:
        table = table.cast(spec.schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise InputError(f"table '{spec.name}': rows do not fit the declared schema: {exc}") from None
    for col in spec.required:
        nulls = table.column(col).null_count
        if nulls:
            raise InputError(f"table '{spec.name}': {nulls} rows have no {col}")
    return table


def _delete_staged(uri: str, write_id: str) -> int:
    """Remove the files of a write that will not be committed (they are invisible, but not free)."""
    removed = 0
    for path in Path(uri).rglob(f"part-{write_id}-*.parquet"):
        try:
            path.unlink(missing_ok=True)
            removed += 1
        except OSError as exc:  # the write's own error is the one to report
            log.warning("could not remove staged file %s: %s", path, exc)
    return removed


# Errors of the storage under the warehouse, as Python (`[Errno 28] ...`), Arrow (`[errno 28]`) or
# delta-rs (`... (os error 28)`) report them: the job stops with one line naming the table.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG}
_ERRNO_TEXT = re.compile(r"\[[Ee]rrno (\d+)\]|\(os error (\d+)\)")


def _storage_errno(exc: BaseException) -> int | None:
    if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
        return exc.errno
    for m in _ERRNO_TEXT.finditer(str(exc)):
        code = int(m.group(1) or m.group(2))
        if code in _STORAGE_ERRNOS:
            return code
    return None


@contextmanager
def _storage(table: str, uri: str) -> Iterator[None]:
    """Raise a storage failure (read-only, full, no permission) as one line naming the table."""
    try:
        yield
    except Exception as exc:
        code = _storage_errno(exc)
        if code is None:
            raise
        raise WarehouseWriteError(f"table '{table}': cannot write to {uri}: {os.strerror(code)}; "
                                  "nothing was committed, the table keeps its last version") from None


def _commit_clearly(uri: str, spec: TableSpec, staged: list[dict[str, Any]], mode: WriteMode,
                    partition: dict[str, tuple[str, ...]] | None, run_id: str | None, job: str | None,
                    based_on: int | None = None) -> int:
    """:func:`_commit`, with a lost commit race as one line (the job's rows may depend on what it read)."""
    from deltalake.exceptions import CommitFailedError

    try:
        with _storage(spec.name, uri):
            return _commit(uri, spec, staged, mode, partition, run_id, job, based_on)
    except CommitFailedError as exc:
        raise _conflict(spec.name, str(exc).splitlines()[0]) from None


def _conflict(table: str, detail: str) -> ConcurrentWriteError:
    return ConcurrentWriteError(f"table '{table}': another job committed to the same rows at the same time, so "
                                f"this write was not applied ({detail}); run the job again")


def _app_id(table: str, job: str | None, run_id: str) -> str:
    return f"epm-spark/{table}/{job or 'write'}/{run_id}"


def _shown(values: tuple[str, ...]) -> str:
    return repr(values[0]) if len(values) == 1 else repr(list(values))


def _commit(uri: str, spec: TableSpec, staged: list[dict[str, Any]], mode: WriteMode,
            partition: dict[str, tuple[str, ...]] | None, run_id: str | None, job: str | None,
            based_on: int | None = None) -> int:
    """Commit the staged files; ``based_on``: the version the rows were computed from (default: the latest)."""
    from deltalake import DeltaTable, Schema
    from deltalake.exceptions import CommitFailedError
    from deltalake.transaction import AddAction, CommitProperties, Transaction, create_table_with_add_actions

    now = int(time.time() * 1000)
    adds = [AddAction(s["path"], int(s["size"]), json.loads(s["partition_values"]), now, True, s["stats"])
            for s in staged]
    metadata = {"epm_spark.job": job or "write", "epm_spark.mode": mode}
    if run_id:
        metadata["epm_spark.run_id"] = run_id
    txns = [Transaction(_app_id(spec.name, job, run_id), 0, now)] if run_id else None
    # A read-modify-write must not be rebased by delta-rs itself: its conflict check lets through rows
    # another commit added to a partition that was empty at `based_on`, which this write then replaces
    # without having read them (two first verdicts on one pair would both land). `_touched` decides.
    props = CommitProperties(custom_metadata=metadata, app_transactions=txns,
                             max_commit_retries=0 if based_on is not None else None)
    filters = [(c, "=", v[0]) if len(v) == 1 else (c, "in", list(v)) for c, v in (partition or {}).items()] or None
    delta_mode = "append" if mode == "append" else "overwrite"
    base = based_on
    if not DeltaTable.is_deltatable(uri):
        # delta-rs lets two concurrent creates both commit (the second as version 1, its rows added to
        # the first's), so one process at a time creates; the lock dies with its process.
        with open(Path(uri) / _CREATE_LOCK, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not DeltaTable.is_deltatable(uri):
                create_table_with_add_actions(uri, Schema.from_arrow(spec.schema), adds, mode="error",
                                              partition_by=list(spec.partition_by) or None, name=spec.name,
                                              description=spec.description, commit_properties=props)
                return 0
        # Another job created it meanwhile: this write goes on top, as if it had come second.
        base = None
    for attempt in range(_COMMIT_TRIES):
        dt = DeltaTable(uri) if base is None else DeltaTable(uri, version=base)
        _check_schema(dt, spec)
        try:
            dt.create_write_transaction(adds, delta_mode, spec.schema, partition_by=list(spec.partition_by) or None,
                                        partition_filters=filters if mode == "replace" else None,
                                        commit_properties=props)
            return DeltaTable(uri).version()
        except CommitFailedError:
            # delta-rs refuses a partition replace after any concurrent removal, even in another
            # partition; only commits that touched this write's partitions make it wrong.
            if mode != "replace" or attempt == _COMMIT_TRIES - 1 or _touched(uri, dt.version(), partition):
                raise
            log.info("%s: a concurrent commit changed other partitions; committing again on top of it", spec.name)
            base = None
    raise _conflict(spec.name, f"other jobs kept committing first, {_COMMIT_TRIES} tries")


_COMMIT_TRIES = 8
_CREATE_LOCK = ".epm-create.lock"


def _touched(uri: str, since: int, partition: dict[str, tuple[str, ...]]) -> bool:
    """Whether a commit after version ``since`` added or removed rows of ``partition``, or changed the table."""
    log_dir = Path(uri) / "_delta_log"
    version = since + 1
    while (entry := log_dir / f"{version:020d}.json").exists():
        for line in entry.read_text().splitlines():
            action = json.loads(line) if line.strip() else {}
            if "metaData" in action or "protocol" in action:
                return True
            for kind in ("add", "remove"):
                values = (action.get(kind) or {}).get("partitionValues")
                if kind in action and (values is None
                                       or all(values.get(c) in allowed for c, allowed in partition.items())):
                    return True
        version += 1
    return False


def _check_schema(dt, spec: TableSpec) -> None:
    current = pa.schema(dt.schema().to_arrow())
    have = {f.name: f.type for f in current}
    want = {f.name: f.type for f in spec.schema}
    if set(have) != set(want):
        raise InputError(
            f"table '{spec.name}' at {dt.table_uri} has columns {sorted(have)}, but this version of epm-spark "
            f"writes {sorted(want)}; write to a new warehouse or migrate the table"
        )


def _validate_mode(spec: TableSpec, mode: str, partition: dict[str, Any] | None) -> dict[str, tuple[str, ...]] | None:
    if mode not in ("append", "overwrite", "replace"):
        raise InputError(f"unknown write mode {mode!r}; use append, overwrite or replace")
    if mode != "replace":
        if partition:
            raise InputError("a partition is only given with mode='replace'")
        return None
    if not partition:
        raise InputError(f"mode='replace' needs the partition to replace, e.g. {{'{(spec.partition_by or ('?',))[0]}': ...}}")
    unknown = set(partition) - set(spec.partition_by)
    if unknown:
        raise InputError(
            f"table '{spec.name}' is partitioned by {list(spec.partition_by)}, not {sorted(unknown)}"
        )
    expect = {}
    for col, value in partition.items():
        values = value if isinstance(value, (list, tuple, set, frozenset)) else [value]
        if not values:
            raise InputError(f"table '{spec.name}': replacing {col} needs at least one value")
        expect[col] = tuple(sorted({check_partition_value(col, v) for v in values}))
    return expect


def _skip_committed_run(uri: str, spec: TableSpec, mode: str, run_id: str | None,
                        job: str | None) -> CommitInfo | None:
    """The no-op result when this run's append already committed (a re-run after a crash)."""
    if mode != "append" or not run_id:
        return None
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(uri):
        return None
    table = DeltaTable(uri)
    if table.transaction_version(_app_id(spec.name, job, run_id)) is None:
        return None
    log.info("%s: run %s of %s is already committed; skipping the append", spec.name, run_id, job)
    return CommitInfo(spec.name, table.version(), 0, 0, mode, skipped=True)


def _abandon(table: str, uri: str, write_id: str) -> None:
    """Undo a write that failed before its commit: its staged files go, the table is as it was."""
    removed = _delete_staged(uri, write_id)
    log.warning("%s: write failed before its commit; removed %d staged files, table unchanged", table, removed)
    _remove_if_empty(uri)


def write(df: DataFrame, warehouse: str, table: str, mode: WriteMode, *,
          partition: dict[str, Any] | None = None, run_id: str | None = None, job: str | None = None,
          engine: str = "auto", max_rows_per_file: int = 1_000_000) -> CommitInfo:
    """Write a Spark DataFrame to a warehouse table in one commit (see the module docstring)."""
    spec = table_spec(table)
    expect = _validate_mode(spec, mode, partition)
    uri = table_uri(warehouse, table)
    skipped = _skip_committed_run(uri, spec, mode, run_id, job)
    if skipped:
        return skipped
    spark = df.sparkSession
    if uses_native_delta(spark, engine):
        return _write_native(df, uri, spec, mode, expect, run_id, job)

    _local_writer_check(warehouse)
    write_id = uuid.uuid4().hex[:12]
    data_columns = [c for c in spec.columns if c in df.columns]
    missing = [c for c in spec.columns if c not in df.columns]
    if missing:
        raise InputError(f"table '{table}': rows lack columns {missing}")

    def write_task(batches):
        # A full or read-only warehouse is reported as data, not raised: a failed task makes
        # Spark cancel its siblings mid-write, and their Python workers then print tracebacks
        # of broken sockets on the job's stderr, burying the one line that says what happened.
        writer = _FileWriter(uri, spec, write_id, max_rows_per_file, expect)
        try:
            for batch in batches:
                writer.add(batch)
            staged = writer.close()
        except WarehouseWriteError as exc:
            staged = [{"error": str(exc)}]
        if staged:
            yield pa.RecordBatch.from_pylist(staged, schema=_STAGED)

    from epm_spark.io.schemas import to_spark_schema

    try:
        with _storage(table, uri):
            Path(uri).mkdir(parents=True, exist_ok=True)
        with worker_errors():
            rows = df.select(*data_columns).mapInArrow(write_task, to_spark_schema(_STAGED)).collect()
        staged = [r.asDict() for r in rows]
        failed = [s["error"] for s in staged if s["error"]]
        if failed:
            raise WarehouseWriteError(failed[0])
        version = _commit_clearly(uri, spec, staged, mode, expect, run_id, job)
    except BaseException:
        _abandon(table, uri, write_id)
        raise
    return _committed(CommitInfo(table, version, sum(s["rows"] for s in staged), len(staged), mode))


def _remove_if_empty(uri: str) -> None:
    """A first write that failed leaves no folder behind that looks like a table."""
    path = Path(uri)
    if path.is_dir() and not (path / "_delta_log").exists():
        shutil.rmtree(path, ignore_errors=True)


def _write_native(df: DataFrame, uri: str, spec: TableSpec, mode: str, expect: dict[str, tuple[str, ...]] | None,
                  run_id: str | None, job: str | None) -> CommitInfo:
    writer = df.select(*spec.columns).write.format("delta")
    if spec.partition_by:
        writer = writer.partitionBy(*spec.partition_by)
    if mode == "replace":
        predicate = " AND ".join(f"{c} IN ({', '.join(repr(v) for v in values)})" for c, values in expect.items())
        writer = writer.mode("overwrite").option("replaceWhere", predicate)
    else:
        writer = writer.mode(mode)
    if run_id:
        writer = writer.option("txnAppId", _app_id(spec.name, job, run_id)).option("txnVersion", 0)
    writer.save(uri)
    from deltalake import DeltaTable

    version = DeltaTable(uri).version()
    return _committed(CommitInfo(spec.name, version, -1, -1, mode))


def write_pandas(warehouse: str, table: str, data: pd.DataFrame | pa.Table, mode: WriteMode, *,
                 partition: dict[str, Any] | None = None, run_id: str | None = None,
                 job: str | None = None, max_rows_per_file: int = 1_000_000,
                 based_on: int | None = None) -> CommitInfo:
    """Write a small driver-side frame (training sets, review queues) with the same commit rules.

    ``based_on``: the table version ``data`` was computed from (a read-modify-write); the commit
    fails with :class:`ConcurrentWriteError` if a later commit changed the replaced partition.
    """
    spec = table_spec(table)
    expect = _validate_mode(spec, mode, partition)
    uri = table_uri(warehouse, table)
    skipped = _skip_committed_run(uri, spec, mode, run_id, job)
    if skipped:
        return skipped
    if isinstance(data, pd.DataFrame):
        missing = [c for c in spec.columns if c not in data.columns]
        if missing:
            raise InputError(f"table '{table}': rows lack columns {missing}")
        try:
            data = pa.Table.from_pandas(data[spec.columns], schema=spec.schema, preserve_index=False, safe=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise InputError(f"table '{table}': rows do not fit the declared schema: {exc}") from None
    _local_writer_check(warehouse)
    write_id = uuid.uuid4().hex[:12]
    try:
        with _storage(table, uri):
            Path(uri).mkdir(parents=True, exist_ok=True)
        writer = _FileWriter(uri, spec, write_id, max_rows_per_file, expect)
        for batch in data.to_batches(max_chunksize=max_rows_per_file):
            writer.add(batch)
        staged = writer.close()
        version = _commit_clearly(uri, spec, staged, mode, expect, run_id, job, based_on)
    except BaseException:
        _abandon(table, uri, write_id)
        raise
    return _committed(CommitInfo(table, version, sum(s["rows"] for s in staged), len(staged), mode))


# ----------------------------------------------------------------------------- inventory


def describe_warehouse(warehouse: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every Delta table under ``warehouse`` with its version and row count (from the log, no scan)."""
    from deltalake import DeltaTable

    rows = []
    for name in list_tables(warehouse):
        uri = table_uri(warehouse, name)
        dt = DeltaTable(uri)
        actions = pa.table(dt.get_add_actions(flatten=True))
        count = int(pc.sum(actions["num_records"]).as_py() or 0) if actions.num_rows else 0
        rows.append({"table": name, "version": dt.version(), "rows": count,
                     "files": actions.num_rows, "path": uri})
    return rows
