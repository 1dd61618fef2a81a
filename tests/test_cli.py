"""The epm-spark command end to end: generate, ingest with --map, sql, tables; errors in one line."""

import json

from epm_spark.cli import main
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
    assert tables == {"labelled_pairs", "products", "products_quarantine"}


def test_user_errors_exit_2_with_one_line(spark, warehouse, capsys):
    assert main(["--warehouse", warehouse, "ingest", "--input", "/nope.csv", "--source", "x"]) == 2
    err = capsys.readouterr().err
    assert "error: input /nope.csv does not exist" in err and "Traceback" not in err
    assert main(["--warehouse", warehouse, "sql", "SELECT * FROM products"]) == 2
    assert "TABLE_OR_VIEW_NOT_FOUND" in capsys.readouterr().err


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
