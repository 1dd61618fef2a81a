"""Faults as faults: real `epm-spark` processes killed with SIGKILL while they write, two jobs committing
to one table at once, and a warehouse that refuses writes (read-only, full); then the tables are read.

The children run the real CLI; ``fault_child.py`` only stops or kills them at a chosen Delta commit.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from epm_spark.cli import main
from epm_spark.io import delta
from epm_spark.pipeline.runs import read_runs

REPO = Path(__file__).resolve().parents[1]
CHILD = REPO / "tests" / "fault_child.py"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1"}
VOLATILE = ("ingested_at", "run_id")


def benchmark(folder: Path, n: int, word: str) -> Path:
    """A DeepMatcher-layout folder named ``mini``; ``word`` changes every title between versions."""
    folder.mkdir(parents=True)
    (folder / "tableA.csv").write_text("id,title\n" + "".join(f"{i},{word} left {i}\n" for i in range(n)))
    (folder / "tableB.csv").write_text("id,title\n" + "".join(f"{i},{word} right {i}\n" for i in range(n)))
    (folder / "train.csv").write_text("ltable_id,rtable_id,label\n" + "".join(f"{i},{i},{i % 2}\n" for i in range(n)))
    return folder


def contents(warehouse: str) -> dict[str, pd.DataFrame]:
    """Every data table, as sorted rows without the columns that differ between identical runs."""
    out = {}
    for name in delta.list_tables(warehouse):
        if name == "job_runs":
            continue
        frame = delta.read_pandas(warehouse, name)
        frame = frame.drop(columns=[c for c in VOLATILE if c in frame.columns])
        frame = frame.astype(str)  # maps and timestamps compare as text
        out[name] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    return out


def same(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> bool:
    return a.keys() == b.keys() and all(a[t].equals(b[t]) for t in a)


def spawn(table: str, fault: str, argv: list[str], cwd: Path) -> subprocess.Popen:
    """The child's stderr (logs, Spark's included) goes to a file, so a full pipe never stalls it."""
    log = cwd / f"stderr-{time.monotonic_ns()}.txt"
    proc = subprocess.Popen([sys.executable, str(CHILD), table, fault, "--", *argv], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    proc.stderr_path = log
    return proc


def stderr(proc: subprocess.Popen) -> str:
    return proc.stderr_path.read_text()


def kill_when_paused(proc: subprocess.Popen, table: str, timeout: float = 300) -> None:
    """Wait for the child to stop at ``table``'s commit, then SIGKILL it."""
    deadline = time.monotonic() + timeout
    try:
        for line in proc.stdout:
            if line.startswith(f"FAULT pause {table}"):
                os.kill(proc.pid, signal.SIGKILL)
                break
            assert time.monotonic() < deadline, f"no commit of {table} within {timeout} s"
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, stderr(proc)[-3000:]


def staged_files(warehouse: str, table: str) -> set[str]:
    """Parquet files in the table folder that its current snapshot does not reference."""
    on_disk = {str(p) for p in Path(warehouse, table).rglob("*.parquet")}
    return on_disk - set(delta._open(warehouse, table).file_uris())


# ----------------------------------------------------------------------------- SIGKILL


@pytest.fixture
def loaded(tmp_path):
    """A warehouse holding benchmark 'mini' version 1, the folder of version 2, and what loading v2 gives."""
    v1, v2 = benchmark(tmp_path / "v1" / "mini", 5, "old"), benchmark(tmp_path / "v2" / "mini", 7, "new")
    base = str(tmp_path / "base")
    assert main(["--warehouse", base, "load-benchmark", "--benchmark", str(v1), "--run-id", "r1"]) == 0
    reference = str(tmp_path / "reference")
    shutil.copytree(base, reference)
    assert main(["--warehouse", reference, "load-benchmark", "--benchmark", str(v2), "--run-id", "r2"]) == 0
    return base, v2, contents(base), contents(reference)


# Where the kill lands: stopped at a commit (its files written, the log entry not), or a timer
# firing 0-20 ms into a commit (before, while or after delta-rs writes and renames the log entry).
KILLS = [("products", "pause"), ("labelled_pairs", "pause"), ("job_runs", "pause"),
         ("products", "kill:0.001"), ("products", "kill:0.004"), ("labelled_pairs", "kill:0.002"),
         ("labelled_pairs", "kill:0.02")]


