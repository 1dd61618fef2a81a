"""Synthetic catalogs: our shop and competitor shops listing the same products under many names.

Every listing is rendered from a true product by a seller with habits: promotional
keywords, platform tags, accessory bundle text, unit variants (1TB / 1000GB, 55" /
55 inch), reordered and abbreviated titles, model numbers with or without hyphens,
prices that vary by shop and currency. Near-miss products (another capacity, colour,
pack size or model number of the same line) make the hard negatives. Our own catalog
lists some products twice, as marketplaces do, which is what de-duplication finds.

Deterministic: the same settings and seed give the same catalogs, byte for byte.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pandas as pd

from epm_spark.errors import InputError

__all__ = ["TrueProduct", "SyntheticCatalogs", "generate_catalogs", "COMPETITOR_STYLES"]


@dataclass(frozen=True)
class TrueProduct:
    product_key: str  # the ground truth: listings of the same key are the same product
    family: str  # product line; siblings share it
    category: str
    brand: str
    line: str
    noun: str
    model_number: str
    specs: tuple[tuple[str, str], ...]  # ordered attribute -> value, e.g. capacity -> 1TB
    price_eur: float


# Category templates: (brand, line) pairs as they really go together, the noun,
# the spec space and a price range in EUR.
_CATALOG = [
    ("Storage > SSD",
     [("Samsung", "870 EVO"), ("Samsung", "990 PRO"), ("Crucial", "MX500"), ("Crucial", "P3 Plus"),
      ("WD", "Blue SN580"), ("Kingston", "NV2"), ("SanDisk", "Extreme Portable")],
     "SSD", {"capacity": ["250GB", "500GB", "1TB", "2TB", "4TB"]}, (35, 420)),
    ("Memory > RAM",
     [("Corsair", "Vengeance LPX"), ("Kingston", "Fury Beast"), ("G.Skill", "Ripjaws V"), ("Crucial", "Pro")],
     "DDR4 RAM kit", {"capacity": ["16GB (2x8GB)", "32GB (2x16GB)", "64GB (4x16GB)"], "speed": ["3200MHz", "3600MHz"]},
     (40, 260)),
    ("Phones",
     [("Samsung", "Galaxy S23"), ("Samsung", "Galaxy A54"), ("Apple", "iPhone 15"), ("Google", "Pixel 8"),
      ("Xiaomi", "Redmi Note 13"), ("Motorola", "Edge 40")],
     "smartphone", {"capacity": ["128GB", "256GB", "512GB"], "colour": ["Black", "White", "Blue", "Green", "Graphite"]},
     (199, 1299)),
    ("Audio > Headphones",
     [("Sony", "WH-1000XM5"), ("Bose", "QuietComfort 45"), ("Sennheiser", "Momentum 4"), ("JBL", "Tune 760NC"),
      ("Apple", "AirPods Max")],
     "wireless headphones", {"colour": ["Black", "Silver", "White", "Midnight Blue"]}, (69, 549)),
    ("TV",
     [("LG", "OLED C3"), ("Samsung", "QN90C"), ("Sony", "Bravia X90L"), ("TCL", "C745"), ("Philips", "OLED 808")],
     "4K TV", {"size": ["43\"", "50\"", "55\"", "65\"", "77\""]}, (299, 2999)),
    ("Home > Coffee",
     [("DeLonghi", "Magnifica S"), ("Philips", "Series 3200"), ("Nespresso", "Vertuo Next"), ("Sage", "Barista Express"),
      ("Krups", "Evidence")],
     "coffee machine", {"colour": ["Black", "Silver", "Red"]}, (89, 899)),
    ("Sports > Shoes",
     [("Nike", "Pegasus 40"), ("Adidas", "Ultraboost Light"), ("Asics", "Gel-Kayano 30"), ("Brooks", "Ghost 15"),
      ("New Balance", "Fresh Foam 1080")],
     "running shoes", {"size": ["EU 40", "EU 41", "EU 42", "EU 43", "EU 44"], "colour": ["Black", "White", "Grey", "Blue"]},
     (79, 199)),
    ("Home > Batteries",
     [("Duracell", "Plus AA"), ("Energizer", "Max AAA"), ("Varta", "Longlife Power AA"), ("Panasonic", "Eneloop AA")],
     "batteries", {"pack": ["4-pack", "8-pack", "12-pack"]}, (4, 30)),
]

_PROMO = ["HOT SALE", "Free Shipping", "Best Price", "NEW 2026", "Limited Offer", "Top Seller", "-20%",
          "Fast Delivery", "Genuine", "Original", "Official", "Black Friday Deal", "In Stock"]
_TAGS = ["[Amazon's Choice]", "| eBay", "Prime", "(Official Store)", "- Shop4You", "@ MegaMart", "| Fulfilled by Us",
         "#1 Bestseller", "[Warehouse Deal]"]
# Accessory bundle text per category: the product is the same, the title is not.
_BUNDLES = {
    "Phones": ["+ case", "+ free case", "with screen protector", "incl. charger"],
    "Audio > Headphones": ["+ carry case", "incl. cable", "bundle w/ pouch"],
    "Storage > SSD": ["+ enclosure", "incl. cable", "with heatsink"],
    "TV": ["+ wall mount", "incl. HDMI cable"],
    "Home > Coffee": ["+ milk jug", "incl. descaler", "+ 2 cups"],
}
_GENERIC_BUNDLES = ["+ gift box", "bundle"]
_ABBREV = {"wireless": "wless", "headphones": "hdphns", "smartphone": "phone", "coffee machine": "coffee maker",
           "running shoes": "runners", "batteries": "batt.", "Black": "Blk", "White": "Wht", "Silver": "Slv",
           "Midnight Blue": "Navy", "Graphite": "Grphite"}
_COLOURS_DE = {"Black": "Schwarz", "White": "Weiss", "Blue": "Blau", "Green": "Gruen", "Silver": "Silber",
               "Red": "Rot", "Grey": "Grau"}


@dataclass(frozen=True)
class CompetitorStyle:
    """How one shop writes its catalog export (and so how ingestion must read it)."""

    name: str
    currency: str
    rate: float  # currency units per EUR
    file_format: str  # csv or json
    price_format: str  # how prices are written
    noise: float  # 0..1, how much seller noise
    abbreviate: float
    columns: dict[str, str] = field(default_factory=dict)  # products column -> export column name
    id_prefix: str = "X"


COMPETITOR_STYLES = [
    CompetitorStyle("competitor_a", "EUR", 1.0, "csv", "eur_comma", 0.6, 0.2,
                    {"product_id": "artikelnummer", "title": "bezeichnung", "brand": "marke", "price": "preis",
                     "category": "kategorie", "description": "beschreibung"}, "A"),
    CompetitorStyle("competitor_b", "USD", 1.08, "json", "usd", 0.8, 0.4,
                    {"product_id": "sku", "title": "name", "brand": "manufacturer", "price": "price",
                     "category": "category", "description": "description"}, "B"),
    CompetitorStyle("competitor_c", "GBP", 0.86, "csv", "gbp", 0.5, 0.3,
                    {"product_id": "item_id", "title": "title", "brand": "brand", "price": "price",
                     "category": "category", "description": "description"}, "C"),
]
OUR_STYLE = CompetitorStyle("ours", "EUR", 1.0, "csv", "eur_symbol", 0.3, 0.0,
                            {"product_id": "product_id", "title": "title", "brand": "brand", "price": "price",
                             "category": "category", "description": "description"}, "O")


@dataclass
class SyntheticCatalogs:
    """Listings per source (in export columns), the ground truth and the labelled pairs."""

    exports: dict[str, pd.DataFrame]
    styles: dict[str, CompetitorStyle]
    truth: pd.DataFrame  # source, product_id, product_key, family
    pairs: pd.DataFrame  # labelled_pairs columns (benchmark = "synthetic")
    products: list[TrueProduct]


def _model_number(rng: random.Random, brand: str) -> str:
    letters = "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXZ") for _ in range(2))
    return f"{letters}-{rng.randint(100, 999)}{rng.choice('ABCDEFGH')}{rng.randint(0, 9)}"


# The long tail of marketplace catalogs: small brands, generic products. It keeps the
# product space open-ended, so large catalogs (benchmarks use 100k+) stay distinct.
_SYLLABLES = ["vol", "tri", "ka", "no", "lux", "ze", "pro", "mi", "ra", "tek", "sun", "ori", "vex", "qu", "lo", "ni"]
_LONG_TAIL = [
    ("Home > Lighting", "LED desk lamp", {"colour": ["Black", "White", "Silver"], "power": ["5W", "8W", "12W"]}, (15, 90)),
    ("Electronics > Accessories", "USB-C hub", {"ports": ["4-port", "7-port", "10-port"]}, (12, 80)),
    ("Audio > Speakers", "bluetooth speaker", {"colour": ["Black", "Blue", "Red"], "power": ["10W", "20W", "40W"]}, (19, 199)),
    ("Sports > Fitness", "yoga mat", {"colour": ["Purple", "Black", "Green"], "size": ["4mm", "6mm", "8mm"]}, (9, 60)),
    ("Home > Kitchen", "kitchen scale", {"colour": ["Black", "White"], "capacity": ["5kg", "10kg", "15kg"]}, (8, 45)),
    ("Bags", "laptop backpack", {"colour": ["Black", "Grey", "Navy"], "size": ["15.6\"", "17\""]}, (25, 140)),
    ("Electronics > Power", "power bank", {"capacity": ["10000mAh", "20000mAh", "26800mAh"]}, (15, 90)),
]


def _long_tail_product(rng: random.Random):
    brand = "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((2, 3)))).capitalize()
    line = f"{rng.choice(['Air', 'Max', 'Go', 'Flex', 'Ultra', 'Neo', 'One', 'Lite'])} {rng.randint(1, 999)}"
    category, noun, spec_space, price_range = rng.choice(_LONG_TAIL)
    return category, brand, line, noun, spec_space, price_range


def _true_products(n: int, near_miss_rate: float, rng: random.Random) -> list[TrueProduct]:
    products: list[TrueProduct] = []
    seen: set[tuple] = set()
    while len(products) < n:
        if rng.random() < 0.75:
            category, brand_lines, noun, spec_space, (lo, hi) = rng.choice(_CATALOG)
            brand, line = rng.choice(brand_lines)
        else:
            category, brand, line, noun, spec_space, (lo, hi) = _long_tail_product(rng)
        specs = tuple((k, rng.choice(v)) for k, v in spec_space.items())
        if (brand, line, specs) in seen:
            if len(seen) > 200:  # the famous-brand space is used up: take the long tail instead
                category, brand, line, noun, spec_space, (lo, hi) = _long_tail_product(rng)
                specs = tuple((k, rng.choice(v)) for k, v in spec_space.items())
            if (brand, line, specs) in seen:
                continue
        seen.add((brand, line, specs))
        family = f"F{len(products):06d}"
        base = round(rng.uniform(lo, hi), 2)
        first = TrueProduct(f"P{len(products):07d}", family, category, brand, line, noun,
                            _model_number(rng, brand), specs, base)
        products.append(first)
        if rng.random() < near_miss_rate and len(products) < n:
            # A sibling that differs in one spec and its model number: the hard negative.
            key = rng.choice([k for k, _ in specs])
            other = [v for v in spec_space[key] if v != dict(specs)[key]]
            if other:
                sibling_specs = tuple((k, rng.choice(other) if k == key else v) for k, v in specs)
                if (brand, line, sibling_specs) not in seen:
                    seen.add((brand, line, sibling_specs))
                    number = first.model_number[:-1] + str((int(first.model_number[-1]) + 1) % 10)
                    products.append(TrueProduct(f"P{len(products):07d}", family, category, brand, line, noun, number,
                                                sibling_specs, round(base * rng.uniform(0.8, 1.4), 2)))
    return products


def _unit_variant(key: str, value: str, rng: random.Random) -> str:
    if key == "capacity" and value.endswith("TB") and rng.random() < 0.5:
        return f"{int(value[:-2]) * 1000}GB"
    if key in ("capacity",) and rng.random() < 0.3:
        return value.replace("GB", " GB").replace("TB", " TB")
    if key == "size" and value.endswith('"'):
        inches = value[:-1]
        return rng.choice([f"{inches} inch", f"{inches}-inch", f"{inches}in", f'{inches}"', f"{round(float(inches) * 2.54)} cm"])
    if key == "pack" and rng.random() < 0.5:
        return f"pack of {value.split('-')[0]}"
    return value


def _title(p: TrueProduct, style: CompetitorStyle, rng: random.Random) -> str:
    specs = dict(p.specs)
    spec_values = [_unit_variant(k, v, rng) for k, v in p.specs]
    if style.name in ("competitor_a",) and "colour" in specs and rng.random() < 0.5:
        spec_values = [_COLOURS_DE.get(v, v) for v in spec_values]
    model = p.model_number if rng.random() < 0.6 else p.model_number.replace("-", "")
    noun = p.noun
    if rng.random() < style.abbreviate:
        noun = _ABBREV.get(noun, noun)
        spec_values = [_ABBREV.get(v, v) for v in spec_values]
    pieces = [p.brand, p.line, *spec_values, noun]
    if rng.random() < 0.7:
        pieces.append(model)
    order = rng.random()
    if order < 0.25:  # noun first: "SSD Samsung 870 EVO 1TB"
        pieces = [pieces[-2] if pieces[-1] == model else pieces[-1]] + [x for x in pieces if x not in (noun,)]
    elif order < 0.45:
        head, tail = pieces[:2], pieces[2:]
        rng.shuffle(tail)
        pieces = head + tail
    if rng.random() < 0.15:
        pieces[1] = pieces[1].replace(" ", "")  # "870EVO"
    title = " ".join(pieces)
    if rng.random() < style.noise:
        title = f"{rng.choice(_PROMO)} {title}" if rng.random() < 0.5 else f"{title} {rng.choice(_PROMO)}"
    if rng.random() < style.noise * 0.6:
        title = f"{title} {rng.choice(_TAGS)}"
    if rng.random() < style.noise * 0.4:
        title = f"{title} {rng.choice(_BUNDLES.get(p.category, _GENERIC_BUNDLES))}"
    if rng.random() < 0.1:
        title = title.upper()
    return title


def _price_text(eur: float, style: CompetitorStyle, rng: random.Random) -> str:
    amount = round(eur * style.rate * rng.uniform(0.88, 1.12), 2)
    whole, cents = divmod(round(amount * 100), 100)
    if style.price_format == "eur_comma":
        thousands = f"{whole:,}".replace(",", ".")
        return f"{thousands},{cents:02d}" + (" €" if rng.random() < 0.5 else "")
    if style.price_format == "eur_symbol":
        return f"{whole},{cents:02d} €" if rng.random() < 0.5 else f"EUR {amount:.2f}"
    if style.price_format == "usd":
        return f"${amount:,.2f}"
    return f"£{amount:.2f}"


def _listing(p: TrueProduct, style: CompetitorStyle, listing_id: str, rng: random.Random) -> dict[str, object]:
    cols = style.columns
    row: dict[str, object] = {
        cols["product_id"]: listing_id,
        cols["title"]: _title(p, style, rng),
        cols["brand"]: p.brand if rng.random() > 0.15 else None,
        cols["category"]: p.category,
        cols["price"]: _price_text(p.price_eur, style, rng),
        cols["description"]: (f"{p.brand} {p.line} {p.noun}. " + ", ".join(f"{k}: {v}" for k, v in p.specs)
                              + (f". Model {p.model_number}." if rng.random() < 0.5 else "."))
        if rng.random() < 0.7 else None,
    }
    if style.file_format == "json":
        row["currency"] = style.currency
    return row


def _dirty(row: dict[str, object], style: CompetitorStyle, rng: random.Random) -> None:
    """The faults real exports have, for ingestion to quarantine."""
    cols = style.columns
    fault = rng.choice(["no_title", "bad_price", "no_id"])
    if fault == "no_title":
        row[cols["title"]] = ""
    elif fault == "bad_price":
        row[cols["price"]] = rng.choice(["call for price", "12 99 EUR eur", "N.A.", "ab 5"])
    else:
        row[cols["product_id"]] = ""


def generate_catalogs(products: int = 400, competitors: int = 2, seed: int = 7, overlap: float = 0.7,
                      near_miss_rate: float = 0.3, dirty_rate: float = 0.01,
                      duplicate_rate: float = 0.08) -> SyntheticCatalogs:
    """Our catalog of ``products`` true products and ``competitors`` competitor catalogs."""
    if not 0 <= competitors <= len(COMPETITOR_STYLES):
        raise InputError(f"competitors must be 0 to {len(COMPETITOR_STYLES)} (the competitor styles defined), "
                         f"got {competitors}")
    if products < 1:
        raise InputError(f"products must be at least 1, got {products}")
    rng = random.Random(seed)
    catalog = _true_products(products, near_miss_rate, rng)
    styles = {"ours": OUR_STYLE, **{s.name: s for s in COMPETITOR_STYLES[:competitors]}}
    exports: dict[str, list[dict]] = {name: [] for name in styles}
    truth: list[dict] = []
    for style_name, style in styles.items():
        for i, p in enumerate(catalog):
            copies = 1
            if style_name == "ours":
                copies = 2 if rng.random() < duplicate_rate else 1
            elif rng.random() > overlap:
                continue
            for c in range(copies):
                listing_id = f"{style.id_prefix}{i:06d}{c}"
                row = _listing(p, style, listing_id, rng)
                dirty = rng.random() < dirty_rate
                if dirty:
                    _dirty(row, style, rng)
                exports[style_name].append(row)
                truth.append({"source": style_name, "product_id": listing_id, "product_key": p.product_key,
                              "family": p.family, "dirty": dirty})
    for rows in exports.values():
        rng.shuffle(rows)
    truth_df = pd.DataFrame(truth)
    return SyntheticCatalogs(
        exports={k: pd.DataFrame(v) for k, v in exports.items()},
        styles=styles,
        truth=truth_df,
        pairs=_labelled_pairs(truth_df, rng),
        products=catalog,
    )


def _labelled_pairs(truth: pd.DataFrame, rng: random.Random) -> pd.DataFrame:
    """Ours x each competitor: every true match, the near-miss siblings, and random negatives.

    Splits go by product family, so no product (nor its siblings) is in two splits.
    """
    clean = truth[~truth["dirty"]]
    records = clean[["source", "product_id", "product_key", "family"]].to_dict("records")
    split_of = {}
    for fam in sorted(clean["family"].unique()):
        r = rng.random()
        split_of[fam] = "train" if r < 0.6 else ("valid" if r < 0.8 else "test")
    by_source: dict[str, dict[str, list[dict]]] = {}
    for rec in records:
        by_source.setdefault(rec["source"], {}).setdefault(rec["family"], []).append(rec)
    ours = by_source.get("ours", {})
    rows = []
    for source in sorted(set(by_source) - {"ours"}):
        theirs = by_source[source]
        their_all = [rec for fam in sorted(theirs) for rec in theirs[fam]]
        for family in sorted(ours):
            for left in ours[family]:
                for right in theirs.get(family, ()):
                    same = left["product_key"] == right["product_key"]
                    rows.append((left["product_id"], right["product_id"], source, int(same), split_of[family],
                                 left["product_key"], right["product_key"], not same))
                for right in rng.sample(their_all, min(2, len(their_all))):
                    if right["family"] != family:
                        rows.append((left["product_id"], right["product_id"], source, 0, split_of[family],
                                     left["product_key"], right["product_key"], False))
    pairs = pd.DataFrame(rows, columns=["left_id", "right_id", "right_source", "label", "split",
                                        "left_cluster_id", "right_cluster_id", "is_hard_negative"])
    pairs.insert(0, "benchmark", "synthetic")
    pairs.insert(3, "left_source", "ours")
    return pairs[["benchmark", "left_id", "right_id", "left_source", "right_source", "label", "split",
                  "left_cluster_id", "right_cluster_id", "is_hard_negative"]]
