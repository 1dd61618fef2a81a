"""Model numbers: which tokens are codes rather than specifications, and when two codes are one."""

from __future__ import annotations

import re

from epm_spark.models.attributes.measures import MEASURE, MULTIPLIED


# Alphanumeric tokens that are specifications, not model numbers.
_SPEC_TOKEN = re.compile(
    r"^(?:ddr\d?l?(?:-?\d+)?|lpddr\d\w*|gddr\d\w*|pc\d?l?-?\d+|usb-?\d(?:\.\d)?\w*|lga-?\d+|am\d\+?|fm\d\+?|"
    r"802\.?11\w*|\d{3,4}[pi]|\d+k|x\d+|h\.?26\d|mp\d|wi-?fi\d*|\dg|sata\d*\w*|pcie\d*\w*|hdmi\d*\w*|"
    r"cat\d\w*|class\d+|c\d{1,2}|u\d|v\d{1,2}|uhs-?i+|\d+(?:[.,]\d+)?-?[a-z]+|\d+(?:gb|mb)/s|"
    r"gen\d+|ipx?\d|rs-?\d+|sata[-/]?\d*|\d+/uhs-?i+|cl\d{1,2}|uhs-?\d|[an]\d{3}|a[cx]\d{3,5}|\d+x\d+\w*|"
    r"windows\d+|win\d+|ios\d+|v?\d{1,4}(?:\.\d{1,3}){1,2}[a-z]?)$",
    re.I,
)


CODE_SPLIT = re.compile(r"[\s,;()\[\]{}|!?*:\"”“]+")


def normalise_model_number(code: str) -> str:
    """Upper case without separators: ``sm-g991b`` and ``SMG991B`` compare equal."""
    return re.sub(r"[^0-9A-Z]", "", code.upper())


def looks_like_model_number(token: str) -> bool:
    """A code (CMK64GX4M4A2666C16, 388504-B21), a long part number or ``#117``; not a spec (DDR4, 32GB)."""
    t = token.strip(".-/#'")
    if token.startswith("#") and t.isdigit():
        return len(t) >= 2
    norm = normalise_model_number(t)
    if len(norm) < 4 or _SPEC_TOKEN.match(t) or MEASURE.fullmatch(t) or MULTIPLIED.fullmatch(t):
        return False
    has_digit = any(c.isdigit() for c in norm)
    has_alpha = any(c.isalpha() for c in norm)
    if has_digit and has_alpha:
        return True
    # Long digit runs are part numbers (40433, 981-000480, 215.30.46.51.01.001); four digits are years.
    return has_digit and not has_alpha and len(norm) >= 5


def model_numbers_related(c: str, d: str) -> bool:
    """One code extends or contains the other: HT-BD2T vs HTBD2TXAA, R550 vs PD-R550."""
    return c == d or (min(len(c), len(d)) >= 4 and (c in d or d in c))
