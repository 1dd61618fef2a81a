"""Stage 1 on real data with the real packaged MiniLM: a few steps must not hurt validation retrieval."""

import pytest
from epm_spark.models.encoder.config import ContrastiveSettings, EncoderSettings
from epm_spark.models.encoder.train import EncoderTrainer, EncoderTrainingConfig

pytestmark = [pytest.mark.real_model, pytest.mark.benchmark_data]


@pytest.fixture(scope="module")
def abt_buy(benchmarks_dir):
    from epm_spark.io.benchmarks import load_benchmark

    return load_benchmark(benchmarks_dir / "abt_buy")


def test_few_contrastive_steps_on_abt_buy_keep_valid_recall(abt_buy, tmp_path):
    import pandas as pd

    # A slice of the training pairs: those of the first 150 left listings with a match.
    all_pairs = abt_buy.pairs
    is_train = all_pairs["split"] == "train"
    lefts = sorted(all_pairs.loc[is_train & (all_pairs["label"] == 1), "left_id"].unique())[:150]
    pairs = all_pairs[(all_pairs["split"] == "valid") | (is_train & all_pairs["left_id"].isin(lefts))]
    products = pd.concat([abt_buy.left, abt_buy.right], ignore_index=True)
    settings = EncoderSettings(device="cpu", max_length=48,
                               contrastive=ContrastiveSettings(batch_size=16, hard_negatives=1, mine_top_k=0,
                                                               lr=2e-5, epochs=1, warmup_ratio=0.0))
    config = EncoderTrainingConfig(stage="contrastive", output_dir=str(tmp_path / "abt"), encoder=settings, max_steps=6)
    result = EncoderTrainer(config).train(products, pairs)
    start, trained = result.history[0]["valid"], result.history[1]["valid"]
    assert result.history[1]["steps"] == 6
    assert start["recall@10"] > 0.9, "the packaged MiniLM already retrieves most Abt-Buy matches"
    assert trained["recall@10"] >= start["recall@10"]
    assert trained["mrr"] >= start["mrr"] - 0.01
