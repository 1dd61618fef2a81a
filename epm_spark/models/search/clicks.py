"""The search-log simulator's click model: who examines, clicks, adds to cart and buys.

Each query is searched ``frequency`` times (sessions). A session shows ``slots`` of the
query's judged listings (:mod:`~epm_spark.models.search.queries`) in a random order,
the logging policy of a randomised result slice: no listing's place depends on its
relevance, so position bias does not leak into what the logs say about relevance.
At position ``p`` (1-based) a listing of relation ``g`` (exact, substitute, complement,
irrelevant) with price ``x``, whose page's judged listings in the same currency have median
price ``m``:

    P(examine)                 = p ** -eta
    P(click | examine)         = c_g
    P(cart | click)            = a_g
    P(purchase | cart)         = min(1, b_g * phi),   phi = clip((x / m) ** -beta, 1/phi_max, phi_max)

(``phi = 1`` when the listing has no price, or no other judged listing of its page is priced
in its currency: the benchmark catalogs mix shops of many countries, and 12,000,000 VND is not
dearer than 500 GBP. Prices without a currency count as one currency.) Flags obey purchase
implies cart implies click implies impression. The position model is the examination hypothesis of
Richardson et al. (2007) / Craswell et al. (2008); the cart and purchase steps are the
click -> cart -> purchase funnel of e-commerce logs. Defaults give a click-through rate of
a few percent and purchases on well under 1% of impressions (``docs/ranker.md`` has the
measured rates).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from epm_spark.errors import ConfigError, InputError
from epm_spark.io.prices import Price
from epm_spark.models.search.queries import GRADES

__all__ = ["ClickModelSettings", "simulate_sessions", "EVENT_COLUMNS"]

EVENT_COLUMNS = ["session_id", "query", "product_id", "position", "impressed", "clicked", "added_to_cart",
                 "purchased", "event_time"]


def _probabilities(values: dict[str, float], name: str) -> dict[str, float]:
    missing = sorted(set(GRADES) - set(values))
    if missing:
        raise ConfigError(f"{name} needs a probability for {', '.join(missing)}")
    for k, v in values.items():
        if k not in GRADES:
            raise ConfigError(f"{name}: unknown relation {k!r}; relations: {', '.join(GRADES)}")
        if not 0.0 <= v <= 1.0:
            raise ConfigError(f"{name}.{k} must be between 0 and 1, got {v}")
    return values


@dataclass
class ClickModelSettings:
    """Parameters of the click model (formula in the module docstring and ``docs/ranker.md``)."""

    slots: int = 10
    examination_decay: float = 1.0  # eta
    click: dict[str, float] = field(default_factory=lambda: {
        "exact": 0.6, "substitute": 0.3, "complement": 0.12, "irrelevant": 0.03})
    cart: dict[str, float] = field(default_factory=lambda: {
        "exact": 0.3, "substitute": 0.12, "complement": 0.2, "irrelevant": 0.02})
    purchase: dict[str, float] = field(default_factory=lambda: {
        "exact": 0.5, "substitute": 0.25, "complement": 0.35, "irrelevant": 0.05})
    price_elasticity: float = 0.7  # beta
    price_factor_max: float = 2.0  # phi_max
    seed: int = 5
    # Sessions are spread evenly at random over this many days from `start` (UTC).
    start: str = "2026-11-01"
    days: int = 28

    def __post_init__(self) -> None:
        if self.slots <= 0 or self.days <= 0:
            raise ConfigError("slots and days must be > 0")
        if self.examination_decay < 0 or self.price_elasticity < 0 or self.price_factor_max < 1:
            raise ConfigError("need examination_decay >= 0, price_elasticity >= 0 and price_factor_max >= 1")
        for name in ("click", "cart", "purchase"):
            _probabilities(getattr(self, name), name)
        try:
            pd.Timestamp(self.start, tz="UTC")
        except ValueError:
            raise ConfigError(f"start {self.start!r} is not a date") from None


def _price_factor(prices: np.ndarray, currencies: np.ndarray, settings: ClickModelSettings) -> np.ndarray:
    """phi per listing of one query's page, each price against the median of its currency's."""
    known = np.isfinite(prices) & (prices > 0)
    phi = np.ones(len(prices))
    if settings.price_elasticity == 0:
        return phi
    for currency in set(currencies[known]):
        same = known & (currencies == currency)
        if same.sum() >= 2:
            median = float(np.median(prices[same]))
            phi[same] = np.clip((prices[same] / median) ** -settings.price_elasticity,
                                1.0 / settings.price_factor_max, settings.price_factor_max)
    return phi


def _amount_and_currency(price: Price | None) -> tuple[float, str]:
    if price is None:
        return np.nan, ""
    return float(price.amount), price.currency or ""


def simulate_sessions(queries: pd.DataFrame, judgments: pd.DataFrame, prices: Mapping[str, Price],
                      settings: ClickModelSettings | None = None) -> pd.DataFrame:
    """``EVENT_COLUMNS`` rows: one per impression of ``frequency`` sessions per query.

    ``queries`` needs ``query`` and ``frequency``; ``judgments`` ``query``, ``product_id`` and
    ``relation``; ``prices`` maps product ids to a :class:`~epm_spark.io.prices.Price` (currency ``None``
    when unknown); a listing missing from it has no price effect.
    """
    settings = settings or ClickModelSettings()
    for frame, cols, name in ((queries, ("query", "frequency"), "queries"),
                              (judgments, ("query", "product_id", "relation"), "judgments")):
        missing = sorted(set(cols) - set(frame.columns))
        if missing:
            raise InputError(f"{name} lack columns {missing}")
    bad = sorted(set(judgments["relation"]) - set(GRADES))
    if bad:
        raise InputError(f"judgments hold unknown relations {bad}; relations: {', '.join(GRADES)}")
    # A bare number may be a price whose currency the caller dropped; weighed as currency-less it
    # would meet the wrong prices, so it is refused rather than guessed.
    for product_id, price in prices.items():
        if not isinstance(price, Price):
            raise InputError(f"price of listing {product_id!r} is {price!r}, not a Price(amount, currency); "
                             "give currency None when it is unknown")
    rng = np.random.default_rng(settings.seed)
    rel_index = {r: i for i, r in enumerate(GRADES)}
    c = np.array([settings.click[r] for r in GRADES])
    a = np.array([settings.cart[r] for r in GRADES])
    b = np.array([settings.purchase[r] for r in GRADES])
    start = pd.Timestamp(settings.start, tz="UTC").value // 1000  # microseconds
    span = settings.days * 86_400 * 1_000_000
    pools = {q: g for q, g in judgments.groupby("query", sort=False)}
    out: dict[str, list[np.ndarray]] = {k: [] for k in EVENT_COLUMNS}
    session_base = 0
    for query, frequency in zip(queries["query"], queries["frequency"]):
        pool = pools.get(query)
        sessions = int(frequency)
        if pool is None or sessions <= 0:
            continue
        ids = pool["product_id"].to_numpy(dtype=object)
        rel = pool["relation"].map(rel_index).to_numpy()
        amounts, currencies = zip(*(_amount_and_currency(prices.get(p)) for p in ids))
        phi = _price_factor(np.array(amounts, dtype=float), np.array(currencies, dtype=object), settings)
        n = len(ids)
        slots = min(settings.slots, n)
        # Each session: a random order of the pool, its first `slots` shown.
        shown = np.argsort(rng.random((sessions, n)), axis=1)[:, :slots]
        position = np.broadcast_to(np.arange(1, slots + 1), shown.shape)
        examined = rng.random(shown.shape) < position.astype(float) ** -settings.examination_decay
        g = rel[shown]
        clicked = examined & (rng.random(shown.shape) < c[g])
        carted = clicked & (rng.random(shown.shape) < a[g])
        bought = carted & (rng.random(shown.shape) < np.minimum(1.0, b[g] * phi[shown]))
        session_ids = session_base + np.arange(sessions)
        session_base += sessions
        times = start + (rng.random(sessions) * span).astype(np.int64)
        out["session_id"].append(np.repeat(session_ids, slots))
        out["query"].append(np.full(sessions * slots, query, dtype=object))
        out["product_id"].append(ids[shown].ravel())
        out["position"].append(position.ravel().astype(np.int32))
        out["impressed"].append(np.ones(sessions * slots, dtype=bool))
        out["clicked"].append(clicked.ravel())
        out["added_to_cart"].append(carted.ravel())
        out["purchased"].append(bought.ravel())
        out["event_time"].append(np.repeat(times, slots) + np.tile(np.arange(slots), sessions) * 1_000_000)
    if not out["query"]:
        raise InputError("no query has judged listings to show; nothing to simulate")
    events = pd.DataFrame({k: np.concatenate(v) for k, v in out.items()})
    events["session_id"] = "s" + events["session_id"].astype(str).str.zfill(8)
    events["event_time"] = pd.to_datetime(events["event_time"], unit="us", utc=True)
    return events[EVENT_COLUMNS]
