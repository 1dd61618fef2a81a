"""Row rules of search-log ingestion: which event rows become ``search_events`` and why the others do not.

Pure pandas, applied batch by batch inside ``ingest-events`` (the rule that needs the
catalog, ``unknown product``, is a join in the job). Every input row comes out once, as an
event or with a reason ``"<rule>: <detail>"``.
"""

from __future__ import annotations

import pandas as pd

from epm_spark.errors import InputError

__all__ = ["EVENT_RULES", "EVENT_ALIASES", "resolve_event_columns", "validate_events"]

EVENT_RULES = (
    "malformed row", "missing field", "bad flag", "bad position", "bad timestamp",
    "click without impression", "cart without click", "purchase without click", "purchase without cart",
    "unknown product",
)

# search_events column -> names logs commonly use for it.
EVENT_ALIASES: dict[str, tuple[str, ...]] = {
    "session_id": ("session_id", "session", "search_id"),
    "query": ("query", "search_query", "search_term", "keywords", "q"),
    "product_id": ("product_id", "sku", "item_id", "offer_id", "listing_id"),
    "position": ("position", "rank", "pos", "slot"),
    "impressed": ("impressed", "impression", "shown"),
    "clicked": ("clicked", "click", "clicks"),
    "added_to_cart": ("added_to_cart", "add_to_cart", "cart", "atc", "carted"),
    "purchased": ("purchased", "purchase", "bought", "order", "ordered"),
    "event_time": ("event_time", "timestamp", "ts", "time", "event_ts"),
}
_REQUIRED = ("session_id", "query", "product_id", "clicked", "added_to_cart", "purchased")
_TRUE = {"true", "t", "1", "yes", "y", "1.0"}
_FALSE = {"false", "f", "0", "no", "n", "0.0"}
OUTPUT = ["ok", "reason", "session_id", "query", "product_id", "position", "impressed", "clicked", "added_to_cart",
          "purchased", "event_time"]


def resolve_event_columns(columns: list[str]) -> dict[str, str]:
    """search_events column -> input column, by the names logs commonly use."""
    lower = {c.lower(): c for c in columns}
    mapping = {}
    for target, names in EVENT_ALIASES.items():
        for name in names:
            if name in lower:
                mapping[target] = lower[name]
                break
    missing = [c for c in _REQUIRED if c not in mapping]
    if missing:
        raise InputError(f"the event log has no column for {', '.join(missing)}; columns are {', '.join(columns)} "
                         f"(accepted names: " + "; ".join(f"{c}: {'/'.join(EVENT_ALIASES[c])}" for c in missing) + ")")
    return mapping


def _text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    text = str(value).strip()
    return text or None


def _flag(value: object) -> bool | None:
    text = _text(value)
    if text is None:
        return None
    t = text.lower()
    return True if t in _TRUE else False if t in _FALSE else None


def validate_events(batch: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """One row per input row with ``OUTPUT`` columns: ``ok`` and the event, or the ``reason``."""
    corrupt = batch["_corrupt_record"] if "_corrupt_record" in batch else pd.Series([None] * len(batch))
    rows = []
    for rec, bad in zip(batch.to_dict("records"), corrupt):
        row = dict.fromkeys(OUTPUT)
        row["reason"] = _check(rec, bad, row, columns)
        row["ok"] = row["reason"] is None
        rows.append(row)
    return pd.DataFrame(rows, columns=OUTPUT)


def _check(rec: dict, corrupt: object, row: dict, cols: dict[str, str]) -> str | None:
    for name in ("session_id", "query", "product_id"):
        row[name] = _text(rec.get(cols[name]))
    if _text(corrupt) is not None:
        return "malformed row: wrong number of fields, bad quoting or invalid JSON"
    for name in ("session_id", "query", "product_id"):
        if row[name] is None:
            return f"missing field: column {cols[name]!r} ({name}) is empty"
    flags = ("impressed", "clicked", "added_to_cart", "purchased")
    for name in flags:
        if name not in cols:  # a log of impressions only has no impressed column
            row[name] = True
            continue
        value = _flag(rec.get(cols[name]))
        if value is None:
            return f"bad flag: {name} is {_text(rec.get(cols[name]))!r}, not true/false/1/0"
        row[name] = value
    if "position" in cols and _text(rec.get(cols["position"])) is not None:
        text = _text(rec.get(cols["position"]))
        try:
            position = float(text)
        except ValueError:
            return f"bad position: {text!r} is not a number"
        if position < 1 or position != int(position):
            return f"bad position: {text!r} is not a whole number >= 1"
        row["position"] = int(position)
    if "event_time" in cols and _text(rec.get(cols["event_time"])) is not None:
        text = _text(rec.get(cols["event_time"]))
        try:
            row["event_time"] = pd.Timestamp(text).tz_localize("UTC") if pd.Timestamp(text).tzinfo is None \
                else pd.Timestamp(text).tz_convert("UTC")
        except (ValueError, TypeError):
            return f"bad timestamp: {text!r}"
    if row["clicked"] and not row["impressed"]:
        return "click without impression: clicked but not impressed"
    if row["purchased"] and not row["clicked"]:
        return "purchase without click: purchased but not clicked"
    if row["added_to_cart"] and not row["clicked"]:
        return "cart without click: added to cart but not clicked"
    if row["purchased"] and not row["added_to_cart"]:
        return "purchase without cart: purchased but never added to the cart"
    return None
