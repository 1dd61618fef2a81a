"""The click model: observed rates match its parameters; the funnel holds; purchases are sparse."""

import numpy as np
import pandas as pd
import pytest

from epm_spark.errors import ConfigError, InputError
from epm_spark.io.prices import Price
from epm_spark.models.search.clicks import ClickModelSettings, simulate_sessions

RELATIONS = ["exact", "substitute", "complement", "irrelevant"]


def pool(n_queries=40, sessions=400):
    queries = pd.DataFrame({"query": [f"q{i}" for i in range(n_queries)], "frequency": sessions})
    rows = [(f"q{i}", f"q{i}-p{j}", RELATIONS[j % 4]) for i in range(n_queries) for j in range(12)]
    return queries, pd.DataFrame(rows, columns=["query", "product_id", "relation"])


def test_rates_match_the_parameters():
    settings = ClickModelSettings(price_elasticity=0.0, seed=1)
    queries, judgments = pool()
    events = simulate_sessions(queries, judgments, {}, settings)
    assert len(events) == 40 * 400 * settings.slots
    rel = events["product_id"].map(dict(zip(judgments["product_id"], judgments["relation"])))
    examine = events["position"].astype(float) ** -settings.examination_decay
    for r in RELATIONS:
        e = events[rel == r]
        expected_ctr = (examine[rel == r] * settings.click[r]).mean()
        assert e["clicked"].mean() == pytest.approx(expected_ctr, rel=0.08)
        clicked = e[e["clicked"]]
        assert clicked["added_to_cart"].mean() == pytest.approx(settings.cart[r], abs=0.03)
        carted = e[e["added_to_cart"]]
        if len(carted) > 300:
            assert carted["purchased"].mean() == pytest.approx(settings.purchase[r], abs=0.06)
    # position bias: the first slot is clicked about `slots` times as often as the last (eta = 1)
    by_pos = events.groupby("position")["clicked"].mean()
    assert by_pos[1] / by_pos[settings.slots] == pytest.approx(settings.slots, rel=0.25)


def test_funnel_holds_and_purchases_are_sparse():
    queries, judgments = pool(n_queries=30, sessions=100)
    events = simulate_sessions(queries, judgments, {}, ClickModelSettings(seed=2))
    assert not (events["purchased"] & ~events["added_to_cart"]).any()
    assert not (events["added_to_cart"] & ~events["clicked"]).any()
    assert events["impressed"].all()
    assert 0 < events["purchased"].mean() < 0.01
    # each session shows `slots` distinct listings at positions 1..slots
    per_session = events.groupby("session_id").agg(n=("product_id", "nunique"), top=("position", "max"))
    assert (per_session["n"] == 10).all() and (per_session["top"] == 10).all()


def test_cheaper_listings_sell_more():
    queries = pd.DataFrame({"query": ["q"], "frequency": [40000]})
    judgments = pd.DataFrame({"query": "q", "product_id": ["cheap", "dear"], "relation": "exact"})
    events = simulate_sessions(queries, judgments, {"cheap": Price(50.0, None), "dear": Price(200.0, None)},
                               ClickModelSettings(seed=3, price_elasticity=1.0))
    carted = events[events["added_to_cart"]]
    rate = carted.groupby("product_id")["purchased"].mean()
    assert rate["cheap"] > 1.5 * rate["dear"]


def test_prices_are_weighed_within_their_currency():
    # Two pounds-sterling offers and one in dong: the dong offer's raw amount is not "dearer",
    # and alone in its currency it has no price effect; the two GBP offers compare with each other.
    queries = pd.DataFrame({"query": ["q"], "frequency": [60000]})
    judgments = pd.DataFrame({"query": "q", "product_id": ["gbp-cheap", "gbp-dear", "vnd"], "relation": "exact"})
    prices = {"gbp-cheap": Price(400.0, "GBP"), "gbp-dear": Price(600.0, "GBP"), "vnd": Price(12e6, "VND")}
    settings = ClickModelSettings(seed=4, price_elasticity=1.0)
    events = simulate_sessions(queries, judgments, prices, settings)
    rate = events[events["added_to_cart"]].groupby("product_id")["purchased"].mean()
    b = settings.purchase["exact"]
    assert rate["vnd"] == pytest.approx(b, abs=0.02)  # phi = 1
    assert rate["gbp-cheap"] == pytest.approx(min(1.0, b * 500 / 400), abs=0.02)
    assert rate["gbp-dear"] == pytest.approx(b * 500 / 600, abs=0.02)
    # amounts without a currency count as one currency of their own: they do not meet the GBP offers
    unknown = simulate_sessions(queries, judgments, {**prices, "vnd": Price(5.0, None)}, settings)
    rate = unknown[unknown["added_to_cart"]].groupby("product_id")["purchased"].mean()
    assert rate["vnd"] == pytest.approx(b, abs=0.02)


def test_bad_parameters_and_inputs_are_refused():
    with pytest.raises(ConfigError, match="click.exact must be between 0 and 1"):
        ClickModelSettings(click={"exact": 1.5, "substitute": 0.3, "complement": 0.1, "irrelevant": 0.0})
    with pytest.raises(ConfigError, match="cart needs a probability for"):
        ClickModelSettings(cart={"exact": 0.3})
    queries, judgments = pool(2, 2)
    with pytest.raises(InputError, match="unknown relations"):
        simulate_sessions(queries, judgments.assign(relation="great"), {})
    with pytest.raises(InputError, match="lack columns"):
        simulate_sessions(queries.drop(columns="frequency"), judgments, {})
    with pytest.raises(InputError, match=r"price of listing 'p0' is 12.5, not a Price"):
        simulate_sessions(queries, judgments, {"p0": 12.5})
