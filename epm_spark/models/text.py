"""How a listing becomes text, the same way everywhere (encoder, matcher, teacher, judges).

Seller noise (promotional words, platform tags, bundle text) is kept on purpose:
the models must learn to ignore it, and they only can if they see it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["listing_text", "clean", "DEFAULT_ATTRIBUTES"]

# Attribute keys worth showing a model when a catalog has them; other attributes are left out
# so long spec sheets do not push the title out of the token budget.
DEFAULT_ATTRIBUTES: tuple[str, ...] = (
    "model", "model_number", "mpn", "gtin", "ean", "capacity", "size", "colour", "color",
    "pack_size", "quantity", "condition",
)


def clean(value: Any) -> str | None:
    """A field as stripped text, or ``None`` for missing values (None, NaN, empty)."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    text = " ".join(str(value).split())
    return text or None


def listing_text(
    listing: Mapping[str, Any],
    *,
    attributes: Sequence[str] = DEFAULT_ATTRIBUTES,
    description_chars: int = 0,
    with_price: bool = False,
) -> str:
    """Render one listing (a ``products`` row as a mapping) to a single line of text.

    The title comes first and whole; the brand is added when the title does not
    already name it; then the chosen attributes as ``key: value``; optionally the
    first ``description_chars`` characters of the description and the price.
    """
    title = clean(listing.get("title")) or ""
    parts = [title]
    brand = clean(listing.get("brand"))
    if brand and brand.lower() not in title.lower():
        parts.append(f"brand: {brand}")
    attrs = listing.get("attributes") or {}
    if not isinstance(attrs, Mapping):
        # Arrow map columns arrive in pandas as lists of (key, value) tuples.
        attrs = dict(attrs)
    for key in attributes:
        value = clean(attrs.get(key))
        if value and value.lower() not in title.lower():
            parts.append(f"{key}: {value}")
    if description_chars > 0:
        description = clean(listing.get("description"))
        if description:
            parts.append(f"description: {description[:description_chars]}")
    if with_price:
        price = listing.get("price")
        if price is not None and not (isinstance(price, float) and math.isnan(price)):
            currency = clean(listing.get("currency")) or ""
            parts.append(f"price: {price:.2f} {currency}".rstrip())
    return " | ".join(p for p in parts if p)
