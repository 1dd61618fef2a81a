"""`epm-spark vacuum`: the files of killed writes and replaced rows go once past the retention, and
nothing a current or recent version reads is touched."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd
from deltalake import DeltaTable

from epm_spark.cli import main
from epm_spark.io import delta
from catalog_tiny import products

DAY = 86400


def killed_write(partition: Path, name: str, age_days: float) -> Path:
    """The Parquet file a write killed before its commit leaves behind (no log entry names it)."""
    path = partition / f"part-{name}-000000000000.parquet"
    path.write_bytes(b"PAR1 a killed write's file PAR1")
    then = time.time() - age_days * DAY
    os.utime(path, (then, then))
    return path


def rows(warehouse: str) -> pd.DataFrame:
    frame = delta.read_pandas(warehouse, "products")[["source", "product_id", "run_id"]]
    return frame.sort_values(["source", "product_id"]).reset_index(drop=True)


def test_vacuum_removes_old_killed_writes_and_keeps_what_versions_read(warehouse, capsys):
    base = ["--warehouse", warehouse, "vacuum"]
    delta.write_pandas(warehouse, "products", products(5, "ours"), "replace", partition={"source": "ours"})
    delta.write_pandas(warehouse, "products", products(3, "theirs"), "replace", partition={"source": "theirs"})
    delta.write_pandas(warehouse, "products", products(4, "ours", run_id="r2"), "replace",
                       partition={"source": "ours"})
    table = Path(warehouse, "products")
    replaced = set(DeltaTable(str(table), version=0).file_uris()) - set(DeltaTable(str(table)).file_uris())
    assert len(replaced) == 1
    ours = table / "source=ours"
    old, fresh = killed_write(ours, "0ld0ld", 10), killed_write(ours, "fresh0", 0)
    before = rows(warehouse)

    assert main([*base, "--table", "products", "--dry-run", "--json"]) == 0
    [report] = json.loads(capsys.readouterr().out)
    assert report["table"] == "products" and report["dry_run"] is True
    assert report["files"] == [f"source=ours/{old.name}"] and report["bytes"] == old.stat().st_size
    assert old.exists()

    assert main(base) == 0  # every table: products, and job_runs (the dry run's attempt row)
    out = capsys.readouterr().out
    assert "products" in out and "removed     1 files" in out and "job_runs" in out
    assert not old.exists() and fresh.exists()  # a file younger than the retention may be a write in progress
    assert all(Path(u).exists() for u in replaced)  # version 0 is within the retention: time travel still works
    assert len(delta.read_pandas(warehouse, "products", version=0)) == 5
    pd.testing.assert_frame_equal(rows(warehouse), before)


def test_vacuum_refuses_a_short_retention_and_unknown_tables_before_removing_anything(warehouse, capsys):
    base = ["--warehouse", warehouse, "vacuum"]
    delta.write_pandas(warehouse, "products", products(2, "ours"), "replace", partition={"source": "ours"})
    table = Path(warehouse, "products")
    old = killed_write(table / "source=ours", "0ld0ld", 10)

    assert main([*base, "--retain-hours", "1"]) == 2
    err = capsys.readouterr().err
    assert "--retain-hours 1 is below the table" in err and "168 hours" in err
    assert main([*base, "--table", "products", "--table", "prodcts"]) == 2
    assert "table 'prodcts' does not exist" in capsys.readouterr().err
    assert main([*base, "--retain-hours", "-1"]) == 2
    assert ">= 0" in capsys.readouterr().err
    assert old.exists() and len(delta.read_pandas(warehouse, "products")) == 2


def test_a_table_with_a_short_retention_loses_replaced_files_and_keeps_its_rows(warehouse, capsys):
    delta.write_pandas(warehouse, "products", products(5, "ours"), "replace", partition={"source": "ours"})
    delta.write_pandas(warehouse, "products", products(2, "ours", run_id="r2"), "replace",
                       partition={"source": "ours"})
    uri = str(Path(warehouse, "products"))
    replaced = set(DeltaTable(uri, version=0).file_uris()) - set(DeltaTable(uri).file_uris())
    DeltaTable(uri).alter.set_table_properties({"delta.deletedFileRetentionDuration": "interval 0 hours"})
    before = rows(warehouse)

    assert main(["--warehouse", warehouse, "vacuum", "--table", "products", "--retain-hours", "0"]) == 0
    assert "removed     1 files" in capsys.readouterr().out
    assert replaced and not any(Path(u).exists() for u in replaced)
    pd.testing.assert_frame_equal(rows(warehouse), before)
    # The vacuum's own log entries leave the table writable by the suite's jobs.
    delta.write_pandas(warehouse, "products", products(1, "theirs"), "replace", partition={"source": "theirs"})
    assert len(delta.read_pandas(warehouse, "products")) == 3
