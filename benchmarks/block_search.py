"""Queries per second and recall of ``epm-spark block`` versus exact search, on 200k listings.

    python benchmarks/block_search.py [--listings 200000] [--k 10] [--model tiny|packaged:minilm|DIR]

One synthetic catalog of ``--listings`` listings is embedded once in a plain loop (the
embedding is not what is measured here) and written to ``embeddings``; then the real
block job de-duplicates it twice in the same run: with the approximate index that
``auto`` picks at this size (HNSW), and with exact search (faiss ``IndexFlatIP``).
Recall is the share of the exact candidate pairs the approximate run also finds.

``--model tiny`` (default) embeds with a 2-layer, 384-wide random BERT over the real
MiniLM tokenizer: titles that share tokens get nearby vectors, and 200k titles embed in
minutes on a laptop CPU. ``packaged:minilm`` uses the real encoder (about 80 titles/s on
2 cores). Prints one JSON line per figure.
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


def tiny_minilm_shape(folder: Path) -> str:
    """A random BERT with MiniLM's tokenizer and width, 2 layers: same vectors' shape, far cheaper."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from epm_spark.models.weights import packaged_encoder_dir

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(packaged_encoder_dir())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=384, num_hidden_layers=2, num_attention_heads=6,
                        intermediate_size=768, max_position_embeddings=512)
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return str(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listings", type=int, default=200_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args(argv)

    import pandas as pd

    from epm_spark.config import load_settings
    from epm_spark.io import delta
    from epm_spark.models.encoder.model import DualEncoder
    from epm_spark.pipeline.catalog.block import block
    from epm_spark.pipeline.catalog.embed import content_hash
    from epm_spark.spark import get_spark
    from epm_spark.synthetic import generate_catalogs

    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_minilm_shape(Path(tmp) / "tiny") if args.model == "tiny" else args.model
        cats = generate_catalogs(products=args.listings, competitors=0, seed=21, duplicate_rate=0.1, dirty_rate=0.0)
        ours = cats.exports["ours"].head(args.listings)
        encoder = DualEncoder.load(model, device="cpu")
        start = time.perf_counter()
        texts = encoder.listing_texts(ours)
        vectors = encoder.encode(texts, 256)
        print(json.dumps({"figure": "embedding_titles_per_s_plain_loop", "value": round(len(texts) / (time.perf_counter() - start), 1),
                          "titles": len(texts), "model": args.model, "machine": machine()}), flush=True)
        settings = load_settings(overrides=[f"spark.master={args.master}", "spark.ui_enabled=false",
                                            "spark.driver_memory=6g"], warehouse=str(Path(tmp) / "warehouse"))
        now = pd.Timestamp.now(tz="UTC")
        products = pd.DataFrame({"product_id": ours["product_id"], "source": "bench", "title": ours["title"],
                                 "brand": None, "category": None, "description": None, "price": None,
                                 "currency": None, "price_raw": None, "attributes": [{}] * len(ours),
                                 "ingested_at": now, "run_id": "bench"})
        delta.write_pandas(settings.warehouse, "products", products, "overwrite")
        delta.write_pandas(settings.warehouse, "embeddings", pd.DataFrame({
            "product_id": ours["product_id"], "source": "bench", "model_version": encoder.model_version,
            "content_hash": [content_hash(t) for t in texts], "embedding": list(vectors), "embedded_at": now,
            "run_id": "bench"}), "overwrite")
        del encoder, vectors

        spark = get_spark(settings)
        runs = {}
        for name, kind in (("approximate", "auto"), ("exact", "flat")):
            settings.block.index.kind = kind
            report = block(spark, settings, left="bench", k=args.k, run_id=name)
            runs[name] = report
            print(json.dumps({"figure": f"block_{name}_queries_per_s",
                              "value": round(report.queries / report.search_seconds, 1),
                              "index": report.index_kind, "queries": report.queries, "k": args.k,
                              "search_seconds": round(report.search_seconds, 2),
                              "job_seconds": round(report.seconds, 2), "machine": machine()}), flush=True)
        cands = delta.read_pandas(settings.warehouse, "candidates", columns=["left_id", "right_id", "run_id"])
        pairs = {run: set(zip(g.left_id, g.right_id)) for run, g in cands.groupby("run_id")}
        recall = len(pairs["approximate"] & pairs["exact"]) / len(pairs["exact"])
        print(json.dumps({"figure": "approximate_recall_vs_exact", "value": round(recall, 4),
                          "exact_pairs": len(pairs["exact"]), "listings": args.listings}), flush=True)
        print(json.dumps({"figure": "approximate_speedup_vs_exact",
                          "value": round(runs["exact"].search_seconds / runs["approximate"].search_seconds, 2)}),
              flush=True)
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
