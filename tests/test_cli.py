"""The epm-spark command end to end: generate, ingest with --map, sql, tables; errors in one line."""

import json
from pathlib import Path

from epm_spark.cli import main
from epm_spark.io import delta
from epm_spark.spark import MIN_JAVA, check_java
from epm_spark.errors import EnvironmentProblem

import pytest


def test_generate_ingest_and_query(spark, warehouse, tmp_path, capsys):
    exports = tmp_path / "exports"
    base = ["--warehouse", warehouse]
    assert main([*base, "generate", "--products", "60", "--competitors", "1", "--seed", "3",
                 "--out", str(exports)]) == 0
    assert main([*base, "ingest", "--input", str(exports / "ours.csv"), "--source", "ours", "--run-id", "n1"]) == 0
    assert main([*base, "ingest", "--input", str(exports / "competitor_a.csv"), "--source", "competitor_a",
                 "--map", "product_id=artikelnummer", "--map", "title=bezeichnung", "--map", "brand=marke",
                 "--map", "price=preis", "--map", "category=kategorie", "--map", "description=beschreibung",
                 "--currency", "eur",
                 "--run-id", "n1"]) == 0
    out = capsys.readouterr().out
    assert "check: products + quarantined == rows read" in out
    assert main([*base, "sql", "SELECT source, count(*) AS n, min(currency) AS cur FROM products "
                 "GROUP BY source ORDER BY source", "--format", "json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["source"] for r in rows] == ["competitor_a", "ours"]
    assert all(r["n"] > 30 and r["cur"] == "EUR" for r in rows)
    assert main([*base, "tables", "--json"]) == 0
    tables = {t["table"] for t in json.loads(capsys.readouterr().out)}
    assert tables == {"labelled_pairs", "products", "products_quarantine", "job_runs"}


def test_user_errors_exit_2_with_one_line(spark, warehouse, capsys):
    assert main(["--warehouse", warehouse, "ingest", "--input", "/nope.csv", "--source", "x"]) == 2
    err = capsys.readouterr().err
    assert "error: input /nope.csv does not exist" in err and "Traceback" not in err
    assert main(["--warehouse", warehouse, "sql", "SELECT * FROM products"]) == 2
    assert "TABLE_OR_VIEW_NOT_FOUND" in capsys.readouterr().err


def test_a_mistyped_warehouse_is_refused_not_created(tmp_path, capsys):
    typo = tmp_path / "warehuose"
    for verb in (["embed", "--source", "ours"], ["tables"], ["sql", "SELECT 1"], ["train-ranker"], ["train-judge"],
                 ["evaluate", "ranking", "--model", str(tmp_path / "ranker")]):
        assert main(["--warehouse", str(typo), *verb]) == 2, verb
        err = capsys.readouterr().err
        assert f"warehouse {typo} does not exist; check --warehouse" in err and "Traceback" not in err, verb
        assert not typo.exists(), verb
    # A verb that starts a warehouse creates it; one that reads only benchmark folders never looks.
    assert main(["--warehouse", str(typo), "generate", "--products", "20", "--competitors", "0",
                 "--out", str(tmp_path / "exports")]) == 0
    assert typo.is_dir()
    assert main(["--warehouse", str(tmp_path / "other"), "schema"]) == 0
    # A judge trained on benchmark folders needs no warehouse: its own error comes instead.
    assert main(["--warehouse", str(tmp_path / "third"), "train-judge", "--from-benchmark",
                 str(tmp_path / "no-bench")]) == 2
    err = capsys.readouterr().err
    assert "does not exist; check --warehouse" not in err and "no-bench" in err


def test_java_missing_or_too_old_says_how_to_install(monkeypatch, tmp_path):
    fake = tmp_path / "jdk" / "bin"
    fake.mkdir(parents=True)
    java = fake / "java"
    java.write_text('#!/bin/sh\necho \'openjdk version "11.0.2" 2019-01-15\' >&2\n')
    java.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    with pytest.raises(EnvironmentProblem, match=rf"needs Java {MIN_JAVA} or newer, but .* is Java 11.*apt-get install"):
        check_java()
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "nowhere"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EnvironmentProblem, match="needs Java, and none was found"):
        check_java()


def test_evaluate_teacher_runs_on_a_benchmark_folder(tmp_path, capsys):
    bench = tmp_path / "mini"
    bench.mkdir()
    (bench / "tableA.csv").write_text("id,title\n0,Samsung 870 EVO 1TB SSD\n1,Logitech M185 mouse grey\n")
    (bench / "tableB.csv").write_text("id,title\n0,Samsung 870 EVO 1 TB SSD\n1,Samsung 870 EVO 2TB SSD\n")
    (bench / "train.csv").write_text("ltable_id,rtable_id,label\n0,0,1\n0,1,0\n1,1,0\n")
    assert main(["evaluate", "teacher", "--benchmark", str(bench), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["benchmark"] == "mini" and result["pairs"] == 3 and result["teacher"] == "agentic"


def test_interrupt_does_not_claim_that_nothing_changed(monkeypatch, warehouse, capsys):
    import epm_spark.pipeline.catalog.generate as generate

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "generate", interrupted)
    assert main(["--warehouse", warehouse, "generate"]) == 130
    err = capsys.readouterr().err
    assert "no table was changed" not in err
    assert "committed before the interruption keep their new version" in err


def test_transformers_bound_allows_only_versions_that_read_a_float_warmup_as_a_ratio():
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement
    from packaging.version import Version

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    [req] = [Requirement(r) for r in project["project"]["dependencies"] if Requirement(r).name == "transformers"]
    assert not req.specifier.contains(Version("4.57.0"))
    assert req.specifier.contains(Version("5.0.0"))


@pytest.mark.parametrize("plan, message", [
    (None, "nightly plan {path} does not exist"),
    ("exports: {competitor_a: {path: a.csv}}\n", "ours: no export for our catalog 'ours'"),
    ("exports: {ours: {path: o.csv}}\nsteps: [ingest, teleport]\n", "setting 'steps[1]' must be one of"),
    ("exports: {ours: {path: o.csv, delimiter: ';'}}\n", "unknown setting 'exports.ours.delimiter'"),
])
def test_nightly_plan_errors_are_one_line(tmp_path, warehouse, capsys, plan, message):
    path = tmp_path / "plan.yaml"
    if plan is not None:
        path.write_text(plan)
    assert main(["--warehouse", warehouse, "nightly", "--plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert message.format(path=path) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_ingest_and_nightly_check_their_exports_before_spark_starts(tmp_path, warehouse, monkeypatch, capsys):
    import epm_spark.cli.catalog
    import epm_spark.cli.warehouse

    def no_spark(settings):
        raise AssertionError("Spark started before the inputs were checked")

    monkeypatch.setattr(epm_spark.cli.warehouse, "spark_session", no_spark)
    monkeypatch.setattr(epm_spark.cli.catalog, "spark_session", no_spark)
    export = tmp_path / "a.csv"
    export.write_text("sku,name\n1,Kettle\n")
    assert main(["--warehouse", warehouse, "ingest", "--input", str(export), "--source", "ours",
                 "--map", "product_id=sku", "--map", "title=titel"]) == 2
    assert "--map title=titel: the input has no column 'titel'; columns: sku, name" in capsys.readouterr().err
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"exports: {{ours: {{path: {export}, column_map: {{product_id: sku, title: name}}}}, "
                    f"competitor_a: {{path: {tmp_path / 'missing.csv'}}}}}\nsteps: [ingest]\n")
    assert main(["--warehouse", warehouse, "nightly", "--plan", str(plan)]) == 2
    assert "exports: competitor_a: input" in capsys.readouterr().err
    assert delta.list_tables(warehouse) == ["job_runs"]  # the failed ingest attempt, and nothing else


def test_shipped_nightly_plan_loads():
    from pathlib import Path

    from epm_spark.pipeline.catalog.nightly import STEPS, load_plan

    plan = load_plan(Path(__file__).resolve().parents[1] / "conf" / "nightly.yaml")
    assert plan.ours == "ours" and plan.competitors and plan.steps == list(STEPS)


@pytest.mark.parametrize("args", [
    ["block", "--left", "ours", "--k", "0"],                    # used to run with block.k instead
    ["teach", "--benchmark", "b", "--limit", "-5"],            # used to drop the last 5 pairs
    ["train-ranker", "--max-queries", "0"],                    # used to train on the default 2,000
    ["train-ranker", "--max-steps", "-1"],                     # used to end in an IndexError
    ["evaluate", "pipeline", "--benchmark", "b", "--model", "m", "--queries", "-3"],
    ["generate", "--products", "two"],
])
def test_sizes_must_be_whole_numbers_of_at_least_one(warehouse, tmp_path, capsys, args):
    flag = next(a for a in args if a.startswith("--") and a not in ("--left", "--benchmark", "--model"))
    with pytest.raises(SystemExit) as exc:
        main(["--warehouse", warehouse, *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: must be a whole number >= 1, got" in err
    assert not list(Path(warehouse).glob("*"))


def test_generate_refuses_competitors_it_has_no_style_for(warehouse, tmp_path, capsys):
    for competitors in ("4", "-1"):
        assert main(["--warehouse", warehouse, "generate", "--out", str(tmp_path / "exports"),
                     "--competitors", competitors]) == 2
        assert f"competitors must be 0 to 3 (the competitor styles defined), got {competitors}" in \
            capsys.readouterr().err
    assert not (tmp_path / "exports").exists()
