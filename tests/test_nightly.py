"""The whole nightly pipeline on a small synthetic catalog, with tiny random models, in local Spark.

Night 1, night 1 again (same run id), then night 2 with listings added, changed and
removed; the analyst notebooks run top to bottom against the resulting warehouse.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from epm_spark.io import delta
from epm_spark.pipeline.catalog.generate import generate
from epm_spark.pipeline.catalog.nightly import Export, NightlyPlan, run_nightly
from catalog_tiny import COMPETITOR_A_MAP, TINY, tiny_encoder
from tiny_student import tiny_student  # noqa: F401

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def night(tmp_path_factory, tiny_student):
    root = tmp_path_factory.mktemp("nightly")
    from epm_spark.config import load_settings

    settings = load_settings(overrides=TINY, warehouse=str(root / "warehouse"))
    settings.encoder.backbone = tiny_encoder(root / "encoder")
    report = generate(settings, out=str(root / "exports1"), products=30, competitors=1, seed=3)
    exports = {"ours": Export(str(report.files["ours"]), currency="EUR"),
               "competitor_a": Export(str(report.files["competitor_a"]), COMPETITOR_A_MAP, "EUR")}
    return settings, exports, str(tiny_student), root


def table(settings, name, run_id):
    return delta.read_pandas(settings.warehouse, name, filters=[("run_id", "=", run_id)])


KEY = ["left_source", "right_source", "left_id", "right_id"]
STABLE = ("left_id", "right_id", "label", "decided_by", "cluster_id", "product_id", "our_id", "competitor_id",
          "percent", "rank")
RUN_TABLES = ("candidates", "matches", "clusters", "price_comparisons")


@pytest.fixture(scope="module")
def nights(spark, night):
    """Night 1, night 1 again with the same run id, then night 2 with listings removed, changed, added."""
    settings, exports, model, root = night
    run_nightly(spark, settings, NightlyPlan(exports, model=model), run_id="n1")
    first = {name: table(settings, name, "n1") for name in RUN_TABLES}
    # force: redo the finished steps, to check that doing a night twice changes nothing.
    run_nightly(spark, settings, NightlyPlan(exports, model=model), run_id="n1", force=True)
    again = {name: table(settings, name, "n1") for name in RUN_TABLES}

    ours_csv = pd.read_csv(exports["ours"].path, dtype=str)
    removed = ours_csv.product_id.iloc[:2].tolist()
    night2 = ours_csv.iloc[2:].copy()
    night2.loc[night2.index[0], "title"] = night2.iloc[0]["title"] + " NEW 2026 edition"
    night2 = pd.concat([night2, night2.iloc[:2].assign(product_id=["NEW1", "NEW2"])])
    path2 = root / "ours_night2.csv"
    night2.to_csv(path2, index=False)
    run_nightly(spark, settings, NightlyPlan({**exports, "ours": Export(str(path2), currency="EUR")}, model=model),
                run_id="n2")
    return {"settings": settings, "first": first, "again": again, "removed": removed,
            "changed": night2.product_id.iloc[0]}


def test_every_candidate_gets_one_decision(nights):
    candidates, matches = nights["first"]["candidates"], nights["first"]["matches"]
    assert len(candidates) > 0
    assert sorted(map(tuple, candidates[KEY].values)) == sorted(map(tuple, matches[KEY].values))
    assert set(matches.decided_by) <= {"floor", "label", "explain"}
    assert matches.label.isin(["match", "no_match"]).all()
    explained = matches[matches.decided_by == "explain"]
    assert explained.decision_json.notna().all()  # a format failure keeps the raw text


def test_clusters_cover_the_catalog_and_flag_big_ones(nights):
    settings = nights["settings"]
    latest = table(settings, "clusters", "n2")
    products = delta.read_pandas(settings.warehouse, "products", filters=[("source", "=", "ours")])
    assert sorted(latest.product_id) == sorted(products.product_id)  # the catalog as of night 2
    for clusters in (nights["first"]["clusters"], latest):
        assert (clusters.flagged == (clusters.cluster_size > 3)).all()
        sizes = clusters.groupby("cluster_id").product_id.count()
        assert (clusters.cluster_size == clusters.cluster_id.map(sizes)).all()


def test_price_comparisons_follow_accepted_matches(nights):
    matches, prices = nights["first"]["matches"], nights["first"]["price_comparisons"]
    accepted = matches[(matches.right_source == "competitor_a") & (matches.label == "match")]
    assert len(prices) == len(accepted)
    priced = prices.dropna(subset=["competitor_price", "our_price"])
    np.testing.assert_allclose(priced.difference, priced.competitor_price - priced.our_price, atol=0.011)


def test_rerunning_a_night_changes_nothing(nights):
    for name in RUN_TABLES:
        first, again = nights["first"][name], nights["again"][name]
        cols = [c for c in first.columns if c in STABLE]
        pd.testing.assert_frame_equal(first[cols].sort_values(cols).reset_index(drop=True),
                                      again[cols].sort_values(cols).reset_index(drop=True), obj=name)


def test_second_night_keeps_untouched_cluster_ids(nights):
    settings = nights["settings"]
    c1, c2 = table(settings, "clusters", "n1"), table(settings, "clusters", "n2")
    assert not set(nights["removed"]) & set(c2.product_id) and {"NEW1", "NEW2"} <= set(c2.product_id)
    members = lambda c: c.groupby("cluster_id").product_id.apply(frozenset)  # noqa: E731
    old, new = members(c1), members(c2)
    untouched = {ids: cid for cid, ids in old.items() if ids in set(new.values)}
    assert untouched, "some clusters should survive a night with four changed listings"
    new_by_members = {ids: cid for cid, ids in new.items()}
    assert all(new_by_members[ids] == cid for ids, cid in untouched.items())
    changes = table(settings, "cluster_changes", "n2")
    assert set(changes.previous_run_id) == {"n1"}
    assert set(changes.change) <= {"created", "merged", "split", "updated", "unchanged", "removed"}
    assert (changes.set_index("cluster_id").loc[list(untouched.values()), "change"] == "unchanged").all()
    embedded = delta.read_pandas(settings.warehouse, "embeddings", filters=[("source", "=", "ours")])
    assert set(embedded.loc[embedded.run_id == "n2", "product_id"]) == {nights["changed"], "NEW1", "NEW2"}


def test_a_night_that_names_vacuum_removes_old_killed_writes_last_and_keeps_every_row(spark, nights):
    import dataclasses

    from test_vacuum import killed_write

    from epm_spark.errors import ConfigError
    from epm_spark.pipeline.runs import read_runs

    settings = nights["settings"]
    folder = Path(settings.warehouse, "matches", "run_id=n2")
    killed = {"old": killed_write(folder, "0ld0ld", 10), "fresh": killed_write(folder, "fresh0", 0)}
    before = {name: table(settings, name, "n2") for name in RUN_TABLES}

    plan = NightlyPlan({"ours": Export("unused.csv")}, steps=["vacuum"])
    night = run_nightly(spark, settings, plan, run_id="n3")
    assert list(night.reports) == ["vacuum"]
    report = night.reports["vacuum"]
    assert [f for r in report.tables for f in r.files] == [f"run_id=n2/{killed['old'].name}"]
    assert "removed 1 files" in report.summary()
    assert not killed["old"].exists() and killed["fresh"].exists()  # younger than the retention: maybe a live write
    for name in RUN_TABLES:
        pd.testing.assert_frame_equal(table(settings, name, "n2"), before[name], obj=name)
    runs = read_runs(settings.warehouse, run_id="n3")
    assert set(zip(runs.step, runs.status)) >= {("vacuum", "succeeded")}
    killed["fresh"].unlink()

    # A plan naming vacuum over an object store is refused before the night starts: nothing recorded.
    remote = dataclasses.replace(settings, warehouse="s3://bucket/warehouse")
    with pytest.raises(ConfigError, match="steps: vacuum works on local or mounted warehouses; s3://bucket/warehouse"):
        run_nightly(spark, remote, plan, run_id="n4")
    assert read_runs(settings.warehouse, run_id="n4").empty


def test_a_night_with_a_mistyped_export_or_model_fails_before_its_first_step(spark, night, tmp_path):
    import dataclasses

    from epm_spark.errors import ConfigError

    base, exports, model, _ = night
    settings = dataclasses.replace(base, warehouse=str(tmp_path / "warehouse"))
    with pytest.raises(ConfigError, match="model: student .*no-model.* is neither"):
        run_nightly(spark, settings, NightlyPlan(exports, model=str(tmp_path / "no-model")), run_id="n1")
    assert delta.list_tables(settings.warehouse) == []  # not even the products of its ingest step
    # The second export is the bad one: ours used to be ingested before the night stopped.
    for export, error in ((Export(str(tmp_path / "missing.csv")), "exports: competitor_a: input .*missing.csv does not exist"),
                          (Export(exports["competitor_a"].path, COMPETITOR_A_MAP, "XYZ"),
                           "exports: competitor_a: currency 'XYZ' is not a known ISO 4217 code"),
                          (Export(exports["competitor_a"].path, {**COMPETITOR_A_MAP, "title": "titel"}, "EUR"),
                           "exports: competitor_a: --map title=titel: the input has no column 'titel'")):
        with pytest.raises(ConfigError, match=error):
            run_nightly(spark, settings, NightlyPlan({**exports, "competitor_a": export}, model=model), run_id="n1")
        assert delta.list_tables(settings.warehouse) == []
    settings.encoder = dataclasses.replace(settings.encoder, backbone=str(tmp_path / "no-encoder"))
    with pytest.raises(ConfigError, match="encoder.backbone: .*no-encoder.* is neither"):
        run_nightly(spark, settings, NightlyPlan(exports, model=model), run_id="n1")
    assert delta.list_tables(settings.warehouse) == []


def test_a_night_failing_in_match_resumes_at_match(spark, night, tmp_path):
    import dataclasses

    from epm_spark.pipeline.catalog.nightly import NightlyStepError
    from epm_spark.pipeline.runs import read_runs

    base, exports, model, _ = night
    settings = dataclasses.replace(base, warehouse=str(tmp_path / "warehouse"))
    broken = tmp_path / "broken-model"  # a model folder by its name, that no loader can read
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    with pytest.raises(NightlyStepError, match="step match:ours-ours failed"):
        run_nightly(spark, settings, NightlyPlan(exports, model=str(broken)), run_id="n1")
    first = read_runs(settings.warehouse, run_id="n1")
    assert not delta.table_exists(settings.warehouse, "matches")
    by_step = first.dropna(subset=["step"]).set_index("step").status.to_dict()
    assert by_step == {"ingest:ours": "succeeded", "ingest:competitor_a": "succeeded", "embed": "succeeded",
                       "block:ours-ours": "succeeded", "block:ours-competitor_a": "succeeded",
                       "match:ours-ours": "failed"}
    versions = {t: delta.table_version(settings.warehouse, t) for t in ("products", "embeddings", "candidates")}

    report = run_nightly(spark, settings, NightlyPlan(exports, model=model), run_id="n1")
    assert report.skipped == ["ingest:ours", "ingest:competitor_a", "embed", "block:ours-ours",
                              "block:ours-competitor_a"]
    assert {t: delta.table_version(settings.warehouse, t) for t in versions} == versions
    runs = read_runs(settings.warehouse, run_id="n1")
    assert sorted(runs[runs.job == "nightly"].status) == ["failed", "succeeded"]
    steps = runs.dropna(subset=["step"])
    assert steps.groupby("step").size().to_dict() == {**{s: 1 for s in by_step if s != "match:ours-ours"},
                                                      "match:ours-ours": 2, "match:ours-competitor_a": 1,
                                                      "dedup:ours": 1, "price-match": 1}
    matches = delta.read_pandas(settings.warehouse, "matches", filters=[("run_id", "=", "n1")])
    written = runs[(runs.step == "match:ours-competitor_a")].rows_written.iloc[0]
    assert written["matches"] == int((matches.right_source == "competitor_a").sum())


def test_a_night_killed_during_match_resumes_there_and_job_runs_agree_with_the_tables(spark, night, tmp_path,
                                                                                      caplog, capsys):
    """`epm-spark nightly` as a scheduler runs it: a real process, SIGKILLed while a match step runs."""
    import logging
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    from epm_spark.cli import main
    from epm_spark.pipeline.runs import read_runs

    settings, exports, model, _ = night
    warehouse = str(tmp_path / "warehouse")
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({
        "exports": {source: {k: v for k, v in vars(export).items() if v is not None}
                    for source, export in exports.items()},
        "model": model}))
    argv = ["--warehouse", warehouse, *[a for o in [*TINY, f"encoder.backbone={settings.encoder.backbone}"]
                                        for a in ("--set", o)],
            "nightly", "--plan", str(plan), "--run-id", "n1"]
    log = (tmp_path / "first-attempt.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "epm_spark.cli", "--set", "spark.master=local[2]", *argv],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 900
    try:
        while True:  # kill it once a match step has recorded its start and is at work
            assert proc.poll() is None, (tmp_path / "first-attempt.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no match step started within 900 s"
            runs = read_runs(warehouse, run_id="n1") if delta.table_exists(warehouse, "job_runs") else None
            if runs is not None and ((runs.step.fillna("").str.startswith("match:")) & (runs.status == "running")).any():
                time.sleep(1.0)
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.3)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    killed = read_runs(warehouse, run_id="n1")
    unfinished = killed[killed.status == "running"]
    [killed_step] = unfinished.step.dropna().tolist()
    assert killed_step.startswith("match:") and unfinished.job.tolist().count("nightly") == 1
    earlier = ["ingest:ours", "ingest:competitor_a", "embed", "block:ours-ours", "block:ours-competitor_a"]
    done_before = killed[killed.status == "succeeded"].step.tolist()
    assert set(earlier) <= set(done_before)
    versions = {t: delta.table_version(warehouse, t) for t in ("products", "embeddings", "candidates")}

    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger="epm_spark.pipeline.runs"):
        assert main(argv) == 0  # the same command again
    out = capsys.readouterr().out
    assert f"finished by an earlier attempt, not redone: {', '.join(done_before[::-1])}" in out
    assert "never finished (the process was killed)" in caplog.text
    assert {t: delta.table_version(warehouse, t) for t in versions} == versions  # ingest, embed, block not redone

    runs = read_runs(warehouse, run_id="n1")
    assert sorted(runs[runs.job == "nightly"].status) == ["running", "succeeded"]  # both attempts
    steps = runs.dropna(subset=["step"]).groupby("step").status.apply(sorted).to_dict()
    assert steps.pop(killed_step) == ["running", "succeeded"]
    assert set(steps) == {*earlier, "match:ours-ours", "match:ours-competitor_a", "dedup:ours",
                          "price-match"} - {killed_step}
    assert all(statuses == ["succeeded"] for statuses in steps.values()), steps

    # job_runs agrees with the tables: the rows each table holds are the rows the steps say they
    # wrote (a fresh warehouse, one run), and the newest version a step committed is the table's.
    finished = runs[runs.step.notna() & (runs.status == "succeeded")]
    written: dict[str, int] = {}
    committed: dict[str, int] = {}
    for row in finished.itertuples():
        for table_name, n in row.rows_written.items():
            written[table_name] = written.get(table_name, 0) + n
        for table_name, v in row.table_versions.items():
            committed[table_name] = max(committed.get(table_name, -1), v)
    assert set(written) == {"products", "products_quarantine", "embeddings", "candidates", "matches", "clusters",
                            "cluster_changes", "price_comparisons"}
    for table_name, n in written.items():
        assert len(delta.read_pandas(warehouse, table_name)) == n, table_name
        assert delta.table_version(warehouse, table_name) == committed[table_name], table_name
    ingests = finished[finished.job == "ingest"]
    for row in ingests.itertuples():  # and every row read went somewhere
        assert sum(row.rows_read.values()) == row.rows_written["products"] + row.rows_written["products_quarantine"]


@pytest.mark.parametrize("notebook", sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb")))
def test_notebooks_run_against_the_nightly_warehouse(nights, notebook, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    settings = nights["settings"]
    monkeypatch.setenv("EPM_WAREHOUSE", settings.warehouse)
    nb = nbformat.read(REPO / "notebooks" / notebook, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    outputs = [o for cell in code for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("run n2" in "".join(o.get("text", "")) for o in outputs)
    # Each chart must reach the notebook as an image: a forced non-interactive backend draws nothing inline.
    charts = [cell for cell in code if "plt.show()" in cell.source]
    assert charts, f"{notebook} has no chart"
    for cell in charts:
        assert any("image/png" in o.get("data", {}) for o in cell.outputs), cell.source.splitlines()[0]
    assert not any('matplotlib.use(' in cell.source for cell in code)
