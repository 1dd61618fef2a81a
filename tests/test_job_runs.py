"""job_runs: every job attempt leaves a row that agrees with the tables; a killed attempt stays `running`."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from epm_spark.cli import main
from epm_spark.config import load_settings
from epm_spark.io import delta
from epm_spark.pipeline.runs import read_runs, recorded

REPO = Path(__file__).resolve().parents[1]


def runs_json(warehouse, capsys, *extra) -> list[dict]:
    capsys.readouterr()
    assert main(["--warehouse", warehouse, "runs", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_ingest_rows_agree_with_the_tables_and_failures_are_recorded(spark, warehouse, tmp_path, capsys):
    export = tmp_path / "ours.csv"
    export.write_text("sku,name,price\n1,Bosch drill,59.00\n2,,3.00\n3,Makita saw,99.00\n")
    assert main(["--warehouse", warehouse, "ingest", "--input", str(export), "--source", "ours",
                 "--run-id", "n1"]) == 0
    assert main(["--warehouse", warehouse, "ingest", "--input", str(tmp_path / "nope.csv"), "--source", "ours",
                 "--run-id", "n1"]) == 2
    failed, ok = runs_json(warehouse, capsys)
    assert (ok["job"], ok["status"], ok["run_id"], ok["error"]) == ("ingest", "succeeded", "n1", None)
    assert ok["finished_at"] is not None and json.loads(ok["arguments"])["source"] == "ours"
    assert ok["rows_read"] == {str(export): 3}
    products = delta.read_pandas(warehouse, "products")
    quarantine = delta.read_pandas(warehouse, "products_quarantine")
    assert ok["rows_written"] == {"products": len(products), "products_quarantine": len(quarantine)} == {
        "products": 2, "products_quarantine": 1}
    assert ok["table_versions"] == {"products": delta.table_version(warehouse, "products"),
                                    "products_quarantine": delta.table_version(warehouse, "products_quarantine")}
    assert failed["status"] == "failed" and "does not exist" in failed["error"] and failed["finished_at"]
    assert failed["rows_written"] == {}
    assert len(runs_json(warehouse, capsys, "--last", "1")) == 1
    capsys.readouterr()
    assert main(["--warehouse", warehouse, "runs"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert len(text) == 2 and "failed" in text[0] and "products 2" in text[1] and "products_quarantine 1" in text[1]


def test_an_attempt_killed_mid_job_stays_running_and_the_next_says_so(warehouse, caplog):
    script = textwrap.dedent(f"""
        import time
        from epm_spark.config import load_settings
        from epm_spark.pipeline.runs import recorded
        settings = load_settings(warehouse={warehouse!r})
        with recorded(settings, "embed", run_id="n1", arguments={{}}):
            print("started", flush=True)
            time.sleep(600)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "started"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    [killed] = read_runs(warehouse).to_dict("records")
    assert killed["status"] == "running" and str(killed["finished_at"]) in ("None", "NaT")
    settings = load_settings(warehouse=warehouse)
    with caplog.at_level(logging.WARNING, logger="epm_spark.pipeline.runs"):
        with recorded(settings, "embed", run_id="n1", arguments={}):
            pass
    assert "never finished (the process was killed)" in caplog.text and killed["attempt_id"] in caplog.text
    statuses = read_runs(warehouse).set_index("attempt_id").status.to_dict()
    assert statuses[killed["attempt_id"]] == "running" and sorted(statuses.values()) == ["running", "succeeded"]


def test_runs_refuses_a_negative_count(warehouse, capsys):
    assert main(["--warehouse", warehouse, "runs", "--last", "-1"]) == 2
    assert "--last must be >= 0" in capsys.readouterr().err
