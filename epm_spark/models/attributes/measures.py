"""Capacities and sizes: numbers with units, read into each dimension's base unit and compared
within a tolerance."""

from __future__ import annotations

import re
from dataclasses import dataclass


_NUM = r"(\d+(?:[.,]\d+)?)"


# unit spelling -> (dimension, factor to the base unit: GB, mAh, W, mm, ml, g)
_UNITS: dict[str, tuple[str, float]] = {
    "tb": ("storage", 1000.0), "tib": ("storage", 1000.0), "terabyte": ("storage", 1000.0),
    "gb": ("storage", 1.0), "gib": ("storage", 1.0), "gigabyte": ("storage", 1.0),
    "go": ("storage", 1.0), "mb": ("storage", 0.001), "mib": ("storage", 0.001), "megabyte": ("storage", 0.001),
    "mah": ("charge", 1.0), "ah": ("charge", 1000.0),
    "w": ("power", 1.0), "watt": ("power", 1.0), "watts": ("power", 1.0), "kw": ("power", 1000.0),
    # Metres are kept apart from mm/cm/inch: "600 m" is a depth rating or a cable, "45 mm" a case or a screen.
    "mm": ("length", 1.0), "cm": ("length", 10.0), "m": ("distance", 1.0),
    "inch": ("length", 25.4), "inches": ("length", 25.4), "in": ("length", 25.4), "zoll": ("length", 25.4),
    "pouces": ("length", 25.4), '"': ("length", 25.4), "''": ("length", 25.4), "'": ("length", 25.4),
    "”": ("length", 25.4), "″": ("length", 25.4),
    "ml": ("volume", 1.0), "cl": ("volume", 10.0), "l": ("volume", 1000.0), "ltr": ("volume", 1000.0),
    "liter": ("volume", 1000.0), "litre": ("volume", 1000.0), "oz": ("volume", 29.5735),
    "g": ("mass", 1.0), "kg": ("mass", 1000.0), "gram": ("mass", 1.0), "grams": ("mass", 1.0),
}


# Relative tolerance per dimension: storage is loose enough for decimal vs binary prefixes (2.4%).
_TOLERANCE = {"storage": 0.03}


_DEFAULT_TOLERANCE = 0.02


_UNIT_ALT = "|".join(sorted((re.escape(u) for u in _UNITS), key=len, reverse=True))


MEASURE = re.compile(
    rf"(?<![\w.]){_NUM}(?:\s?-\s?{_NUM})?\s?-?\s?(?P<unit>{_UNIT_ALT})(?![a-z0-9])", re.I)


MULTIPLIED = re.compile(rf"(?<![\w.])(\d{{1,2}})\s?x\s?{_NUM}\s?(?P<unit>tb|gb|mb)(?![a-z0-9])", re.I)


@dataclass(frozen=True)
class Measure:
    """A capacity or size in its dimension's base unit (GB, mAh, W, mm, ml, g)."""

    value: float
    dimension: str
    text: str

    def same_as(self, other: Measure) -> bool:
        if self.dimension != other.dimension:
            return False
        tol = _TOLERANCE.get(self.dimension, _DEFAULT_TOLERANCE)
        return abs(self.value - other.value) <= tol * max(abs(self.value), abs(other.value), 1e-9)


def parse_measures(text: str) -> tuple[Measure, ...]:
    """Every capacity/size in ``text`` in its base unit, including both ends of ranges and kit totals."""
    out: list[Measure] = []
    for m in MULTIPLIED.finditer(text):
        n, value, unit = int(m.group(1)), _number(m.group(2)), m.group("unit").lower()
        dim, factor = _UNITS[unit]
        out.append(Measure(n * value * factor, dim, f"{_fmt(n * value)} {unit.upper()}"))
    for m in MEASURE.finditer(text):
        unit = m.group("unit").lower()
        dim, factor = _UNITS[unit]
        for raw in (m.group(1), m.group(2)):
            if raw is None:
                continue
            value = _number(raw)
            if dim == "mass" and unit == "g" and value < 10 and "." not in raw:
                continue  # 4G / 5G are network generations, not grams
            if unit == "m" and re.search(rf"(?<![\w.]){re.escape(raw)}M\b", text) and raw == "3":
                continue  # 3M is a brand
            if unit in ("'", "in") and (value > 120 or re.match(r"\s*-?\s*1\b", text[m.end():])):
                continue  # 2-in-1, feet, years
            label = {"'": '"', "''": '"', "”": '"', "″": '"', "inches": '"', "inch": '"', "in": '"',
                     "zoll": '"', "pouces": '"'}.get(unit, unit.upper() if dim == "storage" else unit)
            sep = "" if label == '"' else " "
            out.append(Measure(value * factor, dim, f"{_fmt(value)}{sep}{label}"))
    unique: list[Measure] = []
    for m in out:
        if not any(m.same_as(u) for u in unique):
            unique.append(m)
    return tuple(unique)


def _number(raw: str) -> float:
    if re.fullmatch(r"\d{1,3},\d{3}", raw):
        return float(raw.replace(",", ""))
    return float(raw.replace(",", "."))


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
