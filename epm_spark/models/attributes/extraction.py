"""One listing's attributes: brand, model numbers, product-line words, sizes, colours, quantity,
condition."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from epm_spark.models.attributes.codes import CODE_SPLIT, looks_like_model_number, normalise_model_number
from epm_spark.models.attributes.lexicons import (
    BRAND_SUFFIXES, COLOUR_PHRASES, COLOURS, NOT_BRANDS, STOPWORDS, lexicon_brands, normalise_brand,
)
from epm_spark.models.attributes.measures import MEASURE, MULTIPLIED, Measure, parse_measures
from epm_spark.models.attributes.noise import read_condition, read_quantity, strip_noise, unescape
from epm_spark.models.text import clean


@dataclass(frozen=True)
class ListingAttributes:
    """One listing's attributes; values are normalised, ``*_text`` keep the seller's spelling."""

    title: str
    clean_title: str
    noise: tuple[str, ...] = ()
    brand: str | None = None
    brand_source: str | None = None  # "field", "lexicon" or "guess"
    brand_mentions: frozenset[str] = frozenset()
    model_numbers: tuple[str, ...] = ()
    model_numbers_text: tuple[str, ...] = ()
    line_tokens: tuple[str, ...] = ()
    versions: tuple[str, ...] = ()
    measures: tuple[Measure, ...] = ()
    colours: frozenset[str] = frozenset()
    quantity: int | None = None
    condition: str | None = None
    search_text: str = field(default="", repr=False)

    def value(self, attribute: str) -> str | None:
        """The attribute as a short display string, or ``None`` when the listing does not say."""
        if attribute == "brand":
            return self.brand
        if attribute == "model_number":
            return ", ".join(self.model_numbers_text) or None
        if attribute == "product_line":
            return " ".join(self.line_tokens + self.versions) or None
        if attribute == "capacity":
            return ", ".join(m.text for m in self.measures) or None
        if attribute == "colour":
            return ", ".join(sorted(self.colours)) or None
        if attribute == "quantity":
            return None if self.quantity is None else str(self.quantity)
        if attribute == "condition":
            return self.condition
        raise KeyError(attribute)


def _colours(lower: str, brand_words: set[str]) -> frozenset[str]:
    found = set()
    for phrase, canon in COLOUR_PHRASES.items():
        if phrase in lower:
            found.add(canon)
            lower = lower.replace(phrase, " ")
    for word in re.findall(r"[a-zäöüéèàíóúß]+", lower):
        if word in COLOURS and word not in brand_words:
            found.add(COLOURS[word])
    return frozenset(found)


def _attrs_map(listing: Mapping[str, Any]) -> dict[str, str]:
    attrs = listing.get("attributes") or {}
    if not isinstance(attrs, Mapping):
        attrs = dict(attrs)
    return {str(k).lower(): v for k, v in attrs.items() if clean(v)}


def extract(listing: Mapping[str, Any] | str) -> ListingAttributes:
    """The attributes of one listing (a ``products`` row as a mapping, or a bare title)."""
    if isinstance(listing, str):
        listing = {"title": listing}
    title = unescape(clean(listing.get("title")) or "")
    attrs = _attrs_map(listing)
    stripped = strip_noise(title)
    text = stripped.text
    lower = text.lower()
    raw_lower = title.lower()

    spelled: set[str] = set()
    lexicon = lexicon_brands(lower, spelled)
    field_brand = normalise_brand(listing.get("brand"))
    if field_brand:
        raw_brand = (clean(listing.get("brand")) or "").lower()
        spelled.update(w for w in re.split(r"[\s-]+", raw_brand) if w and w not in BRAND_SUFFIXES)
    brand, source = None, None
    if field_brand:
        brand, source = field_brand, "field"
    elif lexicon:
        brand, source = lexicon[0], "lexicon"
    else:
        first = re.match(r"[a-z][a-z0-9&'-]+", lower)
        if first and first.group(0) not in NOT_BRANDS and first.group(0) not in COLOURS \
                and not looks_like_model_number(first.group(0)) and len(first.group(0)) > 1:
            brand, source = first.group(0), "guess"
    brand_words: set[str] = set(spelled)
    for b in {brand if source != "guess" else None, *lexicon} - {None}:
        brand_words.add(b)
        brand_words.update(re.split(r"[\s-]+", b))

    codes_text: list[str] = []
    for key in ("model", "model_number", "mpn", "gtin", "ean", "sku"):
        if key in attrs:
            codes_text.extend(t for t in CODE_SPLIT.split(str(attrs[key])) if t)
    tokens = [p for t in CODE_SPLIT.split(text) for p in (t.split("/") if t.count("/") >= 2 else [t])]
    codes_text.extend(t.strip(".-/'") for t in tokens if looks_like_model_number(t))
    seen: dict[str, str] = {}
    for t in codes_text:
        norm = normalise_model_number(t)
        if len(norm) >= 2 and norm not in seen:
            seen[norm] = t
    measures = parse_measures(text)
    for key in ("capacity", "size"):
        if key in attrs:
            measures = tuple(dict.fromkeys((*measures, *parse_measures(str(attrs[key])))))
    colour_text = lower + " " + " ".join(str(attrs[k]).lower() for k in ("colour", "color") if k in attrs)
    colours = _colours(colour_text, brand_words)
    quantity = read_quantity(title)
    if quantity is None and "pack_size" in attrs:
        quantity = read_quantity(f"pack of {attrs['pack_size']}")
    condition = read_condition(raw_lower)
    if condition is None and "condition" in attrs:
        condition = read_condition(str(attrs["condition"]).lower())

    line, versions = _line_tokens(lower, brand_words, set(seen), measures)
    return ListingAttributes(
        title=title, clean_title=text, noise=stripped.removed, brand=brand, brand_source=source,
        brand_mentions=frozenset(lexicon), model_numbers=tuple(seen), model_numbers_text=tuple(seen.values()),
        line_tokens=line, versions=versions, measures=measures, colours=colours, quantity=quantity,
        condition=condition, search_text=normalise_model_number(title + " " + " ".join(attrs.values())),
    )


def _line_tokens(lower: str, brand_words: set[str], codes: set[str],
                 measures: tuple[Measure, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Product-line words and the bare numbers/versions of a clean title (codes, sizes, brand, colours out)."""
    text = MULTIPLIED.sub(" ", lower)
    text = MEASURE.sub(" ", text)
    line: list[str] = []
    numbers: list[str] = []
    for token in re.findall(r"[a-z0-9äöüéèàíóúß][a-z0-9äöüéèàíóúß.'+-]*", text):
        token = token.strip(".-'+")
        if not token or token in STOPWORDS or token in brand_words or token in COLOURS:
            continue
        if normalise_model_number(token) in codes or looks_like_model_number(token):
            continue
        if re.fullmatch(r"v?\d+(?:\.\d+)*|'\d\d", token):
            numbers.append(_version(token))
        elif len(token) > 1:
            line.append(stem(token))
    return tuple(dict.fromkeys(line)), tuple(dict.fromkeys(numbers))


def stem(token: str) -> str:
    """Fold plurals and one abbreviation so "boosters" meets "booster" and "pro" meets "professional"."""
    if token == "pro":
        return "professional"
    if len(token) > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


def _version(token: str) -> str:
    token = token.lstrip("v'")
    while token.endswith(".0"):
        token = token[:-2]
    return token
