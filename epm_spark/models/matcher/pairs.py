"""Labelled pairs with both listings inline: the frame teachers, judges and trainers read.

A *pair frame* has the ``labelled_pairs`` columns (``benchmark``, ``left_id``,
``right_id``, ``left_source``, ``right_source``, ``label``, ``split``, ...) plus, for
each side, the listing's ``products`` columns prefixed ``left_`` / ``right_``
(``left_title``, ``left_brand``, ``left_description``, ``left_attributes``, ...).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from typing import Any

import pandas as pd

from epm_spark.errors import InputError

__all__ = ["LISTING_FIELDS", "PAIR_KEY", "join_listings", "benchmark_pairs", "listing", "listing_json",
           "parse_listing", "gold_label"]

# products columns carried into a pair frame for each side (id and source are already in the pair).
LISTING_FIELDS = ("title", "brand", "category", "description", "price", "currency", "attributes")
PAIR_KEY = ("benchmark", "split", "left_source", "left_id", "right_source", "right_id")


def join_listings(pairs: pd.DataFrame, left: pd.DataFrame, right: pd.DataFrame | None = None) -> pd.DataFrame:
    """Add each side's listing to ``pairs``.

    ``left`` and ``right`` are ``products`` rows; pass one frame (e.g. the whole
    ``products`` table) to look both sides up in it. Listings are found by
    ``(source, product_id)``; a pair whose listing is missing is an error that names it.
    """
    right = left if right is None else right
    out = pairs.reset_index(drop=True).copy()
    for side, products in (("left", left), ("right", right)):
        cols = ["source", "product_id", *[c for c in LISTING_FIELDS if c in products.columns]]
        table = products[cols].drop_duplicates(["source", "product_id"]).rename(
            columns={c: f"{side}_{c}" for c in cols if c not in ("source", "product_id")})
        table = table.rename(columns={"source": f"{side}_source", "product_id": f"{side}_id"})
        table[f"{side}_id"] = table[f"{side}_id"].astype(str)
        out[f"{side}_id"] = out[f"{side}_id"].astype(str)
        before = len(out)
        out = out.merge(table, on=[f"{side}_source", f"{side}_id"], how="left", validate="many_to_one")
        assert len(out) == before
        missing = out[f"{side}_title"].isna() if f"{side}_title" in out else pd.Series(True, index=out.index)
        if missing.any():
            row = out[missing].iloc[0]
            raise InputError(
                f"{int(missing.sum())} pairs name a {side} listing that is not in products, e.g. "
                f"source {row[f'{side}_source']!r} id {row[f'{side}_id']!r}"
            )
    return out


def benchmark_pairs(bench: Any, split: str) -> pd.DataFrame:
    """The pair frame of one split of a :class:`~epm_spark.io.benchmarks.Benchmark`."""
    from epm_spark.io.benchmarks import SPLIT_ALIASES

    name = SPLIT_ALIASES.get(bench.layout, {}).get(split, split)
    pairs = bench.split_pairs(name)
    if pairs.empty:
        raise InputError(f"benchmark {bench.name} has no split {split!r}; splits: {', '.join(bench.splits)}")
    return join_listings(pairs, bench.left, bench.right)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def listing(row: Mapping[str, Any], side: str) -> dict[str, Any]:
    """One side of a pair-frame row as a ``products``-style mapping."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    out: dict[str, Any] = {"product_id": row.get(f"{side}_id"), "source": row.get(f"{side}_source")}
    for name in LISTING_FIELDS:
        value = row.get(f"{side}_{name}")
        if name == "attributes":
            value = {} if value is None or (not isinstance(value, Mapping) and _missing(value)) else dict(value)
        elif _missing(value):
            value = None
        out[name] = value
    return out


def listing_json(item: Mapping[str, Any]) -> str:
    """A listing as compact JSON (how reward datasets carry the two listings of a prompt)."""
    keep = {k: item.get(k) for k in ("product_id", "source", *LISTING_FIELDS) if not _missing(item.get(k))}
    if "attributes" in keep:
        keep["attributes"] = {str(k): str(v) for k, v in dict(keep["attributes"]).items()}
    return json.dumps(keep, ensure_ascii=False, default=str, separators=(",", ":"))


def parse_listing(value: Any) -> dict[str, Any]:
    """A listing given as a mapping or as :func:`listing_json` text."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        try:
            data = json.loads(value)
        except json.JSONDecodeError:
            return {"title": value}
        if isinstance(data, dict):
            return data
        return {"title": value}
    raise TypeError(f"a listing must be a mapping or JSON text, got {type(value).__name__}")


def gold_label(value: Any) -> str | None:
    """``match`` / ``no_match`` from a gold label written as 1/0, True/False or the label itself."""
    from epm_spark.models.matcher.decision import MATCH, NO_MATCH

    if _missing(value):
        return None
    if isinstance(value, str):
        v = value.strip().lower()
        if v in (MATCH, "1", "true", "yes"):
            return MATCH
        if v in (NO_MATCH, "0", "false", "no", "nomatch", "no-match"):
            return NO_MATCH
        raise ValueError(f"gold label {value!r} is not match/no_match/1/0")
    if isinstance(value, numbers.Number) and float(value) in (0.0, 1.0):
        return MATCH if float(value) == 1.0 else NO_MATCH
    raise ValueError(f"gold label {value!r} is not match/no_match/1/0")
