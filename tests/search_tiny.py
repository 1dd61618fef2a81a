"""Tiny search data: a benchmark folder (DeepMatcher layout) of listings made from the tiny
tokenizer's words, and engagement aggregated per (query, listing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from encoder_tiny import WORDS

BRANDS = ["sony", "samsung", "apple", "lenovo", "canon", "bose"]
THINGS = ["turntable", "speaker", "laptop", "camera", "monitor", "tablet", "phone", "printer"]
SPECS = ["16gb", "32gb", "64gb", "128gb", "256gb", "1tb"]
COLOURS = ["black", "white", "silver", "red", "blue"]
assert set(BRANDS + THINGS + SPECS + COLOURS) <= set(WORDS)


def tiny_benchmark(folder: Path, n: int = 40, seed: int = 0) -> Path:
    """Listing i of tableA and tableB are the same product (label-1 pair); some are cases (accessories)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    a, b, pairs = [], [], []
    for i in range(n):
        brand, thing = BRANDS[i % len(BRANDS)], THINGS[(i * 3) % len(THINGS)]
        spec, colour = SPECS[i % len(SPECS)], COLOURS[(i // 2) % len(COLOURS)]
        title = f"{brand} {thing} {spec} {colour} X{i:03d}Z"
        if i % 7 == 6:
            title = f"{brand} {thing} case {colour}"
        price = round(float(rng.uniform(20, 400)), 2)
        a.append({"id": f"{i}", "title": title, "manufacturer": brand, "price": f"{price}"})
        b.append({"id": f"{i}", "title": f"new {title} free shipping", "manufacturer": "",
                  "price": f"{price * rng.uniform(0.8, 1.2):.2f}"})
        pairs.append((i, i, 1))
        pairs.append((i, (i + 6) % n, 0))
    pd.DataFrame(a).to_csv(folder / "tableA.csv", index=False)
    pd.DataFrame(b).to_csv(folder / "tableB.csv", index=False)
    frame = pd.DataFrame(pairs, columns=["ltable_id", "rtable_id", "label"])
    third = len(frame) // 3
    for k, split in enumerate(("train", "valid", "test")):
        frame.iloc[k * third:(k + 1) * third if k < 2 else len(frame)].to_csv(folder / f"{split}.csv", index=False)
    return folder


def pairs_frame(n=48, seed=0):
    """Relevant listings (the query's brand) get clicks, carts and purchases; others rarely clicks."""
    rng = np.random.default_rng(seed)
    brands = ["sony", "samsung", "apple", "canon"]
    rows = []
    for i in range(n):
        q, b = brands[i % 4], brands[(i // 4) % 4]
        relevant = q == b
        n_imp = 40
        clicks = rng.binomial(n_imp, 0.4 if relevant else 0.05)
        carts = rng.binomial(clicks, 0.5 if relevant else 0.1)
        rows.append({"query": f"{q} speaker", "product_id": f"p{i}", "text": f"{b} speaker black 32gb",
                     "impressions": n_imp, "clicks": clicks, "carts": carts,
                     "purchases": rng.binomial(carts, 0.6 if relevant else 0.1)})
    return pd.DataFrame(rows)
