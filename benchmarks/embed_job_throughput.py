"""Titles per second of the Spark ``embed`` job versus the same model in a plain loop.

    python benchmarks/embed_job_throughput.py [--titles 4000] [--model packaged:minilm] [--master local[2]]

Both embed the same synthetic listings with the same weights in the same run:

* baseline: ``DualEncoder.encode`` over every listing's text in one process, all cores;
* job: ``epm-spark embed`` in local Spark: products read from Delta, content hashes,
  pandas UDF with one model per Python worker, vectors written to Delta.

The job's time is its whole wall time once the Spark session is up (reading, hashing,
encoding, writing). Prints one JSON line per figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cores, {platform.system()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--titles", type=int, default=4000)
    parser.add_argument("--model", default="packaged:minilm")
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args(argv)

    import pandas as pd
    import torch

    from epm_spark.config import load_settings
    from epm_spark.io import delta
    from epm_spark.models.encoder.model import DualEncoder
    from epm_spark.pipeline.catalog.embed import embed
    from epm_spark.spark import get_spark
    from epm_spark.synthetic import generate_catalogs

    cats = generate_catalogs(products=args.titles, competitors=0, seed=11, duplicate_rate=0.0, dirty_rate=0.0)
    ours = cats.exports["ours"].head(args.titles)
    products = pd.DataFrame({
        "product_id": ours["product_id"], "source": "bench", "title": ours["title"], "brand": ours["brand"],
        "category": ours["category"], "description": ours["description"], "price": None, "currency": None,
        "price_raw": ours["price"], "attributes": [{} for _ in range(len(ours))],
        "ingested_at": pd.Timestamp.now(tz="UTC"), "run_id": "bench",
    })
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(overrides=[f"spark.master={args.master}", "spark.ui_enabled=false"],
                                 warehouse=str(Path(tmp) / "warehouse"))
        settings.encoder.backbone = args.model
        delta.write_pandas(settings.warehouse, "products", products, "overwrite")

        encoder = DualEncoder.load(args.model, device="cpu")
        texts = encoder.listing_texts(products)
        encoder.encode(texts[:64])  # warm-up
        start = time.perf_counter()
        encoder.encode(texts, settings.encoder.batch_size, show_progress=False)
        loop_s = time.perf_counter() - start
        loop_rate = len(texts) / loop_s
        print(json.dumps({"figure": "plain_loop_titles_per_s", "value": round(loop_rate, 1), "titles": len(texts),
                          "seconds": round(loop_s, 2), "torch_threads": torch.get_num_threads(),
                          "machine": machine()}), flush=True)
        del encoder

        spark = get_spark(settings)
        start = time.perf_counter()
        report = embed(spark, settings, sources=["bench"], run_id="bench")
        job_s = time.perf_counter() - start
        job_rate = report.embedded / job_s
        print(json.dumps({"figure": "spark_embed_job_titles_per_s", "value": round(job_rate, 1),
                          "titles": report.embedded, "seconds": round(job_s, 2), "master": args.master,
                          "machine": machine()}), flush=True)
        print(json.dumps({"figure": "job_vs_plain_loop", "value": round(job_rate / loop_rate, 3),
                          "target": 0.8, "model": args.model}), flush=True)
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
