"""Row rules of ingestion: which catalog rows become ``products`` and why the others do not.

Pure pandas (no Spark), applied batch by batch inside the ingest job. Every input
row comes out exactly once, either as a product or with a quarantine reason, so
``products + quarantine == rows read`` holds by construction.

A reason is ``"<rule>: <detail>"``; the rule part is stable (reports count by it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

from epm_spark.config import IngestSettings
from epm_spark.errors import InputError
from epm_spark.io.prices import PriceError, normalise_currency, parse_price

__all__ = [
    "ColumnMap",
    "resolve_column_map",
    "validate_batch",
    "RULES",
    "MAPPABLE",
    "OUTPUT_COLUMNS",
]

# products columns that can come from an input column, with the names exports commonly use.
MAPPABLE: dict[str, tuple[str, ...]] = {
    "product_id": ("product_id", "id", "sku", "item_id", "offer_id", "asin", "listing_id"),
    "title": ("title", "name", "product_name", "product_title", "item_name"),
    "brand": ("brand", "manufacturer", "vendor", "make"),
    "category": ("category", "category_path", "product_type", "department"),
    "description": ("description", "desc", "long_description", "details"),
    "price": ("price", "sale_price", "current_price", "amount"),
    "currency": ("currency", "price_currency", "pricecurrency", "currency_code"),
}

RULES = (
    "malformed row",
    "broken encoding",
    "missing product_id",
    "missing title",
    "field too long",
    "unparseable price",
    "duplicate product_id",
)

OUTPUT_COLUMNS = [
    "ok", "reason", "product_id", "title", "brand", "category", "description",
    "price", "currency", "price_raw", "attributes",
]

# Control characters other than tab/newline mean a file was read with the wrong encoding
# or is binary; U+FFFD is what the reader puts where bytes were not valid UTF-8.
_BROKEN = {chr(c) for c in range(32) if c not in (9, 10, 13)} | {"\ufffd", "\x7f"}


@dataclass(frozen=True)
class ColumnMap:
    """Which input column feeds each products column; the rest become attributes."""

    columns: dict[str, str]  # products column -> input column
    attributes: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        return ", ".join(f"{k}<-{v}" for k, v in self.columns.items())


def resolve_column_map(input_columns: list[str], overrides: Mapping[str, str] | None = None) -> ColumnMap:
    """Pair products columns with input columns: explicit ``--map`` first, then common names."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(MAPPABLE))
    if unknown:
        raise InputError(f"--map names unknown products column(s) {unknown}; mappable: {', '.join(MAPPABLE)}")
    lower = {c.lower(): c for c in input_columns}
    mapping: dict[str, str] = {}
    for target, source in overrides.items():
        if source not in input_columns:
            raise InputError(
                f"--map {target}={source}: the input has no column {source!r}; columns: {', '.join(input_columns)}"
            )
        mapping[target] = source
    taken = set(mapping.values())
    for target, candidates in MAPPABLE.items():
        if target in mapping:
            continue
        for name in candidates:
            col = lower.get(name)
            if col is not None and col not in taken:
                mapping[target] = col
                taken.add(col)
                break
    for required in ("product_id", "title"):
        if required not in mapping:
            raise InputError(
                f"no input column for {required}; columns are {', '.join(input_columns)}; "
                f"name one with --map {required}=COLUMN"
            )
    attributes = tuple(c for c in input_columns if c not in taken)
    return ColumnMap(mapping, attributes)


def _text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    text = str(value).strip()
    return text or None


def validate_batch(batch: pd.DataFrame, column_map: ColumnMap, settings: IngestSettings) -> pd.DataFrame:
    """Apply the row rules to a batch of input rows (all values as text).

    ``batch`` holds the input columns plus ``_corrupt_record`` (the raw text of a row the
    reader could not split into fields). Returns one row per input row with
    ``OUTPUT_COLUMNS``: ``ok`` and either the products fields or the ``reason``.
    """
    out: list[dict] = []
    cols = column_map.columns
    corrupt = batch["_corrupt_record"] if "_corrupt_record" in batch else pd.Series([None] * len(batch))
    records = batch.to_dict("records")
    for rec, bad in zip(records, corrupt):
        row = dict.fromkeys(OUTPUT_COLUMNS)
        row["ok"] = False
        row["product_id"] = _text(rec.get(cols["product_id"]))
        row["reason"] = _check(rec, bad, row, column_map, settings)
        row["ok"] = row["reason"] is None
        out.append(row)
    return pd.DataFrame(out, columns=OUTPUT_COLUMNS)


def _check(rec: dict, corrupt: object, row: dict, cmap: ColumnMap, settings: IngestSettings) -> str | None:
    """Fill ``row`` from ``rec``; return the first rule the row breaks, or ``None``."""
    if _text(corrupt) is not None:
        return "malformed row: wrong number of fields, bad quoting or invalid JSON"
    fields = {k: v for k, v in rec.items() if k != "_corrupt_record"}
    for name, value in fields.items():
        if isinstance(value, str) and any(ch in _BROKEN for ch in value):
            return f"broken encoding: column {name!r} holds bytes that are not valid text in the declared encoding"
    cols = cmap.columns
    if row["product_id"] is None:
        return f"missing product_id: column {cols['product_id']!r} is empty"
    title = _text(fields.get(cols["title"]))
    if title is None:
        return f"missing title: column {cols['title']!r} is empty"
    if len(title) > settings.max_title_chars:
        return f"field too long: title has {len(title):,} characters (limit {settings.max_title_chars:,})"
    for name, value in fields.items():
        if isinstance(value, str) and len(value) > settings.max_field_chars:
            return f"field too long: column {name!r} has {len(value):,} characters (limit {settings.max_field_chars:,})"
    row["title"] = title
    for target in ("brand", "category", "description"):
        row[target] = _text(fields.get(cols[target])) if target in cols else None
    price_raw = _text(fields.get(cols["price"])) if "price" in cols else None
    row["price_raw"] = price_raw
    declared = normalise_currency(_text(fields.get(cols["currency"]))) if "currency" in cols else None
    try:
        price = parse_price(price_raw, default_currency=declared or settings.default_currency)
    except PriceError as exc:
        return f"unparseable price: {exc}"
    if price is not None:
        row["price"] = price.amount
        row["currency"] = declared or price.currency
    else:
        row["currency"] = declared
    row["attributes"] = {k: t for k in cmap.attributes if (t := _text(fields.get(k))) is not None}
    return None


def raw_json(rec: Mapping[str, object]) -> str:
    """The raw row as JSON text for the quarantine table."""
    return json.dumps({k: v for k, v in rec.items()}, ensure_ascii=False, default=str)
