"""Read the public product-matching benchmarks in the two layouts users bring.

* **tables** (DeepMatcher / Magellan): ``tableA.csv``, ``tableB.csv`` and pair splits
  ``train.csv``, ``valid.csv``, ``test.csv`` (``ltable_id,rtable_id,label``), optionally
  ``peeters_sampled_test.csv``.
* **pairs** (WDC Products): gzip JSON lines, one labelled pair per line with every field
  of both offers inline (``title_left``, ..., ``cluster_id_right``, ``label``,
  ``is_hard_negative``).

Both become the same :class:`Benchmark`: the listings of each side in the columns of
the ``products`` table, and the labelled pairs in the columns of ``labelled_pairs``. The
two tables of a DeepMatcher folder are two sources (``<name>_left``, ``<name>_right``: their
ids are two numberings); both sides of a WDC file are one pool of offers, where the same id
is the same offer, so they are one source (``<name>``) and its pairs are a de-duplication
set: an offer's pairs on either side are one listing's candidates.
Pure pandas, no Spark: evaluation and the model layer read benchmarks directly.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from epm_spark.errors import InputError
from epm_spark.io.prices import PriceError, normalise_currency, parse_price

__all__ = ["Benchmark", "load_benchmark", "detect_layout", "unique_listings", "PRODUCT_COLUMNS", "PAIR_COLUMNS"]

log = logging.getLogger(__name__)

PRODUCT_COLUMNS = [
    "product_id", "source", "title", "brand", "category", "description",
    "price", "currency", "price_raw", "attributes",
]
PAIR_COLUMNS = [
    "benchmark", "left_id", "right_id", "left_source", "right_source", "label", "split",
    "left_cluster_id", "right_cluster_id", "is_hard_negative",
]

# DeepMatcher columns -> products columns; anything else lands in attributes.
_TABLE_COLUMNS = {"name": "title", "title": "title", "manufacturer": "brand", "brand": "brand",
                  "description": "description", "category": "category", "price": "price_raw"}

# WDC file name suffix -> split name. The 050un test keeps its own name; "test" is the
# 000un test set (products seen in training), as the file names say.
_WDC_SPLIT = re.compile(r"^(?P<prefix>.+?)(?P<variant>\d{3}un)_(?P<split>train_\w+|valid_\w+|gs)\.json\.gz$")

# Names that commands accept for each layout's default splits.
SPLIT_ALIASES = {
    "pairs": {"train": "train_medium", "valid": "valid_medium", "test": "test_050un"},
    "tables": {},
}


@dataclass
class Benchmark:
    """Both sides of a benchmark as listings, and its labelled pairs."""

    name: str
    layout: str  # "tables" or "pairs"
    left: pd.DataFrame
    right: pd.DataFrame
    pairs: pd.DataFrame

    @property
    def one_pool(self) -> bool:
        """Both sides are one pool of offers (pairs layout): one source, its pairs a de-duplication set."""
        return self.layout == "pairs"

    @property
    def left_source(self) -> str:
        return self.name if self.one_pool else f"{self.name}_left"

    @property
    def right_source(self) -> str:
        return self.name if self.one_pool else f"{self.name}_right"

    def listings(self) -> pd.DataFrame:
        """Every listing once: both sides, an offer that appears on both (pairs layout) once."""
        return unique_listings(self.left, self.right)

    @property
    def splits(self) -> list[str]:
        return sorted(self.pairs["split"].unique())

    def resolve_split(self, split: str) -> str:
        """The stored split name for ``split`` (``train`` is ``train_medium`` on WDC Products)."""
        resolved = SPLIT_ALIASES[self.layout].get(split, split)
        if resolved not in set(self.pairs["split"]):
            raise InputError(
                f"benchmark {self.name!r} has no split {split!r}; splits: {', '.join(self.splits)}"
            )
        return resolved

    def split_pairs(self, split: str) -> pd.DataFrame:
        name = self.resolve_split(split)
        return self.pairs[self.pairs["split"] == name].reset_index(drop=True)

    def corpus(self, split: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The (left, right) listings a split is evaluated against.

        Tables layout: every listing of both tables (a real catalog). Pairs layout: the
        offers that appear in the split's pairs (the file holds no other catalog).
        """
        if self.layout == "tables":
            return self.left, self.right
        pairs = self.split_pairs(split)
        return (
            self.left[self.left["product_id"].isin(pairs["left_id"])].reset_index(drop=True),
            self.right[self.right["product_id"].isin(pairs["right_id"])].reset_index(drop=True),
        )


