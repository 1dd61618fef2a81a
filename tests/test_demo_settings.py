"""The demo matcher's training settings (epm_spark/demo.py)."""

from epm_spark.config import load_settings
from epm_spark.demo import demo_training_settings


def test_the_demo_matcher_trains_on_its_own_warehouse_without_known_matches(tmp_path):
    settings = load_settings()
    assert settings.matcher.cascade.known_matches  # the recipe's default
    local = demo_training_settings(settings, tmp_path)
    # Its training catalog reuses the night's sources and ids for other products.
    assert local.matcher.cascade.known_matches is False
    assert local.warehouse == str(tmp_path / "warehouse") and local.matcher.models_dir == str(tmp_path)
    d = settings.demo
    assert local.matcher.cascade.cross_encoder.epochs == d.cross_encoder_epochs
    assert local.matcher.sft.max_steps == d.sft_steps and local.matcher.cascade.label_examples == d.sft_examples
    # The night's own settings are untouched.
    assert settings.matcher.cascade.known_matches and settings.warehouse != local.warehouse
