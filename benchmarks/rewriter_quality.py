"""The query rewriter at its default size, end to end, timed: the figures of docs/rewriter.md.

    python benchmarks/rewriter_quality.py [--warehouse DIR] [--models DIR] [--set KEY=VALUE ...]

In a scratch warehouse (or ``--warehouse``, reusing what an earlier run left there), through the
``epm-spark`` verbs a person would type:

1. ``generate-search-log``: shopper queries with graded listings on the real titles of
   ``../shared/data/benchmarks`` (skipped when the warehouse has them);
2. ``embed --source catalog``: the catalog's listing vectors (skipped when present);
3. ``teach-rewrites``: the agentic teacher's rewrites;
4. ``train-rewriter --stage distill`` then ``--stage rl``, each timed: the 60-minute budget;
5. ``evaluate rewriting --json`` on the held-out (test) queries.

Prints one JSON object: the seconds of each step, the machine, and the evaluation report
(NDCG@10 and recall@10 per system, drift and distinct-rewrite rates, ms per query, and the
paired bootstrap intervals of RL - original and RL - distill).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warehouse", default=None, help="warehouse to use (default: a scratch folder)")
    parser.add_argument("--models", default=None, help="rewriter models folder (default: WAREHOUSE/../models)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="setting overrides")
    parser.add_argument("--run-id", default="rw-bench")
    args = parser.parse_args(argv)

    from epm_spark.cli import main as epm
    from epm_spark.io import delta

    warehouse = args.warehouse or tempfile.mkdtemp(prefix="epm-rewriter-")
    models = args.models or str(Path(warehouse).parent / "rewriter-models")
    base = ["--warehouse", warehouse, "--set", f"rewriter.models_dir={models}",
            *[a for s in args.set for a in ("--set", s)]]
    seconds: dict[str, float] = {}

    def step(name: str, *verb: str, capture: bool = False) -> str:
        start = time.monotonic()
        out = io.StringIO()
        # stdout carries only the JSON: the verbs' own reports go to stderr with the logs.
        with contextlib.redirect_stdout(out if capture else sys.stderr):
            code = epm([*base, *verb])
        seconds[name] = round(time.monotonic() - start, 1)
        if code != 0:
            raise SystemExit(f"{name} failed with status {code}")
        print(f"{name}: {seconds[name]} s", file=sys.stderr)
        return out.getvalue()

    if not delta.table_exists(warehouse, "query_judgments"):
        step("generate-search-log", "generate-search-log", "--run-id", args.run_id)
    if not delta.table_exists(warehouse, "embeddings"):
        step("embed", "embed", "--source", "catalog", "--run-id", args.run_id)
    step("teach-rewrites", "teach-rewrites", "--run-id", args.run_id)
    step("distill", "train-rewriter", "--stage", "distill")
    step("rl", "train-rewriter", "--stage", "rl")
    report = json.loads(step("evaluate", "evaluate", "rewriting", "--json", capture=True))
    print(json.dumps({"machine": f"{platform.machine()} {os.cpu_count()} cores", "warehouse": warehouse,
                      "models": models, "seconds": seconds,
                      "train_minutes": round((seconds["distill"] + seconds["rl"]) / 60, 1),
                      "evaluation": report}, indent=2, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