def unique_listings(*frames: pd.DataFrame) -> pd.DataFrame:
    """``products`` rows of several frames, each (source, id) once."""
    both = pd.concat(frames, ignore_index=True)
    return both.drop_duplicates(["source", "product_id"]).reset_index(drop=True)


def detect_layout(path: str | os.PathLike[str]) -> str:
    p = Path(path)
    if not p.is_dir():
        raise InputError(f"benchmark folder {p} does not exist")
    if (p / "tableA.csv").exists() and (p / "tableB.csv").exists():
        return "tables"
    if any(_WDC_SPLIT.match(f.name) for f in p.glob("*.json.gz")):
        return "pairs"
    raise InputError(
        f"{p} is neither a DeepMatcher folder (tableA.csv, tableB.csv, train/valid/test.csv) "
        "nor a WDC Products folder (*_train_*.json.gz, *_valid_*.json.gz, *_gs.json.gz)"
    )


def load_benchmark(path: str | os.PathLike[str], name: str | None = None) -> Benchmark:
    """Load a benchmark folder of either layout."""
    p = Path(path)
    layout = detect_layout(p)
    name = name or p.resolve().name
    bench = _load_tables(p, name) if layout == "tables" else _load_pairs(p, name)
    log.info(
        "benchmark %s (%s layout): %d left, %d right listings, %d pairs in %s",
        name, layout, len(bench.left), len(bench.right), len(bench.pairs), ", ".join(bench.splits),
    )
    return bench


def _price(raw: object) -> tuple[float | None, str | None]:
    try:
        parsed = parse_price(raw)
    except PriceError:
        return None, None
    return (parsed.amount, parsed.currency) if parsed else (None, None)


def _text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    text = str(value).strip()
    return text or None


def _table_listings(csv: Path, source: str) -> pd.DataFrame:
    raw = pd.read_csv(csv, dtype=str, keep_default_na=False, na_values=[""])
    if "id" not in raw.columns:
        raise InputError(f"{csv}: first column must be 'id'; columns are {list(raw.columns)}")
    rows = []
    for rec in raw.to_dict("records"):
        row = {c: None for c in PRODUCT_COLUMNS}
        row.update(product_id=str(rec.pop("id")).strip(), source=source, attributes={})
        for col, value in rec.items():
            value = _text(value)
            target = _TABLE_COLUMNS.get(col.lower())
            if target:
                row[target] = value
            elif value is not None:
                row["attributes"][col] = value
        row["price"], row["currency"] = _price(row["price_raw"])
        rows.append(row)
    return pd.DataFrame(rows, columns=PRODUCT_COLUMNS)


def _labels(values: pd.Series, file: Path | str, first_line: int) -> pd.Series:
    """0/1 labels as int32; any other value is refused with its file and line, not cast or
    counted as a match."""
    parsed = pd.to_numeric(values, errors="coerce")
    bad = ~parsed.isin([0, 1])
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        value = "empty" if pd.isna(values.iloc[i]) else repr(str(values.iloc[i]))
        raise InputError(f"{file}: line {i + first_line}: label {value} is not 0 or 1 ({int(bad.sum())} such rows)")
    return parsed.astype("int32")