def test_a_job_killed_in_or_before_a_commit_leaves_readable_tables_and_reruns_to_the_same_result(loaded, tmp_path):
    base, v2, before, after = loaded
    argv = ["load-benchmark", "--benchmark", str(v2), "--run-id", "r2"]
    killed = 0
    for i, (table, fault) in enumerate(KILLS):
        warehouse = str(tmp_path / f"wh{i}")
        shutil.copytree(base, warehouse)
        versions = {t: delta.table_version(warehouse, t) for t in delta.list_tables(warehouse)}
        proc = spawn(table, fault, ["--warehouse", warehouse, *argv], tmp_path)
        if fault == "pause":
            kill_when_paused(proc, table)
        else:
            proc.communicate(timeout=300)
        killed += proc.returncode == -signal.SIGKILL
        case = f"{table} {fault} (exit {proc.returncode})"

        # Every table reads; each is as before or as after the job, never in between.
        now = contents(warehouse)
        assert now.keys() == before.keys(), case
        for name, rows in now.items():
            assert rows.equals(before[name]) or rows.equals(after[name]), f"{case}: {name} is half-written"
        delta.describe_warehouse(warehouse)
        if fault == "pause" and table != "job_runs":
            assert now[table].equals(before[table]) and delta.table_version(warehouse, table) == versions[table]
            assert staged_files(warehouse, table), f"{case}: the kill should land after the files were written"
        recorded = read_runs(warehouse, run_id="r2").status.tolist()
        if fault == "pause":
            assert recorded == ([] if table == "job_runs" else ["running"]), case  # no finish recorded
        elif recorded == ["succeeded"]:  # the timer fired after the job had finished: it must be whole
            assert same(now, after), case

        assert main(["--warehouse", warehouse, *argv]) == 0, case
        assert same(contents(warehouse), after), case
        attempts = read_runs(warehouse, run_id="r2")  # newest first
        assert attempts.status.iloc[0] == "succeeded" and len(attempts) == len(recorded) + 1, case
    assert killed >= 4, "the pauses at least must end in SIGKILL"


def test_a_first_commit_killed_half_way_leaves_no_table(warehouse, tmp_path, capsys):
    # What delta-rs leaves when killed inside the first commit of a table: the log folder with only
    # its temporary commit file. Readers must see no table, not fail on a table without versions.
    log_dir = Path(warehouse, "products", "_delta_log")
    log_dir.mkdir(parents=True)
    (log_dir / "_commit_4f1c2a.json.tmp").write_text('{"commitInfo":{}}\n')
    assert not delta.table_exists(warehouse, "products") and delta.list_tables(warehouse) == []
    assert main(["--warehouse", warehouse, "tables", "--json"]) == 0
    bench = benchmark(tmp_path / "mini", 3, "x")
    assert main(["--warehouse", warehouse, "load-benchmark", "--benchmark", str(bench)]) == 0
    assert delta.table_version(warehouse, "products") == 0 and len(delta.read_pandas(warehouse, "products")) == 6


def test_an_ingest_killed_after_its_spark_tasks_wrote_reruns_to_the_same_result(spark, tmp_path):
    """The Spark write path: tasks have written their Parquet files, the driver is about to commit."""
    old, new = tmp_path / "old.csv", tmp_path / "new.csv"
    old.write_text("sku,name,price\n1,Bosch drill,59.00\n2,Makita saw,99.00\n3,,1.00\n")
    new.write_text("sku,name,price\n1,Bosch drill 18V,55.00\n4,Festool sander,199.00\n5,Metabo grinder,79.00\n")
    base = str(tmp_path / "base")
    assert main(["--warehouse", base, "ingest", "--input", str(old), "--source", "ours", "--run-id", "n1"]) == 0
    before = contents(base)
    argv = ["--warehouse", base, "ingest", "--input", str(new), "--source", "ours", "--run-id", "n2"]
    kill_when_paused(spawn("products", "pause", argv, tmp_path), "products")
    now = contents(base)
    assert now["products"].equals(before["products"])
    assert delta.table_version(base, "products") == 0 and staged_files(base, "products")
    # Committed before products (the quarantine goes first): a whole newer version, not a part of one.
    assert len(before["products_quarantine"]) == 1 and len(now["products_quarantine"]) == 0
    assert read_runs(base, run_id="n2").status.tolist() == ["running"]

    assert main(argv) == 0
    rows = delta.read_pandas(base, "products")
    assert sorted(zip(rows.product_id, rows.price)) == [("1", 55.0), ("4", 199.0), ("5", 79.0)]
    assert len(delta.read_pandas(base, "products_quarantine")) == 0  # the old bad row went with its export
    assert sorted(read_runs(base, run_id="n2").status) == ["running", "succeeded"]


