"""``epm-spark sql``: Spark SQL over every table of the warehouse, embedded, no server.

Each Delta table folder becomes a temporary view of its current snapshot (read through
its file list, so the Delta jars are not needed). A query the engine rejects prints
the engine's message, not a traceback.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from typing import IO, TYPE_CHECKING

from epm_spark.config import Settings
from epm_spark.errors import InputError
from epm_spark.io import delta
from epm_spark.io.schemas import TABLES

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["register_views", "run_sql", "query"]

log = logging.getLogger(__name__)


def register_views(spark: SparkSession, settings: Settings) -> list[str]:
    """Create (or refresh) one temporary view per warehouse table; returns their names."""
    # Views of another warehouse (an earlier call in the same session) must not answer for this one.
    for view in spark.catalog.listTables():
        if view.isTemporary and view.name in TABLES:
            spark.catalog.dropTempView(view.name)
    names = []
    for name in delta.list_tables(settings.warehouse):
        delta.read(spark, settings.warehouse, name, engine=settings.delta.engine).createOrReplaceTempView(name)
        names.append(name)
    return names


# Statements that would change a table. The views are snapshots: a DROP would drop the view and
# print "(0 rows)", a DELETE fail deep in Spark; tables change only through the jobs' Delta commits.
_WRITING = {"ALTER", "CREATE", "DELETE", "DROP", "INSERT", "LOAD", "MERGE", "REPLACE", "TRUNCATE", "UPDATE"}
_LEADING = re.compile(r"\s*(?:--[^\n]*\n|/\*.*?\*/|\s)*(\w+)", re.DOTALL)


def query(spark: SparkSession, settings: Settings, sql: str) -> DataFrame:
    """The result of ``sql`` over the warehouse views; :class:`InputError` with the SQL error if it fails."""
    from pyspark.errors import PySparkException

    first = _LEADING.match(sql)
    if first and first.group(1).upper() in _WRITING:
        raise InputError(f"epm-spark sql only reads the warehouse: {first.group(1).upper()} refused (tables change "
                         "through the jobs, e.g. ingest, match, vacuum)")
    views = register_views(spark, settings)
    try:
        return spark.sql(sql)
    except PySparkException as exc:
        hint = f" (tables: {', '.join(views)})" if views else f" (the warehouse {settings.warehouse} has no tables yet)"
        raise InputError(f"{_first_line(exc)}{hint}") from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    # Spark appends the whole plan and a JVM stack trace; the first lines carry the message.
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    for i, line in enumerate(lines):
        if "SQLSTATE" in line:
            return " ".join(lines[: i + 1]).strip()
    return lines[0].strip()


def run_sql(spark: SparkSession, settings: Settings, sql: str, *, fmt: str = "table", limit: int = 1000,
            out: IO[str]) -> int:
    """Run ``sql`` and print the rows as an aligned table, CSV or JSON lines. Returns the row count."""
    from pyspark.errors import PySparkException

    df = query(spark, settings, sql)
    try:
        rows = df.limit(limit).collect() if limit else df.collect()
    except PySparkException as exc:
        raise InputError(_first_line(exc)) from None
    columns = df.columns
    if fmt == "json":
        for r in rows:
            out.write(json.dumps(r.asDict(recursive=True), default=str, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow(["" if v is None else v for v in r])
    else:
        _print_table(columns, [[_cell(v) for v in r] for r in rows], out)
        out.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''}"
                  + (f", limited to {limit}" if limit and len(rows) == limit else "") + ")\n")
    return len(rows)


def _cell(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e6 else f"{value:,.4f}".rstrip("0").rstrip(".")
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _print_table(columns: list[str], rows: list[list[str]], out: IO[str]) -> None:
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    out.write(" | ".join(c.ljust(w) for c, w in zip(columns, widths)) + "\n")
    out.write("-+-".join("-" * w for w in widths) + "\n")
    for r in rows:
        out.write(" | ".join(v.ljust(w) for v, w in zip(r, widths)) + "\n")
