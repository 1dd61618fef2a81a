"""A small hand-written night for the review page tests, written with delta-rs (no Spark): the hard
pairs as our catalog (l*) and competitor_a's (r*), their labelled pairs with two gold labels
wrong, the teacher's rationales, one match run ``n1`` (ours x competitor_a and ours x ours), its
clusters and price comparisons.

What the page should make of it (threshold of each run read off its labels):

* pending, teacher and gold disagree: l3/r3 (P 0.45) and l5/r5 (P 0.30);
* then the matcher's uncertain pairs: l1/l11 and l2/l10 (ours x ours, threshold 0.515), l0/r1 and
  l9/r9 and the off-diagonal l*/r(*+1) pairs within 0.15 of ours x competitor_a's threshold 0.485;
* cluster C1 = l0, l1, l10, l11 (l11, the 2TB drive, joined by a weak 0.55 match), C2 = l4, l12;
* price gaps: competitor_a under us on l7/r7 (-50%), l2/r2, l0/r0, l4/r4, l9/r9.
"""

from __future__ import annotations

import pandas as pd

from epm_spark.io.delta import write_pandas
from epm_spark.io.schemas import CLUSTERS, LABELLED_PAIRS, MATCHES, PRICE_COMPARISONS, PRODUCTS
from matcher_pairs import hard_pair_frame

NOW = pd.Timestamp("2026-11-23T02:00:00Z")
RUN = "n1"
# Gold labels made wrong on purpose (the multipack and the camera near-miss called the same product).
WRONG_GOLD = {3: 1, 5: 1}
VALID = {8, 9}
EXTRA_OURS = {
    "l10": ("Samsung 870 EVO 1TB SSD MZ-77E1T0B/EU", "Samsung"),
    "l11": ("Samsung 870 EVO 2TB SATA SSD MZ-77E2T0B", "Samsung"),
    "l12": ("Apple iPhone 12 64 GB black smartphone", "Apple"),
}
# l1/r1 at 0.52 and l3/r3 at 0.45 put ours x competitor_a's threshold at 0.485.
DIAGONAL_P = [0.97, 0.52, 0.90, 0.45, 0.88, 0.30, 0.10, 0.93, 0.05, 0.60]
OURS_OURS = [("l0", "l10", 0.95), ("l0", "l1", 0.90), ("l1", "l11", 0.55), ("l4", "l12", 0.80),
             ("l2", "l10", 0.48), ("l3", "l6", 0.20), ("l5", "l8", 0.10)]
OUR_PRICES = [89.0, 85.0, 49.0, 180.0, 799.0, 330.0, 19.0, 240.0, 9.0, 1500.0]
THEIR_PRICES = [74.0, 150.0, 39.5, 175.0, 719.0, 120.0, 21.0, 120.0, 8.0, 1450.0]


def _product(pid: str, source: str, title: str, brand: str | None, price: float | None,
             attributes: dict | None = None) -> dict:
    return {"product_id": pid, "source": source, "title": title, "brand": brand, "category": None,
            "description": None, "price": price, "currency": "EUR", "price_raw": None,
            "attributes": attributes or {}, "ingested_at": NOW, "run_id": RUN}


def products_frame(titles: dict[tuple[str, str], str] | None = None) -> pd.DataFrame:
    """Both catalogs; ``titles`` replaces the title of (source, id) (e.g. a hostile one)."""
    frame = hard_pair_frame()
    rows = []
    for i, r in frame.iterrows():
        rows.append(_product(f"l{i}", "ours", r["left_title"], r["left_brand"], OUR_PRICES[i],
                             r["left_attributes"]))
        rows.append(_product(f"r{i}", "competitor_a", r["right_title"], r["right_brand"], THEIR_PRICES[i],
                             r["right_attributes"]))
    for pid, (title, brand) in EXTRA_OURS.items():
        rows.append(_product(pid, "ours", title, brand, 80.0))
    out = pd.DataFrame(rows, columns=PRODUCTS.columns)
    for (source, pid), title in (titles or {}).items():
        out.loc[(out.source == source) & (out.product_id == pid), "title"] = title
    return out


def write_products(warehouse: str, titles: dict[tuple[str, str], str] | None = None) -> None:
    products = products_frame(titles)
    for source, part in products.groupby("source"):
        write_pandas(warehouse, "products", part, mode="replace", partition={"source": source})


