"""The Spark session every job runs in.

Under ``spark-submit`` (or any process that already has a session) the jobs take
that session as it is: the cluster's settings win. Elsewhere :func:`get_spark`
builds a local one from the ``spark:`` settings: ``local[*]``, Arrow on, few
shuffle partitions, UTC session time zone, the workers on this same Python.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from epm_spark.config import Settings
from epm_spark.errors import EnvironmentProblem
from epm_spark.progress import on_terminal

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["get_spark", "check_java", "sql_warehouse_dir", "MIN_JAVA", "SQL_WAREHOUSE"]

log = logging.getLogger(__name__)

MIN_JAVA = 17
SQL_WAREHOUSE = "_spark_sql"

_INSTALL_JAVA = (
    "install Java {min} or newer, e.g. `sudo apt-get install openjdk-17-jre-headless` (Debian/Ubuntu), "
    "`brew install openjdk@17` (macOS) or `conda install -c conda-forge openjdk=17`, "
    "then make sure `java -version` works or set JAVA_HOME"
)


def _java_binary() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and os.path.exists(os.path.join(home, "bin", "java")):
        return os.path.join(home, "bin", "java")
    return shutil.which("java")


def check_java() -> int:
    """The major version of the Java that Spark will use; a clear error if it is missing or too old."""
    java = _java_binary()
    if java is None:
        raise EnvironmentProblem("Spark needs Java, and none was found: " + _INSTALL_JAVA.format(min=MIN_JAVA))
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvironmentProblem(f"could not run {java} -version ({exc}): " + _INSTALL_JAVA.format(min=MIN_JAVA))
    text = out.stderr + out.stdout
    m = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if not m:
        raise EnvironmentProblem(f"could not read the Java version from: {text.strip()[:200]}")
    major = int(m.group(1))
    if major == 1 and m.group(2):  # "1.8.0" style
        major = int(m.group(2))
    if major < MIN_JAVA:
        raise EnvironmentProblem(
            f"Spark needs Java {MIN_JAVA} or newer, but {java} is Java {major}: " + _INSTALL_JAVA.format(min=MIN_JAVA)
        )
    return major


def get_spark(settings: Settings) -> SparkSession:
    """The active session (spark-submit, notebooks, tests), else a new local one from ``settings.spark``."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if os.environ.get("PYSPARK_GATEWAY_PORT"):
        # Launched by spark-submit (or pyspark): the JVM exists and its conf is the cluster's.
        spark = SparkSession.builder.getOrCreate()
        spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
        log.info("using the Spark session of spark-submit (%s)", spark.sparkContext.master)
        return spark
    check_java()
    s = settings.spark
    # Workers must run the same Python (and so the same packages) as the driver.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if s.master.startswith("local"):
        # A local session talks to itself only; binding to loopback also avoids a warning per start.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = (
        SparkSession.builder.master(s.master)
        .appName(s.app_name)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(s.arrow_max_records_per_batch))
        .config("spark.sql.shuffle.partitions", str(s.shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", s.driver_memory)
        .config("spark.ui.enabled", str(s.ui_enabled).lower())
        .config("spark.ui.showConsoleProgress", str(on_terminal()).lower())
        .config("spark.sql.adaptive.enabled", "true")
    )
    if "spark.driver.extraJavaOptions" not in s.conf:
        log4j = Path(__file__).with_name("log4j2.properties").as_uri()
        builder = builder.config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={log4j}")
    if "spark.sql.warehouse.dir" not in s.conf:
        # The jobs address Delta tables by path, but a local session still makes its catalog's
        # folder, by default ./spark-warehouse wherever the job was started; keep it in the warehouse.
        builder = builder.config("spark.sql.warehouse.dir", sql_warehouse_dir(settings.warehouse))
    for key, value in s.conf.items():
        builder = builder.config(key, value)
    log.info("starting Spark (%s)", s.master)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(s.log_level)
    if s.log_level.upper() not in ("DEBUG", "INFO", "ALL", "TRACE"):
        _quiet_task_failures(spark)
    return spark


def sql_warehouse_dir(warehouse: str) -> str:
    """Where a local session keeps Spark SQL's own catalog: ``_spark_sql`` in the project's warehouse
    (not a Delta table, so no verb lists it as one), resolved as the tables' folders are."""
    from epm_spark.io.delta import table_uri

    return table_uri(warehouse, SQL_WAREHOUSE)


def _quiet_task_failures(spark: SparkSession) -> None:
    # A task that raises (e.g. a bad row) is reported once by the driver with a clear
    # message; the executor's and scheduler's stack traces of it are noise to users.
    try:
        jvm = spark.sparkContext._jvm
        level = jvm.org.apache.logging.log4j.Level.FATAL
        configurator = jvm.org.apache.logging.log4j.core.config.Configurator
        for logger in ("org.apache.spark.executor.Executor", "org.apache.spark.scheduler.TaskSetManager",
                       "org.apache.spark.util.Utils", "org.apache.spark.api.python.PythonRunner"):
            configurator.setLevel(logger, level)
    except Exception:  # logging is cosmetic; never fail a job over it
        log.debug("could not lower the executor log level", exc_info=True)
