"""The multi-task ranker: losses, the chain, a training step with a tiny random encoder, save and load."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from encoder_tiny import save_tiny
from search_tiny import pairs_frame
from epm_spark.errors import ConfigError, InputError
from epm_spark.models.search.losses import ListNetLoss, NormalisedBinomialLoss, base_entropy
from epm_spark.models.search.ranker import MultiTaskRanker, read_card
from epm_spark.models.search.settings import RankerSettings
from epm_spark.models.search.train import COUNT_COLUMNS, aggregate_events, fit, training_pairs


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory):
    return str(save_tiny(tmp_path_factory.mktemp("ranker") / "tiny"))


def test_loss_is_the_normalised_binomial_likelihood():
    logits = {"click": torch.tensor([0.0, 1.0])}
    n = torch.tensor([10.0, 20.0])
    k = {"click": torch.tensor([2.0, 15.0])}
    total, parts = NormalisedBinomialLoss({"click": 0.5}, {"click": 2.0})(logits, n, k)
    p = 1 / (1 + np.exp(-np.array([0.0, 1.0])))
    nll = -(np.array([2, 15]) * np.log(p) + np.array([8, 5]) * np.log(1 - p)).sum() / 30
    assert parts["click"] == pytest.approx(nll / 0.5, rel=1e-5)
    assert float(total) == pytest.approx(2 * nll / 0.5, rel=1e-5)
    assert base_entropy(0.5) == pytest.approx(math.log(2))


def test_chained_loss_reads_each_head_as_a_step_of_the_funnel():
    # Under the chain p_cart = s(z_click) s(z_cart) and p_purchase = p_cart s(z_purchase).
    z = {"click": np.array([0.5, -1.0]), "cart": np.array([-0.5, 1.0]), "purchase": np.array([0.0, -2.0])}
    logits = {t: torch.tensor(v, dtype=torch.float32) for t, v in z.items()}
    n = torch.tensor([10.0, 20.0])
    k = {"click": torch.tensor([4.0, 5.0]), "cart": torch.tensor([1.0, 2.0]), "purchase": torch.tensor([1.0, 0.0])}
    ones = {t: 1.0 for t in z}
    _, parts = NormalisedBinomialLoss(ones, chain=True)(logits, n, k)
    s = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    p_cart = s(z["click"]) * s(z["cart"])
    p_purchase = p_cart * s(z["purchase"])
    for task, p in (("cart", p_cart), ("purchase", p_purchase)):
        events = k[task].numpy()
        nll = -(events * np.log(p) + (n.numpy() - events) * np.log(1 - p)).sum() / 30
        assert parts[task] == pytest.approx(nll, rel=1e-5)
    _, independent = NormalisedBinomialLoss(ones)(logits, n, k)
    assert independent["click"] == pytest.approx(parts["click"], rel=1e-6)
    assert independent["cart"] != pytest.approx(parts["cart"], rel=1e-3)


def test_listwise_loss_is_the_top_one_cross_entropy_per_query():
    # Two queries: (a, b) with click rates 0.3 and 0.1, (c) alone; the single listing adds nothing.
    logits = {"click": torch.tensor([2.0, 0.0, 1.0])}
    n, k = torch.tensor([10.0, 10.0, 10.0]), {"click": torch.tensor([3.0, 1.0, 5.0])}
    groups = torch.tensor([0, 0, 1])
    total, parts = ListNetLoss({"click": 2.0})(logits, n, k, groups)
    lp = torch.nn.functional.logsigmoid(logits["click"][:2])
    expected = -(torch.tensor([0.75, 0.25]) * torch.log_softmax(lp, 0)).sum() / math.log(2)
    assert parts["click"] == pytest.approx(float(expected), rel=1e-5) and float(total) == pytest.approx(2 * parts["click"])
    flipped, _ = ListNetLoss()({"click": torch.tensor([0.0, 2.0, 1.0])}, n, k, groups)
    assert float(flipped) > parts["click"], "ranking the rarer-clicked listing first must cost more"
    none, none_parts = ListNetLoss()(logits, n, {"click": torch.zeros(3)}, groups)
    assert float(none) == 0.0 and none_parts == {}


def test_listwise_training_batches_whole_queries_and_reports_its_terms(tiny_backbone):
    settings = RankerSettings(backbone=tiny_backbone, batch_size=12, learning_rate=1e-3, head_learning_rate=1e-2,
                              warmup_ratio=0.0, bf16=False, listwise_weight=1.0)
    from epm_spark.models.search.train import _query_batches

    frame = pairs_frame()
    batches = _query_batches(frame, 12, np.random.default_rng(0))
    for _ in range(6):
        idx = next(batches)
        queries = frame["query"].to_numpy()[idx]
        assert all((frame["query"] == q).sum() == (queries == q).sum() for q in set(queries)), "a query was split"
    info = fit(MultiTaskRanker.from_backbone(settings), frame, settings, max_steps=20)
    assert {"list_click", "list_cart", "list_purchase"} <= set(info["loss_history"][0])
    with pytest.raises(ConfigError, match="listwise_weight"):
        RankerSettings(listwise_weight=-1.0)


def test_chain_probabilities_are_nested(tiny_backbone):
    model = MultiTaskRanker.from_backbone(RankerSettings(backbone=tiny_backbone, chain=True))
    frame = model.score(["sony speaker"] * 3, ["sony speaker", "apple tablet", "bose speaker black"])
    assert (frame["p_purchase"] <= frame["p_cart"] + 1e-9).all() and (frame["p_cart"] <= frame["p_click"] + 1e-9).all()
    assert frame[["p_click", "p_cart", "p_purchase"]].notna().all().all()


def test_a_training_step_moves_all_three_heads(tiny_backbone):
    settings = RankerSettings(backbone=tiny_backbone, batch_size=48, learning_rate=1e-3, head_learning_rate=1e-2,
                              warmup_ratio=0.0, bf16=False, epochs=40)
    model = MultiTaskRanker.from_backbone(settings)
    before = {t: [p.detach().clone() for p in tower.parameters()] for t, tower in model.towers.items()}
    encoder_before = next(model.encoder.parameters()).detach().clone()
    info = fit(model, pairs_frame(), settings, max_steps=30)
    history = info["loss_history"]
    for task in ("click", "cart", "purchase"):
        changed = any(not torch.equal(a, b) for a, b in zip(before[task], model.towers[task].parameters()))
        assert changed, f"the {task} tower did not change"
        assert len(history) == 2 and history[-1][task] < history[0][task], f"the {task} loss did not fall: {history}"
    assert not torch.equal(encoder_before, next(model.encoder.parameters()))
    assert info["events"]["purchases"] > 0 and info["steps"] == 30


def test_single_task_model_has_one_head_and_saves_and_loads(tiny_backbone, tmp_path):
    settings = RankerSettings(backbone=tiny_backbone, tasks=["purchase"], batch_size=16, bf16=False)
    model = MultiTaskRanker.from_backbone(settings)
    fit(model, pairs_frame(), settings, max_steps=2)
    folder = model.save(tmp_path / "purchase_only-v1")
    card = read_card(folder)
    assert card.name == "purchase_only" and card.tasks == ["purchase"] and card.base_rates["purchase"] > 0
    loaded = MultiTaskRanker.load(folder, device="cpu")
    queries, texts = ["sony speaker", "apple speaker"], ["sony speaker black", "canon speaker"]
    a, b = model.score(queries, texts), loaded.score(queries, texts)
    assert a["p_click"].isna().all() and np.allclose(a["p_purchase"], b["p_purchase"], atol=1e-6)
    assert np.allclose(a["score"], a["p_purchase"])
    assert not (tmp_path / "purchase_only-v1.tmp").exists()


def test_bad_settings_and_data_are_refused(tiny_backbone, tmp_path):
    with pytest.raises(ConfigError, match="ranker.tasks"):
        RankerSettings(tasks=["views"])
    with pytest.raises(ConfigError, match="chain needs all three"):
        RankerSettings(tasks=["click"], chain=True)
    model = MultiTaskRanker.from_backbone(RankerSettings(backbone=tiny_backbone))
    with pytest.raises(InputError, match="no purchase events"):
        fit(model, pairs_frame().assign(purchases=0), RankerSettings(backbone=tiny_backbone), max_steps=1)
    with pytest.raises(InputError, match="not a ranker folder"):
        read_card(tmp_path)
    with pytest.raises(InputError, match="no events"):
        aggregate_events(pd.DataFrame(columns=["query", "product_id", "impressed", "clicked", "added_to_cart",
                                               "purchased"]))


def test_aggregation_and_query_split():
    events = pd.DataFrame({"query": ["a", "a", "a", "b"], "product_id": ["x", "x", "y", "x"],
                           "impressed": True, "clicked": [True, False, True, False],
                           "added_to_cart": [True, False, False, False], "purchased": [True, False, False, False]})
    agg = aggregate_events(events).set_index(["query", "product_id"])
    assert agg.loc[("a", "x")].tolist() == [2, 1, 1, 1] and agg.loc[("a", "y")].tolist() == [1, 1, 0, 0]
    many = pd.DataFrame({"query": [f"query {i}" for i in range(300)], "product_id": "x", "impressions": 1,
                         **{c: 0 for c in COUNT_COLUMNS.values()}})
    train = training_pairs(many, RankerSettings(), max_queries=50)
    test = training_pairs(many, RankerSettings(), split="test")
    assert train["query"].nunique() == 50 and not set(train["query"]) & set(test["query"])


def test_only_the_top_layers_train(tiny_backbone):
    settings = RankerSettings(backbone=tiny_backbone, batch_size=16, bf16=False, train_layers=1)
    model = MultiTaskRanker.from_backbone(settings)
    frozen = [p.detach().clone() for p in (*model.encoder.embeddings.parameters(),
                                           *model.encoder.encoder.layer[0].parameters())]
    top = [p.detach().clone() for p in model.encoder.encoder.layer[1].parameters()]
    info = fit(model, pairs_frame(), settings, max_steps=2)
    assert info["trainable_layers"] == 1
    assert all(torch.equal(a, b) for a, b in zip(frozen, (*model.encoder.embeddings.parameters(),
                                                        *model.encoder.encoder.layer[0].parameters())))
    assert any(not torch.equal(a, b) for a, b in zip(top, model.encoder.encoder.layer[1].parameters()))


def test_heads_reading_the_similarity_start_at_its_logistic_fit_and_keep_it_when_saved(tiny_backbone, tmp_path):
    pairs = pairs_frame()
    relevant = pairs["query"].str.split().str[0] == pairs["text"].str.split().str[0]
    pairs["similarity"] = np.where(relevant, 0.8, 0.2)
    settings = RankerSettings(backbone=tiny_backbone, batch_size=16, bf16=False, chain=True, lexical_features=False)
    model = MultiTaskRanker.from_backbone(settings, similarity_encoder="tiny-encoder-1234")
    info = fit(model, pairs, settings, max_steps=1)
    for task, start in info["head_start"].items():
        assert set(start) == {"intercept", "similarity"}
        assert start["similarity"] > 1.0, f"the {task} head did not start from the similarity: {info['head_start']}"
    queries, texts = ["sony speaker"] * 2, ["sony speaker black", "canon speaker"]
    with pytest.raises(InputError, match="retrieval similarity"):
        model.score(queries, texts)
    frame = model.score(queries, texts, [0.8, 0.2])
    assert (frame["p_click"].iloc[0] > frame["p_click"].iloc[1]) and (frame["p_purchase"] <= frame["p_cart"]).all()
    loaded = MultiTaskRanker.load(model.save(tmp_path / "multi_task_chain-v1"), device="cpu")
    assert loaded.card.similarity_encoder == "tiny-encoder-1234"
    assert np.allclose(loaded.score(queries, texts, [0.8, 0.2])["p_purchase"], frame["p_purchase"], atol=1e-6)


def test_coverage_counts_the_query_words_and_trigrams_a_listing_has():
    from epm_spark.models.search.coverage import query_coverage

    c = query_coverage(["sony speaker", "sony speaker", "sonny speaker", "", "sony speaker"],
                       ["SONY Speaker, black", "canon camera", "sony speaker", "sony", ""])
    assert c.shape == (5, 2) and c.dtype == np.float32
    assert c[0].tolist() == [1.0, 1.0] and c[1].tolist() == [0.0, 0.0]
    # a typo loses the word but keeps most of its trigrams
    assert c[2, 0] == 0.5 and 0.7 < c[2, 1] < 1.0
    assert c[3].tolist() == [0.0, 0.0] and c[4].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="2 queries for 1 texts"):
        query_coverage(["a", "b"], ["a"])


def test_heads_reading_the_coverage_start_at_its_logistic_fit_and_keep_it_when_saved(tiny_backbone, tmp_path):
    import json

    settings = RankerSettings(backbone=tiny_backbone, batch_size=16, bf16=False, similarity_feature=False)
    model = MultiTaskRanker.from_backbone(settings)
    assert model.card.lexical == ["word_coverage", "trigram_coverage"]
    info = fit(model, pairs_frame(), settings, max_steps=1)
    for task, start in info["head_start"].items():
        # the query's brand is the one word that tells relevant listings apart: coverage must count
        assert start["word_coverage"] + start["trigram_coverage"] > 1.0, info["head_start"]
    assert model.lexical_weights["click"].shape == (2,)
    queries, texts = ["sony speaker"] * 2, ["sony speaker black", "canon speaker"]
    tokens = model.tokenize(queries, texts)
    with pytest.raises(InputError, match="coverage features"):
        model(**tokens)
    frame = model.score(queries, texts)
    folder = model.save(tmp_path / "multi_task-v1")
    loaded = MultiTaskRanker.load(folder, device=str(model.device))
    assert torch.equal(loaded.lexical_weights["purchase"], model.lexical_weights["purchase"])
    assert np.allclose(loaded.score(queries, texts)["p_purchase"], frame["p_purchase"], atol=1e-6)
    card = json.loads((folder / "ranker.json").read_text())
    (folder / "ranker.json").write_text(json.dumps({**card, "lexical": ["bm25"]}))
    with pytest.raises(InputError, match=r"coverage features \['bm25'\]"):
        read_card(folder)


def test_a_killed_training_resumes_from_its_checkpoint_to_the_same_model(tiny_backbone, tmp_path, monkeypatch):
    import epm_spark.models.search.train as train_module

    settings = RankerSettings(backbone=tiny_backbone, batch_size=16, bf16=False, checkpoint_every=4)
    whole = MultiTaskRanker.from_backbone(settings)
    expected = fit(whole, pairs_frame(), settings, max_steps=10)

    real_progress = train_module.progress

    def killed_after_six(steps, **kwargs):
        for step in real_progress(steps, **kwargs):
            if step == 6:
                raise KeyboardInterrupt
            yield step

    checkpoints = tmp_path / "checkpoints"
    monkeypatch.setattr(train_module, "progress", killed_after_six)
    with pytest.raises(KeyboardInterrupt):
        fit(MultiTaskRanker.from_backbone(settings), pairs_frame(), settings, max_steps=10, checkpoints=checkpoints)
    assert torch.load(checkpoints / "state.pt", weights_only=False)["step"] == 4  # the last one before the kill
    monkeypatch.setattr(train_module, "progress", real_progress)

    resumed = MultiTaskRanker.from_backbone(settings)
    info = fit(resumed, pairs_frame(), settings, max_steps=10, checkpoints=checkpoints)
    assert info["resumed_at_step"] == 4 and info["steps"] == expected["steps"] > 6
    assert info["loss_history"] == expected["loss_history"]
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    # Another plan (other settings) does not take this checkpoint: it starts afresh.
    other = RankerSettings(backbone=tiny_backbone, batch_size=8, bf16=False, checkpoint_every=4)
    assert fit(MultiTaskRanker.from_backbone(other), pairs_frame(), other, max_steps=2,
               checkpoints=checkpoints)["resumed_at_step"] is None