# ----------------------------------------------------------------------------- two jobs at once


def race(argvs: list[list[str]], table: str, tmp_path: Path, where: str = "barrier") -> list[subprocess.CompletedProcess]:
    """Run the jobs at once; each stops at its commit of ``table`` (``barrier``: with the snapshot it
    builds on loaded; ``gate``: before it looks at the table), then all commit together."""
    gate = tmp_path / f"gate-{time.monotonic_ns()}"
    gate.mkdir()
    procs = [spawn(table, f"{where}:{gate}", argv, tmp_path) for argv in argvs]
    deadline = time.monotonic() + 300
    while len(list(gate.glob("ready-*"))) < len(procs):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
            [stderr(p)[-2000:] for p in procs if p.poll() is not None]
        time.sleep(0.01)
    (gate / "go").touch()
    done = []
    for p in procs:
        out, _ = p.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, stderr(p)))
    return done


def test_two_jobs_replacing_different_partitions_at_once_both_land(tmp_path):
    warehouse = str(tmp_path / "wh")
    mini, other = benchmark(tmp_path / "a" / "mini", 5, "a"), benchmark(tmp_path / "b" / "other", 4, "b")
    assert main(["--warehouse", warehouse, "load-benchmark", "--benchmark", str(mini), "--run-id", "r0"]) == 0
    done = race([["--warehouse", warehouse, "load-benchmark", "--benchmark", str(b), "--run-id", "r1"]
                 for b in (mini, other)], "products", tmp_path)
    assert [d.returncode for d in done] == [0, 0], [d.stderr[-2000:] for d in done]
    products = delta.read_pandas(warehouse, "products")
    assert products.groupby("source").size().to_dict() == {"mini_left": 5, "mini_right": 5, "other_left": 4,
                                                           "other_right": 4}
    assert not products.duplicated(["source", "product_id"]).any()
    assert delta.read_pandas(warehouse, "labelled_pairs").groupby("benchmark").size().to_dict() == {"mini": 5,
                                                                                                   "other": 4}
    # Both attempts of run r1 recorded their finish, although they rewrote the run's job_runs rows at once.
    assert sorted(read_runs(warehouse, run_id="r1").status) == ["succeeded", "succeeded"]


def test_two_first_writes_creating_a_table_at_once_both_land_once(tmp_path):
    warehouse = str(tmp_path / "wh")
    mini, other = benchmark(tmp_path / "a" / "mini", 5, "a"), benchmark(tmp_path / "b" / "other", 4, "b")
    done = race([["--warehouse", warehouse, "load-benchmark", "--benchmark", str(b), "--run-id", "r1"]
                 for b in (mini, other)], "products", tmp_path, where="gate")
    assert [d.returncode for d in done] == [0, 0], [d.stderr[-2000:] for d in done]
    products = delta.read_pandas(warehouse, "products")
    assert products.groupby("source").size().to_dict() == {"mini_left": 5, "mini_right": 5, "other_left": 4,
                                                           "other_right": 4}
    assert sorted(read_runs(warehouse, run_id="r1").status) == ["succeeded", "succeeded"]


def test_two_jobs_replacing_the_same_partition_at_once_one_fails_clearly(tmp_path):
    warehouse = str(tmp_path / "wh")
    v1, v2 = benchmark(tmp_path / "v1" / "mini", 5, "one"), benchmark(tmp_path / "v2" / "mini", 7, "two")
    assert main(["--warehouse", warehouse, "load-benchmark", "--benchmark", str(v1), "--run-id", "r0"]) == 0
    done = race([["--warehouse", warehouse, "load-benchmark", "--benchmark", str(v), "--run-id", f"r{i}"]
                 for i, v in ((1, v1), (2, v2))], "products", tmp_path)
    # Both built on the same snapshot and replace the same rows: the second commit must fail, whole.
    codes = [d.returncode for d in done]
    assert sorted(codes) == [0, 2], [d.stderr[-2000:] for d in done]
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    line = one_line_error(done[loser], "load-benchmark")
    assert line.startswith("epm-spark load-benchmark: error: table 'products': another job committed")
    products = delta.read_pandas(warehouse, "products")
    assert not products.duplicated(["source", "product_id"]).any()
    assert len(products) == (10, 14)[winner] and set(products.title.str.split().str[0]) == {("one", "two")[winner]}
    runs = read_runs(warehouse).set_index("run_id")
    assert len(runs) == 3
    assert runs.loc[f"r{winner + 1}", "status"] == "succeeded"
    assert runs.loc[f"r{loser + 1}", "status"] == "failed"
    assert "another job committed" in runs.loc[f"r{loser + 1}", "error"]


