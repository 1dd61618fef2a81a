"""The whole `epm-spark` parser: every verb has a handler and a working --help, every verb the README
shows exists, and each README verb runs once through `main([...])` on tiny data, here or in the test
named in ELSEWHERE."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from epm_spark.cli import build_parser, main
from epm_spark.io import delta
from catalog_tiny import COMPETITOR_A_MAP, TINY, tiny_encoder
from tiny_student import tiny_student  # noqa: F401

REPO = Path(__file__).resolve().parents[1]

# README verbs that other tests already run through main([...]), and where.
ELSEWHERE = {
    "generate": "test_cli.py", "ingest": "test_cli.py", "sql": "test_cli.py", "tables": "test_cli.py",
    "vacuum": "test_vacuum.py",
    "evaluate teacher": "test_cli.py", "nightly": "test_nightly.py",
    "train-encoder": "test_encoder_cli.py", "evaluate retrieval": "test_encoder_cli.py",
    "teach": "test_matcher_judges.py", "review export": "test_matcher_review.py",
    "review import": "test_review_import.py", "review serve": "test_review_page.py",
    "train-matcher": "test_matcher_cascade.py",
    "evaluate matching": "test_matcher_cascade.py",
    "generate-search-log": "test_search_jobs.py", "ingest-events": "test_search_jobs.py",
    "train-ranker": "test_search_jobs.py", "rank": "test_search_jobs.py", "evaluate ranking": "test_search_jobs.py",
    "teach-rewrites": "test_rewrite_jobs.py", "train-rewriter": "test_rewrite_jobs.py", "rewrite": "test_rewrite_jobs.py",
    "evaluate rewriting": "test_rewrite_jobs.py",
}
# Run below.
HERE = {"load-benchmark", "schema", "embed", "block", "match", "dedup", "price-match", "runs",
        "evaluate blocking", "evaluate pipeline"}


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = (), handler=None):
    """``(path, parser, handler)`` of every command, groups (``evaluate``) and leaves alike; a group's
    handler (``review``) serves its actions."""
    handler = parser.get_default("func") or handler
    yield path, parser, handler
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name), handler)


def leaves() -> dict[str, object]:
    """Each leaf command's handler."""
    found = {}
    for path, parser, handler in commands(build_parser()):
        if path and not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            found[" ".join(path)] = handler
    return found


def readme_verbs() -> set[str]:
    """`epm-spark VERB [ACTION]` of every command line in the README's code blocks."""
    groups = {p.split()[0] for p in leaves() if " " in p}
    verbs = set()
    for block in re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S):
        for m in re.finditer(r"^\s*epm-spark\s+((?:--?\S+\s+(?!-)\S+\s+)*)([a-z-]+)(?:\s+([a-z-]+))?", block, re.M):
            verb, action = m.group(2), m.group(3)
            verbs.add(f"{verb} {action}" if verb in groups else verb)
    return verbs


def test_every_command_has_a_handler_and_its_help_works(capsys):
    found = leaves()
    assert len(found) >= 20
    for name, handler in found.items():
        assert callable(handler), f"`epm-spark {name}` registers no handler"
    for path, _, _ in commands(build_parser()):
        with pytest.raises(SystemExit) as exit:
            main([*path, "--help"])
        assert exit.value.code == 0, path
        out = capsys.readouterr().out
        assert out.startswith(" ".join(["usage: epm-spark", *path])), out[:200]


def test_every_readme_verb_exists_and_is_run_by_a_test():
    verbs, found = readme_verbs(), leaves()
    assert {"nightly", "runs", "evaluate pipeline", "review export"} <= verbs  # the parse sees them
    assert verbs <= set(found), f"README shows verbs the parser lacks: {sorted(verbs - set(found))}"
    assert verbs <= HERE | set(ELSEWHERE), f"README verbs no test runs: {sorted(verbs - HERE - set(ELSEWHERE))}"
    for verb, test_file in ELSEWHERE.items():
        words = [f'"{w}"' for w in verb.split()]
        source = (REPO / "tests" / test_file).read_text()
        assert all(w in source for w in words) and "main(" in source, f"{test_file} does not run {verb}"


