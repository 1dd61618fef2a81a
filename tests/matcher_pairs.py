"""Hand-written hard pairs shared by the matcher tests: (name, left listing, right listing, gold label)."""

from __future__ import annotations

import pandas as pd

from epm_spark.models.matcher.pairs import LISTING_FIELDS


def listing(title: str, brand: str | None = None, **attributes: str) -> dict:
    return {"title": title, "brand": brand, "attributes": attributes}


HARD_PAIRS = [
    ("promo_noise",
     listing("Samsung 870 EVO 1TB SATA SSD MZ-77E1T0B/EU - FREE SHIPPING! Best Price | TechDeals Shop"),
     listing('Samsung 870 EVO 1 TB 2.5" SATA III internal SSD (MZ-77E1T0B)'), 1),
    ("capacity_1tb_vs_2tb",
     listing("Samsung 870 EVO 1TB SATA SSD"),
     listing("Samsung 870 EVO 2TB SATA SSD"), 0),
    ("capacity_1tb_vs_1000gb",
     listing("WD Blue 1TB internal HDD WD10EZEX"),
     listing("Western Digital Blue 1000GB internal HDD WD10EZEX", brand="Western Digital"), 1),
    ("model_near_miss",
     listing("Sony Cyber-shot DSC-W120 digital camera"),
     listing("Sony Cyber-shot DSC-W150 digital camera"), 0),
    ("bundle_text",
     listing("Apple iPhone 12 64GB Black + Case with Charger - Amazon's Choice [Prime]"),
     listing("Apple iPhone 12 64 GB Schwarz"), 1),
    ("multipack",
     listing("Ubiquiti UniFi AP AC Long Range UAP-AC-LR 3-pack"),
     listing("Ubiquiti UniFi UAP-AC-LR access point"), 0),
    ("colour_variant",
     listing("Logitech M185 wireless mouse grey 910-002238"),
     listing("Logitech M185 wireless mouse red 910-002240"), 0),
    ("wdc_quoting",
     listing('"Corsair Vengeance LPX Black 64GB (4x16GB) DDR4 2666MHz Quad Channel Kit "@en | '
             'CMK64GX4M4A2666C16 Novatech"@en'),
     listing("Corsair CMK64GX4M4A2666C16 Vengeance LPX 64 GB DDR4 kit"), 1),
    ("other_brand",
     listing("SanDisk Ultra 32GB microSDHC UHS-I card"),
     listing("Kingston Canvas Select Plus 32GB microSDHC card"), 0),
    ("refurbished_vs_new",
     listing("Cisco Catalyst WS-C2960X-24PD-L switch (Refurbished)"),
     listing("Cisco WS-C2960X-24PD-L Catalyst 2960-X switch - Brand New"), 1),
]


def hard_pair_frame() -> pd.DataFrame:
    """The hard pairs as a pair frame (labelled_pairs columns + left_*/right_* listing columns)."""
    rows = []
    for i, (name, left, right, label) in enumerate(HARD_PAIRS):
        row = {"benchmark": "hard", "split": "train", "left_id": f"l{i}", "right_id": f"r{i}",
               "left_source": "hard_left", "right_source": "hard_right", "label": label, "name": name}
        for side, item in (("left", left), ("right", right)):
            for f in LISTING_FIELDS:
                row[f"{side}_{f}"] = item.get(f)
        rows.append(row)
    return pd.DataFrame(rows)


def write_hard_warehouse(warehouse: str) -> pd.DataFrame:
    """Write the hard pairs as ``products`` and ``labelled_pairs`` Delta tables (benchmark ``hard``)."""
    from epm_spark.io.delta import write_pandas
    from epm_spark.io.schemas import LABELLED_PAIRS, PRODUCTS

    frame = hard_pair_frame()
    now = pd.Timestamp("2026-11-23T10:00:00Z")
    items = []
    for side in ("left", "right"):
        for r in frame.to_dict("records"):
            items.append({"product_id": r[f"{side}_id"], "source": r[f"{side}_source"], "title": r[f"{side}_title"],
                          "brand": r[f"{side}_brand"], "attributes": r[f"{side}_attributes"] or {},
                          "ingested_at": now, "run_id": "load"})
    products = pd.DataFrame(items).reindex(columns=PRODUCTS.columns)
    for source, part in products.groupby("source"):
        write_pandas(warehouse, "products", part, mode="replace", partition={"source": source})
    pairs = frame.reindex(columns=LABELLED_PAIRS.columns).assign(label=frame["label"].astype("int32"))
    write_pandas(warehouse, "labelled_pairs", pairs, mode="replace", partition={"benchmark": "hard"})
    return frame
