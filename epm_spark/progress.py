"""Progress for long steps: a bar on a terminal, periodic log lines otherwise (CI, cron, YARN logs)."""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from tqdm.auto import tqdm

__all__ = ["progress", "on_terminal", "spark_progress"]

T = TypeVar("T")
log = logging.getLogger("epm_spark.progress")

# Seconds between log lines when no terminal shows a bar.
LOG_INTERVAL_S = float(os.environ.get("EPM_PROGRESS_INTERVAL", "30"))


def on_terminal() -> bool:
    return sys.stderr.isatty()


class _LogLines(io.StringIO):
    """A file for tqdm that turns each refresh into one log line."""

    def write(self, text: str) -> int:
        line = text.strip("\r\n ")
        if line:
            log.info(line)
        return len(text)

    def flush(self) -> None:  # tqdm flushes after each refresh
        pass


def progress(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", **kwargs: Any) -> Iterator[T] | tqdm:
    """``tqdm`` that draws a bar on a terminal and logs a line every 30 s elsewhere."""
    if on_terminal():
        return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True, **kwargs)
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=_LogLines(), ascii=True,
                mininterval=LOG_INTERVAL_S, ncols=100, **kwargs)


@contextmanager
def spark_progress(spark: Any, desc: str):
    """Log the progress of Spark's active stages while a job runs (Spark draws its own bar on a terminal)."""
    if on_terminal():
        yield
        return
    tracker = spark.sparkContext.statusTracker()
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(LOG_INTERVAL_S):
            for stage_id in tracker.getActiveStageIds():
                info = tracker.getStageInfo(stage_id)
                if info:
                    log.info("%s: stage %d %s: %d/%d tasks", desc, stage_id, info.name.split(" at ")[0],
                             info.numCompletedTasks, info.numTasks)

    thread = threading.Thread(target=report, daemon=True)
    start = time.monotonic()
    thread.start()
    try:
        yield
    finally:
        stop.set()
        log.info("%s: done in %.1f s", desc, time.monotonic() - start)