def test_readme_verbs_run_on_tiny_data(spark, tmp_path, tiny_student, capsys):
    warehouse = str(tmp_path / "warehouse")
    encoder = tiny_encoder(tmp_path / "encoder")
    g = ["--warehouse", warehouse, *[a for o in [*TINY, f"encoder.backbone={encoder}"] for a in ("--set", o)]]
    run = ["--run-id", "w1"]
    exports = tmp_path / "exports"
    assert main([*g, "generate", "--products", "30", "--competitors", "1", "--seed", "3", "--out", str(exports)]) == 0
    assert main([*g, "ingest", "--input", str(exports / "ours.csv"), "--source", "ours", "--currency", "EUR", *run]) == 0
    maps = [a for target, column in COMPETITOR_A_MAP.items() for a in ("--map", f"{target}={column}")]
    assert main([*g, "ingest", "--input", str(exports / "competitor_a.csv"), "--source", "competitor_a", *maps,
                 "--currency", "EUR", *run]) == 0
    capsys.readouterr()

    assert main([*g, "schema", "matches"]) == 0
    out = capsys.readouterr().out
    assert "matches" in out and "probability" in out and "decided_by" in out

    assert main([*g, "embed", "--source", "ours", "--source", "competitor_a", *run]) == 0
    assert main([*g, "block", "--left", "ours", "--right", "competitor_a", "--k", "3", *run]) == 0
    assert main([*g, "block", "--left", "ours", "--k", "3", *run]) == 0
    assert main([*g, "match", "--left", "ours", "--right", "competitor_a", "--model", str(tiny_student), *run]) == 0
    assert main([*g, "match", "--left", "ours", "--model", str(tiny_student), *run]) == 0
    assert main([*g, "dedup", "--source", "ours", *run]) == 0
    assert main([*g, "price-match", "--ours", "ours", "--competitors", "competitor_a", *run]) == 0
    products = delta.read_pandas(warehouse, "products")
    embeddings = delta.read_pandas(warehouse, "embeddings")
    assert len(embeddings) == len(products) > 0
    candidates = delta.read_pandas(warehouse, "candidates", filters=[("run_id", "=", "w1")])
    matches = delta.read_pandas(warehouse, "matches", filters=[("run_id", "=", "w1")])
    assert len(matches) == len(candidates) > 0  # one decision per candidate pair
    clusters = delta.read_pandas(warehouse, "clusters", filters=[("run_id", "=", "w1")])
    assert sorted(clusters.product_id) == sorted(products[products.source == "ours"].product_id)
    capsys.readouterr()

    assert main([*g, "runs", "--run-id", "w1", "--json"]) == 0
    attempts = json.loads(capsys.readouterr().out)
    assert sorted(a["job"] for a in attempts) == ["block", "block", "dedup", "embed", "ingest", "ingest", "match",
                                                  "match", "price-match"]
    assert {a["status"] for a in attempts} == {"succeeded"}
    written = {}
    for a in attempts:
        for table, n in a["rows_written"].items():
            written[table] = written.get(table, 0) + n
    assert written["candidates"] == len(candidates) and written["matches"] == len(matches)
    assert written["price_comparisons"] == len(delta.read_pandas(warehouse, "price_comparisons"))

    bench = tmp_path / "toy"
    bench.mkdir()
    left = ["sony turntable black", "bose speaker mini", "canon camera lens", "dell laptop 16gb"]
    right = ["sony turntable black new", "bose speaker", "canon camera", "dell laptop 16gb silver", "hp printer"]
    (bench / "tableA.csv").write_text("id,title\n" + "".join(f"{i},{t}\n" for i, t in enumerate(left)))
    (bench / "tableB.csv").write_text("id,title\n" + "".join(f"{i},{t}\n" for i, t in enumerate(right)))
    (bench / "test.csv").write_text("ltable_id,rtable_id,label\n0,0,1\n1,1,1\n2,2,1\n3,3,1\n3,4,0\n")
    assert main([*g, "load-benchmark", "--benchmark", str(bench)]) == 0
    assert re.search(r"products +toy_left +4 listings", capsys.readouterr().out)
    assert len(delta.read_pandas(warehouse, "labelled_pairs", filters=[("benchmark", "=", "toy")])) == 5

    assert main([*g, "evaluate", "blocking", "--benchmark", str(bench), "--k", "2", "--model", encoder, "--json"]) == 0
    blocking = json.loads(capsys.readouterr().out)
    assert blocking["candidates@2"] == 4 * 2 and 0 <= blocking["pair_completeness@2"] <= 1
    assert main([*g, "evaluate", "pipeline", "--benchmark", str(bench), "--encoder", encoder,
                 "--model", str(tiny_student), "--k", "2", "--json"]) == 0
    pipeline = json.loads(capsys.readouterr().out)
    assert pipeline["left_listings"] == 4 and pipeline["candidates"] == 8 and pipeline["true_matches"] == 4