def _match(left: str, right: str, left_source: str, right_source: str, p: float, threshold: float = 0.5) -> dict:
    return {"left_id": left, "right_id": right, "left_source": left_source, "right_source": right_source,
            "label": "match" if p >= threshold else "no_match", "probability": p, "decided_by": "label",
            "confidence": None, "evidence": None, "noise_ignored": None,
            "rationale": f"P(match) {p:.2f}", "format_valid": True, "decision_json": None, "similarity": 0.8,
            "model_version": "tiny@test", "scored_at": NOW, "run_id": RUN}


def matches_frame() -> pd.DataFrame:
    rows = [_match(f"l{i}", f"r{i}", "ours", "competitor_a", p) for i, p in enumerate(DIAGONAL_P)]
    # The neighbours' listings: uncertain ones, and l0/r1 (the 1TB and 2TB drives) at 0.42.
    rows += [_match(f"l{i}", f"r{i + 1}", "ours", "competitor_a", p)
             for i, p in enumerate([0.42, 0.02, 0.56, 0.03, 0.40, 0.01, 0.58, 0.02, 0.44])]
    rows += [_match(a, b, "ours", "ours", p) for a, b, p in OURS_OURS]
    return pd.DataFrame(rows, columns=MATCHES.columns)


def clusters_frame() -> pd.DataFrame:
    ours = products_frame()
    ours = ours[ours.source == "ours"]
    groups = {"l0": "C1", "l1": "C1", "l10": "C1", "l11": "C1", "l4": "C2", "l12": "C2"}
    ids = {pid: groups.get(pid, f"S-{pid}") for pid in ours.product_id}
    sizes = pd.Series(ids).value_counts()
    rows = [{"cluster_id": cid, "product_id": pid, "source": "ours", "cluster_size": int(sizes[cid]),
             "flagged": False, "clustered_at": NOW, "run_id": RUN} for pid, cid in ids.items()]
    return pd.DataFrame(rows, columns=CLUSTERS.columns)


def prices_frame() -> pd.DataFrame:
    m = matches_frame()
    accepted = m[(m.right_source == "competitor_a") & (m.label == "match")]
    products = products_frame().set_index(["source", "product_id"])
    rows = []
    for r in accepted.to_dict("records"):
        ours, theirs = products.loc[("ours", r["left_id"])], products.loc[("competitor_a", r["right_id"])]
        diff = theirs["price"] - ours["price"]
        rows.append({"our_id": r["left_id"], "our_source": "ours", "competitor_id": r["right_id"],
                     "competitor_source": "competitor_a", "our_title": ours["title"],
                     "competitor_title": theirs["title"], "our_price": ours["price"],
                     "competitor_price": theirs["price"], "competitor_price_original": theirs["price"],
                     "competitor_currency": "EUR", "currency": "EUR", "difference": diff,
                     "percent": diff / ours["price"] * 100, "implausible": not 0.35 <= theirs["price"] / ours["price"] <= 3,
                     "match_probability": r["probability"], "rationale": r["rationale"], "run_id": RUN})
    return pd.DataFrame(rows, columns=PRICE_COMPARISONS.columns)


def labelled_frame() -> pd.DataFrame:
    frame = hard_pair_frame()
    rows = [{"benchmark": "hard", "left_id": f"l{i}", "right_id": f"r{i}", "left_source": "ours",
             "right_source": "competitor_a", "label": WRONG_GOLD.get(i, int(r["label"])),
             "split": "valid" if i in VALID else "train"} for i, r in frame.iterrows()]
    return pd.DataFrame(rows).reindex(columns=LABELLED_PAIRS.columns).astype({"label": "int32"})


def write_review_night(warehouse: str, *, teach: bool = True,
                       titles: dict[tuple[str, str], str] | None = None) -> None:
    """The whole hand-written night; ``teach``: also the agentic teacher's rationales of the train split."""
    write_products(warehouse, titles)
    write_pandas(warehouse, "labelled_pairs", labelled_frame(), mode="replace", partition={"benchmark": "hard"})
    write_pandas(warehouse, "matches", matches_frame(), mode="replace", partition={"run_id": RUN})
    write_pandas(warehouse, "clusters", clusters_frame(), mode="replace", partition={"run_id": RUN})
    write_pandas(warehouse, "price_comparisons", prices_frame(), mode="replace", partition={"run_id": RUN})
    if teach:
        from epm_spark.config import load_settings
        from epm_spark.pipeline.matcher.teach import teach as run_teacher

        run_teacher(load_settings(warehouse=warehouse), benchmark="hard", split="train", run_id="t1")
