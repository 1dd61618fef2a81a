"""``make demo``: the whole nightly run on the embedded default, on this machine.

    python -m epm_spark.demo [--warehouse DIR] [--products N] [--competitors M] [--retrain]

1. generate our catalog and competitors' catalogs as export files (with ground truth);
2. ingest each the way a user would (``--map`` for the shop whose export speaks German);
3. on the first run only, train the matcher cascade through the real job
   (``train-matcher --stage all``: teacher, cross-encoder, student SFT and RL, combiners)
   on the labelled pairs of a separate synthetic training catalog, with a CPU-sized
   budget, and cache it;
4. embed, block, match, dedup and price-match, as the nightly batch does;
5. print a summary: the matches' precision, recall and F1 against the generator's truth,
   where the tables are, and queries to try.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import shutil
import sys
import time
from pathlib import Path

from epm_spark.cli import default_run_id, setup_logging
from epm_spark.config import Settings, load_settings

log = logging.getLogger("epm_spark.demo")

# How each synthetic shop's export maps onto products columns (what a user passes as --map).
EXPORT_MAPS = {
    "competitor_a": {"product_id": "artikelnummer", "title": "bezeichnung", "brand": "marke", "price": "preis",
                     "category": "kategorie", "description": "beschreibung"},
}
EXPORT_CURRENCY = {"ours": "EUR", "competitor_a": "EUR", "competitor_c": "GBP"}
# Bump when the demo's training recipe changes, so a stale cached matcher is not reused.
DEMO_MATCHER_RECIPE = 9

EXAMPLE_QUERIES = [
    "SELECT source, count(*) AS listings, round(avg(price), 2) AS avg_price FROM products GROUP BY source ORDER BY source",
    "SELECT our_title, competitor_source, our_price, competitor_price, percent FROM price_comparisons "
    "WHERE percent < 0 AND NOT implausible ORDER BY percent LIMIT 10",
    "SELECT cluster_id, cluster_size, collect_list(product_id) AS listings FROM clusters WHERE cluster_size > 1 "
    "GROUP BY cluster_id, cluster_size ORDER BY cluster_size DESC LIMIT 10",
]


def _header(title: str) -> None:
    print(f"\n== {title}", flush=True)


def demo_matcher_dir(settings: Settings) -> Path:
    from epm_spark.models.weights import cache_dir

    d = settings.demo
    student = Path(str(settings.matcher.student)).name.replace(":", "-")
    return cache_dir() / "demo-matcher" / (f"r{DEMO_MATCHER_RECIPE}-{student}-p{d.training_products}"
                                           f"-ce{d.cross_encoder_epochs:g}"
                                           f"-sft{d.sft_steps}x{d.sft_examples}-rl{d.rl_steps}x{d.rl_examples}")


def demo_training_settings(settings: Settings, work: Path) -> Settings:
    """The cascade recipe with the demo's CPU budget, on a training warehouse of its own."""
    d, m = settings.demo, settings.matcher
    cascade = dataclasses.replace(
        m.cascade, cross_encoder=dataclasses.replace(m.cascade.cross_encoder, epochs=d.cross_encoder_epochs),
        label_examples=d.sft_examples, explain_examples=min(m.cascade.explain_examples, d.sft_examples // 4),
        student_valid_pairs=min(m.cascade.student_valid_pairs, 200),
        # The training catalog names other products with the night's sources and id scheme: its
        # matches are no known matches of the night's listings.
        known_matches=False)
    matcher = dataclasses.replace(m, models_dir=str(work), cascade=cascade,
                                  sft=dataclasses.replace(m.sft, max_steps=d.sft_steps),
                                  rl=dataclasses.replace(m.rl, max_steps=max(d.rl_steps, 1), pool=d.rl_examples))
    return dataclasses.replace(settings, matcher=matcher, warehouse=str(work / "warehouse"))


def ensure_demo_matcher(settings: Settings, spark, run_id: str, *, retrain: bool = False) -> Path:
    """The cached demo matcher; trained through ``train-matcher --stage all`` when there is none.

    It learns from a training catalog of its own (other products, other seed, its own
    warehouse), the way a shop trains on its labelled history, and is then judged on the
    night's catalogs it has never seen.
    """
    from epm_spark.models.matcher.model_folder import is_model_folder
    from epm_spark.pipeline.catalog.generate import generate
    from epm_spark.pipeline.catalog.nightly import Export, NightlyPlan, run_nightly
    from epm_spark.pipeline.matcher.train_matcher import train_matcher
    from epm_spark.pipeline.catalog.truth import label_candidates

    final = demo_matcher_dir(settings)
    if is_model_folder(final) and not retrain:
        print(f"using the cached demo matcher {final}")
        return final
    d = settings.demo
    print(f"no trained matcher yet: training the cascade on a synthetic training catalog of {d.training_products} "
          f"products (first run only):\nteacher, cross-encoder {d.cross_encoder_epochs:g} epochs, student SFT "
          f"{d.sft_steps} steps and RL {d.rl_steps} steps, combiners on valid; cached in {final}", flush=True)
    work = final.with_name(final.name + ".partial")
    t = time.monotonic()
    local = demo_training_settings(settings, work)
    # A killed first run leaves .partial: train-matcher continues from its finished tiers.
    if not Path(local.warehouse, "labelled_pairs").is_dir():
        report = generate(local, out=str(work / "exports"), products=d.training_products,
                          competitors=d.competitors, seed=settings.generate.seed + 1000)
        exports = {source: Export(str(path), EXPORT_MAPS.get(source), EXPORT_CURRENCY.get(source))
                   for source, path in report.files.items()}
        # The training catalog's own night up to blocking: its candidates, labelled from the truth,
        # are the pairs the matcher will be asked about (other brands of a category, sizes of a
        # model, our own duplicates), which the generator's pairs alone under-represent.
        run_nightly(spark, local, NightlyPlan(exports, "ours", steps=["ingest", "embed", "block"]),
                    run_id=run_id, force=True)
        added = label_candidates(local.warehouse, work / "exports" / "truth.csv", run_id)
        print(f"labelled {added:,} blocking candidates of the training catalog", flush=True)
    card, model = train_matcher(local, stage="all", benchmarks=["synthetic"], out=str(work / "cascade"))
    held_out = card.metrics["validation"]["fast_combiner_held_out"]
    print(f"cascade: {model} in {time.monotonic() - t:.0f} s; held-out valid F1 {held_out['f1']:.3f}", flush=True)
    shutil.rmtree(final, ignore_errors=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(model), str(final))
    shutil.rmtree(work, ignore_errors=True)
    return final


def print_quality(settings: Settings, truth_csv: Path, run_id: str, undercuts: list[dict]) -> dict:
    """The night's matches against the generator's truth, and any wrong match behind a listed undercut
    (``undercuts``: the rows the price-match summary lists)."""
    from epm_spark.pipeline.catalog.truth import score_matches, wrong_matches

    scores = score_matches(settings.warehouse, truth_csv, run_id)
    print("matches against truth.csv:")
    for score in scores:
        print(score.line())
    wrong = wrong_matches(truth_csv, [(u["our_source"], u["our_id"], u["competitor_source"], u["competitor_id"])
                                      for u in undercuts])
    print(f"largest undercuts listed: {len(undercuts)}, of them wrong matches: {len(wrong)}")
    return {"f1": {f"{s.left}->{s.right}": s.f1 for s in scores}, "wrong_undercuts": len(wrong)}


def run_demo(settings: Settings, *, products: int | None = None, competitors: int | None = None,
             retrain: bool = False) -> dict:
    from epm_spark.io.delta import describe_warehouse
    from epm_spark.pipeline.catalog.generate import generate
    from epm_spark.pipeline.catalog.nightly import DEFAULT_STEPS, Export, NightlyPlan, run_nightly
    from epm_spark.pipeline.sql import run_sql
    from epm_spark.spark import get_spark

    run_id = default_run_id()
    settings.block.k = settings.demo.k
    settings.match.max_explain_per_batch = settings.demo.max_explain_per_batch
    timings: dict[str, float] = {}
    start = time.monotonic()

    _header("1/5 generate synthetic catalog exports (ours + competitors, with ground truth)")
    report = generate(settings, products=products or settings.demo.products,
                      competitors=competitors or settings.demo.competitors)
    print(report.summary())
    exports = {source: Export(str(path), EXPORT_MAPS.get(source), EXPORT_CURRENCY.get(source))
               for source, path in report.files.items()}

    spark = get_spark(settings)
    _header("2/5 ingest every export into products (bad rows into products_quarantine)")
    t = time.monotonic()
    # The nightly command's own path, in two parts: the matcher is trained on the ingested catalogs.
    # force: a demo run redoes its night even when an earlier demo the same day finished it.
    plan = NightlyPlan(exports, "ours", steps=["ingest"])
    run_nightly(spark, settings, plan, run_id=run_id, force=True)
    timings["ingest"] = time.monotonic() - t

    _header("3/5 the matcher")
    t = time.monotonic()
    model = settings.match.model or str(ensure_demo_matcher(settings, spark, run_id, retrain=retrain))
    timings["matcher"] = time.monotonic() - t

    _header("4/5 nightly batch: embed, block, match, dedup, price-match")
    t = time.monotonic()
    plan = NightlyPlan(exports, "ours", model=model, steps=[s for s in DEFAULT_STEPS if s != "ingest"])
    night = run_nightly(spark, settings, plan, run_id=run_id, force=True)
    timings.update({k: v for k, v in night.seconds.items()})
    timings["nightly"] = time.monotonic() - t

    _header("5/5 summary")
    for q in (EXAMPLE_QUERIES[0],):
        out = io.StringIO()
        run_sql(spark, settings, q, out=out)
        print(out.getvalue(), end="")
    price = night.reports.get("price-match")
    if price is not None:
        print(price.summary())
    quality = print_quality(settings, report.out / "truth.csv", run_id, price.biggest_gaps if price else [])
    print(f"\nwarehouse: {Path(settings.warehouse).resolve()}")
    for row in describe_warehouse(settings.warehouse):
        print(f"  {row['table']:<22} {row['rows']:>8,} rows  version {row['version']}")
    print("\ntry:")
    for q in EXAMPLE_QUERIES:
        print(f'  .venv/bin/epm-spark sql "{q}"')
    print("  notebooks/price_gaps.ipynb and notebooks/cluster_review.ipynb read this warehouse")
    total = time.monotonic() - start
    print("\ntimings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + f"; total {total:.0f} s")
    return {"timings": timings, "quality": quality}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m epm_spark.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--warehouse", default=None)
    parser.add_argument("--conf", default=None)
    parser.add_argument("--products", type=int, default=None)
    parser.add_argument("--competitors", type=int, default=None)
    parser.add_argument("--retrain", action="store_true", help="train the demo matcher again")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    setup_logging()
    from epm_spark.errors import EpmError

    try:
        settings = load_settings(args.conf, args.overrides, warehouse=args.warehouse)
        run_demo(settings, products=args.products, competitors=args.competitors, retrain=args.retrain)
    except EpmError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
