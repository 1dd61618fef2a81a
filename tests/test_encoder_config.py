"""The `encoder:` settings section: defaults from conf/local.yaml, overrides, strict validation."""

import pytest

from epm_spark.config import load_settings
from epm_spark.errors import ConfigError


def test_local_yaml_declares_the_encoder_section():
    settings = load_settings()
    assert settings.encoder.backbone == "packaged:minilm"
    assert settings.encoder.contrastive.margin == 0.1 and settings.encoder.roar.margins == [0.0]


def test_nested_overrides_reach_the_stage_sections():
    settings = load_settings(overrides=["encoder.contrastive.epochs=2", "encoder.roar.margins=[1.0, 0.5]",
                                        "encoder.text.description_chars=200"])
    assert settings.encoder.contrastive.epochs == 2
    assert settings.encoder.roar.margins == [1.0, 0.5]
    assert settings.encoder.text.description_chars == 200


@pytest.mark.parametrize("override, message", [
    ("encoder.pooling=max", "must be one of"),
    ("encoder.contrastive.temperature=0", "temperature must be > 0"),
    ("encoder.contrastive.warmup_ratio=1.5", "warmup_ratio"),
    ("encoder.roar.margins=[-1]", "margins"),
    ("encoder.roar.max_matches=0", "max_matches"),
    ("encoder.max_length=0", "max_length"),
    ("encoder.contrastive.bogus=1", "unknown setting 'encoder.contrastive.bogus'"),
])
def test_bad_encoder_settings_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(overrides=[override])
