"""Read catalog exports (CSV, JSON lines, Parquet, Delta) as Spark DataFrames of text columns.

Every row keeps where it came from: ``_source_file`` and ``_row_number`` (1-based data
row within its file: the header does not count; for JSON lines it is the line number).
Rows the reader cannot split into fields keep their raw text in ``_corrupt_record``.
"""

from __future__ import annotations

import csv
import glob
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from epm_spark.config import IngestSettings
from epm_spark.errors import InputError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["detect_format", "export_columns", "input_format", "read_catalog", "with_row_numbers", "CORRUPT", "FILE", "ROW"]

log = logging.getLogger(__name__)

CORRUPT, FILE, ROW = "_corrupt_record", "_source_file", "_row_number"

_EXTENSIONS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".json": "json", ".jsonl": "json",
               ".ndjson": "json", ".parquet": "parquet", ".pq": "parquet"}


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def detect_format(path: str) -> str:
    """The input format from the path: a Delta folder, or the files' extension."""
    local = path[len("file://"):] if path.startswith("file://") else path
    if _is_local(path):
        if not glob.glob(local):
            raise InputError(f"input {path} does not exist")
        if os.path.isdir(os.path.join(local, "_delta_log")):
            return "delta"
        files = [local] if os.path.isfile(local) else [f for f in glob.glob(os.path.join(local, "*"))
                                                       if os.path.isfile(f) and not os.path.basename(f).startswith((".", "_"))]
        if not files and glob.glob(local) and not os.path.isdir(local):
            files = glob.glob(local)
        exts = {Path(f.removesuffix(".gz")).suffix.lower() for f in files}
        formats = {_EXTENSIONS.get(e) for e in exts}
        if len(formats) == 1 and None not in formats:
            return formats.pop()
        raise InputError(f"cannot tell the format of {path} from its files ({', '.join(sorted(exts)) or 'none'}); "
                         "pass --format csv|parquet|json|delta")
    ext = Path(path.removesuffix(".gz")).suffix.lower()
    if ext in _EXTENSIONS:
        return _EXTENSIONS[ext]
    raise InputError(f"cannot tell the format of {path}; pass --format csv|parquet|json|delta")


def input_format(path: str, fmt: str | None = None) -> str:
    """``fmt``, else the format :func:`detect_format` tells; a local path that does not exist is refused."""
    fmt = fmt or detect_format(path)
    if _is_local(path) and not glob.glob(path.removeprefix("file://")):
        raise InputError(f"input {path} does not exist")
    return fmt


def _first_file(path: str) -> str | None:
    """The first data file of a local export (a file, a folder of files or a glob), else None."""
    if not _is_local(path):
        return None
    local = path.removeprefix("file://")
    if os.path.isfile(local):
        return local
    pattern = os.path.join(local, "*") if os.path.isdir(local) else local
    files = sorted(f for f in glob.glob(pattern)
                   if os.path.isfile(f) and not os.path.basename(f).startswith((".", "_")))
    return files[0] if files else None


def export_columns(path: str, fmt: str, settings: IngestSettings) -> list[str] | None:
    """The columns of a local CSV, Parquet or Delta export, read from its header or schema without
    Spark; None where only reading the rows tells (JSON lines, compressed or remote files)."""
    if not _is_local(path):
        return None
    first = _first_file(path)
    try:
        if fmt == "delta":
            from deltalake import DeltaTable

            return [f.name for f in DeltaTable(path.removeprefix("file://")).schema().fields]
        if fmt == "parquet" and first is not None:
            import pyarrow.parquet as pq

            return list(pq.read_schema(first).names)
    except Exception:  # not that format after all: the reader reports it in its own words
        return None
    if first is None or first.endswith(".gz"):
        return None
    if fmt == "csv":
        sep = settings.csv_delimiter or _sniff_delimiter(path, settings.csv_encoding)
        with open(first, encoding=settings.csv_encoding, errors="replace", newline="") as fh:
            header = next(csv.reader(fh, delimiter=sep), None)
        # Loosened (no byte-order mark, no padding) so that the check never refuses what Spark reads.
        return [c.lstrip("\ufeff").strip() for c in header] if header else None
    return None


