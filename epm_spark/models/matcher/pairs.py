"""The pair frame: what every matcher function takes.

One row per pair of listings, each listing in the columns of the ``products`` table with a
``left_`` or ``right_`` prefix (``left_title``, ``left_brand``, ``left_attributes``, ...,
``right_title``, ...). Other columns (``label``, ``benchmark``, ids) ride along untouched.
The Spark ``match`` job builds the same shape with a join, so training, evaluation and
batch inference all see pairs the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from epm_spark.errors import InputError

__all__ = ["LISTING_COLUMNS", "pair_frame", "side", "check_pair_frame"]

# The products columns a prompt can use; the rest of a products row is not needed.
LISTING_COLUMNS = ("product_id", "title", "brand", "category", "description", "price", "currency", "attributes")


def pair_frame(pairs: pd.DataFrame, products: pd.DataFrame) -> pd.DataFrame:
    """Join ``labelled_pairs`` rows with their two listings from ``products``.

    ``pairs`` needs ``left_id`` and ``right_id`` (and ``left_source``/``right_source`` when
    product ids repeat across sources); ``products`` needs ``product_id`` (and ``source``).
    Pairs whose listing is missing are an error, not silently dropped.
    """
    keyed = "source" in products.columns and {"left_source", "right_source"} <= set(pairs.columns)
    cols = [c for c in LISTING_COLUMNS if c in products.columns] + (["source"] if keyed else [])
    listings = products[cols].drop_duplicates(["source", "product_id"] if keyed else ["product_id"])
    out = pairs.reset_index(drop=True)
    for s in ("left", "right"):
        renamed = listings.rename(columns={c: f"{s}_{c}" for c in cols})
        renamed = renamed.rename(columns={f"{s}_product_id": f"{s}_id"})
        on = [f"{s}_id"] + ([f"{s}_source"] if keyed else [])
        out = out.drop(columns=[c for c in renamed.columns if c in out.columns and c not in on])
        before = len(out)
        out = out.merge(renamed, on=on, how="left", validate="many_to_one", indicator=True)
        missing = out["_merge"] == "left_only"
        if missing.any():
            example = out.loc[missing, f"{s}_id"].iloc[0]
            raise InputError(f"{int(missing.sum())} pairs name a {s} listing that is not in products, "
                             f"e.g. {s}_id={example!r}")
        assert len(out) == before
        out = out.drop(columns="_merge")
    return out


def side(row: Mapping[str, Any], which: str) -> dict[str, Any]:
    """One listing of a pair-frame row as a products-shaped mapping (for ``listing_text``)."""
    prefix = f"{which}_"
    return {key[len(prefix):]: value for key, value in row.items() if key.startswith(prefix)}


def check_pair_frame(pairs: pd.DataFrame) -> None:
    missing = [c for c in ("left_title", "right_title") if c not in pairs.columns]
    if missing:
        raise InputError(f"the pair frame lacks {', '.join(missing)}; it needs each listing's products "
                         "columns with a left_/right_ prefix (see epm_spark.models.matcher.pairs)")
