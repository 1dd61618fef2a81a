"""Catalog rows and nightly settings shared by the warehouse, SQL and nightly tests (no models, no Spark)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

# A competitor export in its own column names (German), mapped onto the products schema.
COMPETITOR_A_MAP = {"product_id": "artikelnummer", "title": "bezeichnung", "brand": "marke", "price": "preis",
                    "category": "kategorie", "description": "beschreibung"}

# Small k, two query partitions, a narrow explained band and short generations: seconds per step.
TINY = ["spark.ui_enabled=false", "block.k=3", "block.query_partitions=2", "dedup.max_cluster_size=3",
        "match.explain=band", "match.uncertainty_margin=0.02", "match.max_explain_per_batch=2",
        "matcher.inference.max_new_tokens=24"]


def products(n, source="ours", run_id="r1", start=0):
    """``n`` rows of the products table: ids ``start..``, price equal to the id, one attribute."""
    return pd.DataFrame([dict(product_id=str(i), source=source, title=f"listing {i}", brand="B", category=None,
                              description=None, price=float(i), currency="EUR", price_raw=str(i),
                              attributes={"colour": "black"}, ingested_at=NOW, run_id=run_id)
                         for i in range(start, start + n)])


def tiny_encoder(folder: Path) -> str:
    """A 2-layer, 32-wide random BERT over the real MiniLM tokenizer: titles sharing tokens land nearby."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from epm_spark.models.weights import packaged_encoder_dir

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(packaged_encoder_dir())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return str(folder)
