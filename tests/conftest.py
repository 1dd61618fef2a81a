"""Shared fixtures: one local Spark session for the whole run, a fresh warehouse per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = Path(os.environ.get("EPM_BENCHMARKS", REPO.parent / "shared" / "data" / "benchmarks"))

os.environ.setdefault("EPM_PROGRESS_INTERVAL", "5")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def session_warehouse(tmp_path_factory) -> str:
    """The warehouse the Spark session was built for (its SQL catalog folder lives there)."""
    return str(tmp_path_factory.mktemp("session") / "warehouse")


@pytest.fixture(scope="session")
def spark(session_warehouse):
    from epm_spark.config import load_settings
    from epm_spark.spark import get_spark

    settings = load_settings(overrides=[
        "spark.master=local[2]", "spark.ui_enabled=false", "spark.shuffle_partitions=2",
        "spark.driver_memory=2g",
    ], warehouse=session_warehouse)
    session = get_spark(settings)
    yield session
    session.stop()


@pytest.fixture
def warehouse(tmp_path) -> str:
    """An empty warehouse folder: only the verbs that start a warehouse accept a missing one."""
    path = tmp_path / "warehouse"
    path.mkdir()
    return str(path)


@pytest.fixture
def settings(warehouse):
    from epm_spark.config import load_settings

    return load_settings(overrides=["spark.ui_enabled=false"], warehouse=warehouse)


@pytest.fixture(scope="session")
def benchmarks_dir() -> Path:
    if not BENCHMARKS.is_dir():
        pytest.skip(f"benchmark data not found at {BENCHMARKS} (set EPM_BENCHMARKS to its folder)")
    return BENCHMARKS