def _load_tables(p: Path, name: str) -> Benchmark:
    bench = Benchmark(name, "tables", pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    bench.left = _table_listings(p / "tableA.csv", bench.left_source)
    bench.right = _table_listings(p / "tableB.csv", bench.right_source)
    frames = []
    for split, file in [("train", "train.csv"), ("valid", "valid.csv"), ("test", "test.csv"),
                        ("peeters_test", "peeters_sampled_test.csv")]:
        if not (p / file).exists():
            continue
        df = pd.read_csv(p / file, dtype={"ltable_id": str, "rtable_id": str})
        missing = {"ltable_id", "rtable_id", "label"} - set(df.columns)
        if missing:
            raise InputError(f"{p / file}: missing columns {sorted(missing)}")
        frames.append(pd.DataFrame({
            "left_id": df["ltable_id"].str.strip(), "right_id": df["rtable_id"].str.strip(),
            "label": _labels(df["label"], p / file, first_line=2), "split": split,
        }))
    if not frames:
        raise InputError(f"{p}: no pair splits (train.csv, valid.csv, test.csv)")
    pairs = pd.concat(frames, ignore_index=True)
    _check_ids(pairs, bench.left, bench.right, p)
    bench.pairs = _finish_pairs(pairs, bench)
    return bench


def _load_pairs(p: Path, name: str) -> Benchmark:
    bench = Benchmark(name, "pairs", pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    frames = []
    files = sorted(glob.glob(str(p / "*.json.gz")))
    variants = {m.group("variant") for f in files if (m := _WDC_SPLIT.match(Path(f).name))}
    for file in files:
        m = _WDC_SPLIT.match(Path(file).name)
        if not m:
            continue
        split = m.group("split")
        if split == "gs":
            split = f"test_{m.group('variant')}"
        elif len(variants) > 1 and m.group("variant") != min(variants):
            split = f"{split}_{m.group('variant')}"
        try:
            df = pd.read_json(file, lines=True, dtype=False, compression="gzip")
        except ValueError as exc:
            raise InputError(f"{file}: not gzip JSON lines ({exc})") from None
        if "label" in df:
            df["label"] = _labels(df["label"], file, first_line=1)
        df["split"] = split
        frames.append(df)
    data = pd.concat(frames, ignore_index=True)
    required = {"id_left", "id_right", "title_left", "title_right", "label"}
    if required - set(data.columns):
        raise InputError(f"{p}: pairs lack columns {sorted(required - set(data.columns))}")
    _check_one_offer_per_id(data, p)
    bench.left = _pair_listings(data, "left", bench.left_source)
    bench.right = _pair_listings(data, "right", bench.right_source)
    pairs = pd.DataFrame({
        "left_id": data["id_left"].astype(str), "right_id": data["id_right"].astype(str),
        "label": data["label"].astype("int32"), "split": data["split"],
        "left_cluster_id": data.get("cluster_id_left", pd.Series(dtype=object)).map(_id_or_none),
        "right_cluster_id": data.get("cluster_id_right", pd.Series(dtype=object)).map(_id_or_none),
        "is_hard_negative": data["is_hard_negative"].astype("boolean") if "is_hard_negative" in data else None,
    })
    bench.pairs = _finish_pairs(pairs, bench)
    return bench


def _id_or_none(value: object) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    return str(int(value)) if isinstance(value, float) else str(value)


def _pair_listings(data: pd.DataFrame, side: str, source: str) -> pd.DataFrame:
    cols = {c[: -len(side) - 1]: c for c in data.columns if c.endswith("_" + side)}
    offers = data[list(cols.values())].rename(columns={v: k for k, v in cols.items()})
    offers = offers.drop_duplicates("id").reset_index(drop=True)
    rows = []
    for rec in offers.to_dict("records"):
        price, currency = _price(rec.get("price"))
        currency = normalise_currency(rec.get("priceCurrency")) or currency
        attributes = {}
        if _id_or_none(rec.get("cluster_id")) is not None:
            attributes["cluster_id"] = _id_or_none(rec.get("cluster_id"))
        rows.append({
            "product_id": str(rec["id"]), "source": source, "title": _text(rec.get("title")),
            "brand": _text(rec.get("brand")), "category": None,
            "description": _text(rec.get("description")), "price": price, "currency": currency,
            "price_raw": _text(rec.get("price")), "attributes": attributes,
        })
    return pd.DataFrame(rows, columns=PRODUCT_COLUMNS)


def _check_one_offer_per_id(data: pd.DataFrame, p: Path) -> None:
    """The pairs are drawn from one pool of offers: every row that names an id must name one offer."""
    seen = pd.concat([data[[f"id_{side}", f"title_{side}"]].set_axis(["id", "title"], axis=1)
                      for side in ("left", "right")], ignore_index=True)
    seen["id"], seen["title"] = seen["id"].astype(str), seen["title"].map(_text).fillna("")
    titles = seen.drop_duplicates().groupby("id")["title"].agg(list)
    differ = titles[titles.map(len) > 1]
    if len(differ):
        examples = "; ".join(f"{i}: " + " vs ".join(map(repr, t[:2])) for i, t in differ.head(3).items())
        raise InputError(f"{p}: {len(differ)} offer ids name different offers (one id must be one offer), "
                         f"e.g. {examples}")


def _check_ids(pairs: pd.DataFrame, left: pd.DataFrame, right: pd.DataFrame, p: Path) -> None:
    for side, frame, col in (("tableA", left, "left_id"), ("tableB", right, "right_id")):
        unknown = set(pairs[col]) - set(frame["product_id"])
        if unknown:
            raise InputError(f"{p}: {len(unknown)} pair ids not in {side}.csv, e.g. {sorted(unknown)[:3]}")


def _finish_pairs(pairs: pd.DataFrame, bench: Benchmark) -> pd.DataFrame:
    pairs = pairs.copy()
    pairs["benchmark"] = bench.name
    pairs["left_source"] = bench.left_source
    pairs["right_source"] = bench.right_source
    for col in PAIR_COLUMNS:
        if col not in pairs:
            pairs[col] = None
    return pairs[PAIR_COLUMNS].reset_index(drop=True)