# ----------------------------------------------------------------------------- a warehouse that refuses


def _namespaces_work() -> bool:
    try:
        return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


needs_mounts = pytest.mark.skipif(not _namespaces_work(),
                                  reason="needs `unshare --user --mount` to mount a read-only or full warehouse")


def in_namespace(setup: str, argv: list[str], after: str = "") -> subprocess.CompletedProcess:
    """``epm-spark ARGV`` in a private mount namespace prepared by the shell commands ``setup``."""
    cli = " ".join(f"'{a}'" for a in [sys.executable, "-m", "epm_spark.cli", *argv])
    script = f"set -e; {setup}; set +e; {cli}; rc=$?; {after or 'true'}; exit $rc"
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script], env=ENV,
                          capture_output=True, text=True, timeout=600)


def one_line_error(done: subprocess.CompletedProcess, verb: str) -> str:
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    [line] = [line for line in done.stderr.splitlines() if f"epm-spark {verb}: error:" in line]
    return line


@needs_mounts
def test_a_read_only_table_or_warehouse_fails_in_one_line_and_changes_nothing(loaded):
    base, v2, before, _ = loaded
    argv = ["--warehouse", base, "load-benchmark", "--benchmark", str(v2), "--run-id", "r2"]
    products = Path(base, "products")
    done = in_namespace(f"mount --bind '{products}' '{products}'; mount -o remount,bind,ro '{products}'", argv)
    line = one_line_error(done, "load-benchmark")
    assert f"table 'products': cannot write to {products}: Read-only file system; nothing was committed" in line
    assert same(contents(base), before) and not staged_files(base, "products")
    [failed] = read_runs(base, run_id="r2").to_dict("records")
    assert failed["status"] == "failed" and "table 'products': cannot write" in failed["error"]

    done = in_namespace(f"mount --bind '{base}' '{base}'; mount -o remount,bind,ro '{base}'",
                        [*argv[:-1], "r3"])
    assert "table 'job_runs': cannot write" in one_line_error(done, "load-benchmark")
    assert same(contents(base), before) and read_runs(base, run_id="r3").empty


@needs_mounts
def test_a_full_warehouse_fails_the_spark_write_in_one_line_and_leaves_no_files(spark, tmp_path):
    """Spark tasks hit ENOSPC on a small tmpfs; the error comes back from the Python workers as one line."""
    import random

    base, mount, kept = tmp_path / "base", tmp_path / "mnt", tmp_path / "after"
    small = tmp_path / "small.csv"
    small.write_text("sku,name,price\n1,Bosch drill,59.00\n")
    assert main(["--warehouse", str(base), "ingest", "--input", str(small), "--source", "ours", "--run-id", "n1"]) == 0
    before = contents(str(base))
    rng = random.Random(0)
    big = tmp_path / "big.csv"  # ~1.3 MB of text that compresses poorly
    big.write_text("sku,name,price,description\n" + "".join(
        f"{i},listing {i},{i}.00,{rng.randbytes(160).hex()}\n" for i in range(4000)))
    mount.mkdir()
    setup = (f"mount -t tmpfs -o size=4m tmpfs '{mount}'; cp -a '{base}/.' '{mount}/'; "
             f"dd if=/dev/zero of='{mount}/filler' bs=64k 2>/dev/null || true; truncate -s -320K '{mount}/filler'")
    done = in_namespace(setup, ["--warehouse", str(mount), "ingest", "--input", str(big), "--source", "ours",
                                "--run-id", "n2"],
                        after=f"rm '{mount}/filler'; cp -a '{mount}/.' '{kept}/'")
    line = one_line_error(done, "ingest")
    assert f"table 'products': cannot write to {mount}/products: No space left on device" in line
    assert same(contents(str(kept)), before)
    assert not staged_files(str(kept), "products")  # the files of the failed write were removed
    [failed] = read_runs(str(kept), run_id="n2").to_dict("records")
    assert failed["status"] == "failed" and "No space left on device" in failed["error"]