def _sniff_delimiter(path: str, encoding: str) -> str:
    first = _first_file(path)
    if first is None or first.endswith(".gz"):
        return ","
    with open(first, encoding=encoding, errors="replace", newline="") as fh:
        sample = fh.read(64 * 1024)
    try:
        return csv.Sniffer().sniff(sample.split("\n", 1)[0], delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def read_catalog(spark: SparkSession, path: str, fmt: str | None, settings: IngestSettings) -> DataFrame:
    """Every input column as text, plus ``_corrupt_record``, ``_source_file`` and ``_row_number``."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    fmt = input_format(path, fmt)
    if fmt == "csv":
        sep = settings.csv_delimiter or _sniff_delimiter(path, settings.csv_encoding)
        header = (spark.read.option("header", "true").option("sep", sep)
                  .option("encoding", settings.csv_encoding).csv(path).columns)
        if not header:
            raise InputError(f"{path} has no header row")
        dupes = sorted({c for c in header if header.count(c) > 1})
        if dupes:
            raise InputError(f"{path}: the header repeats column(s) {dupes}")
        schema = T.StructType([T.StructField(c, T.StringType()) for c in header]
                              + [T.StructField(CORRUPT, T.StringType())])
        df = (spark.read.schema(schema).option("header", "true").option("sep", sep)
              .option("multiLine", "true").option("escape", '"').option("encoding", settings.csv_encoding)
              .option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", CORRUPT).csv(path))
        log.info("reading CSV %s (delimiter %r, %d columns)", path, sep, len(header))
    elif fmt == "json":
        df = (spark.read.option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", CORRUPT)
              .option("encoding", settings.csv_encoding).json(path))
        if set(df.columns) <= {CORRUPT}:
            raise InputError(f"cannot read {path} as json: no line is a JSON object; name its format with --format")
    elif fmt in ("parquet", "delta"):
        from epm_spark.io.delta import read_path

        try:
            df = spark.read.parquet(path) if fmt == "parquet" else read_path(spark, path)
        except InputError:
            raise
        except Exception as exc:  # Spark and delta-rs raise Java, Python and OS errors for the same mistake
            raise _cannot_read(path, fmt, exc) from None
    else:
        raise InputError(f"unknown format {fmt!r}; use csv, parquet, json or delta")
    if CORRUPT not in df.columns:
        df = df.withColumn(CORRUPT, F.lit(None).cast("string"))
    # Text everywhere: validation reads values as the export wrote them.
    as_text = []
    for f in df.schema.fields:
        if f.name == CORRUPT:
            continue
        col = F.col(f"`{f.name}`")
        if isinstance(f.dataType, (T.StructType, T.ArrayType, T.MapType)):
            as_text.append(F.to_json(col).alias(f.name))
        else:
            as_text.append(col.cast("string").alias(f.name))
    df = df.select(*as_text, F.col(CORRUPT))
    return with_row_numbers(df)


def _cannot_read(path: str, fmt: str, exc: BaseException) -> InputError:
    """One line for a file the reader refused: the engine's message, without its stack trace."""
    lines = [re.sub(r"\x1b\[[0-9;]*m|↳", "", ln).strip(" :") for ln in str(exc).splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("at ")]
    reason = next((ln.split("Exception: ", 1)[1] for ln in lines if "Exception: " in ln), "; ".join(lines[:3]))
    return InputError(f"cannot read {path} as {fmt} ({reason[:300]}); name its format with --format")


def with_row_numbers(df: DataFrame) -> DataFrame:
    """Add ``_source_file`` and its 1-based ``_row_number``, computed without moving rows.

    Within a task, ``monotonically_increasing_id`` counts rows in read order; a file's
    splits are read by tasks in file order. One small aggregate per (file, task) gives
    each task's offset in its file.
    """
    from pyspark.sql import functions as F

    df = (df.withColumn(FILE, F.input_file_name())
          .withColumn("_task", F.spark_partition_id())
          .withColumn("_pos", F.monotonically_increasing_id()))
    counts = (df.groupBy(FILE, "_task").agg(F.count(F.lit(1)).alias("_n"), F.min("_pos").alias("_first"))
              .collect())
    offsets = []
    seen: dict[str, int] = {}
    for r in sorted(counts, key=lambda r: (r[FILE], r["_task"])):
        offsets.append((r[FILE], r["_task"], seen.get(r[FILE], 0), r["_first"]))
        seen[r[FILE]] = seen.get(r[FILE], 0) + r["_n"]
    spark = df.sparkSession
    table = spark.createDataFrame(offsets, f"{FILE} string, _task int, _base long, _first long")
    return (df.join(F.broadcast(table), [FILE, "_task"])
            .withColumn(ROW, F.col("_base") + F.col("_pos") - F.col("_first") + 1)
            .drop("_task", "_pos", "_base", "_first"))
