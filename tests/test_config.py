import pytest

from epm_spark.cli import main
from epm_spark.config import ConfigError, Settings, load_settings


def test_defaults_load_from_the_embedded_conf():
    s = load_settings()
    assert isinstance(s, Settings)
    assert s.spark.master == "local[*]"
    assert s.warehouse == "warehouse"


def test_overrides_are_typed_from_their_text():
    s = load_settings(overrides=["spark.shuffle_partitions=3", "ingest.max_quarantine_share=0.25",
                                 "spark.ui_enabled=false", "spark.conf.spark.foo=bar"])
    assert s.spark.shuffle_partitions == 3
    assert s.ingest.max_quarantine_share == 0.25
    assert s.spark.ui_enabled is False
    assert s.spark.conf == {"spark.foo": "bar"}
    assert load_settings(overrides=["encoder.contrastive.lr=2e-5"]).encoder.contrastive.lr == 2e-5


def test_unknown_key_is_an_error_that_names_it():
    with pytest.raises(ConfigError, match=r"unknown setting 'spark\.shufle_partitions'"):
        load_settings(overrides=["spark.shufle_partitions=3"])
    with pytest.raises(ConfigError, match=r"unknown setting 'nosuchsection'"):
        load_settings(overrides=["nosuchsection.x=1"])


def test_wrong_type_and_range_name_the_key():
    with pytest.raises(ConfigError, match=r"spark\.shuffle_partitions' expects an integer"):
        load_settings(overrides=["spark.shuffle_partitions=many"])
    with pytest.raises(ConfigError, match=r"spark: shuffle_partitions must be > 0"):
        load_settings(overrides=["spark.shuffle_partitions=0"])
    with pytest.raises(ConfigError, match=r"delta\.engine' must be one of"):
        load_settings(overrides=["delta.engine=fast"])


@pytest.mark.parametrize("override", [
    "price_match.min_probability=7", "dedup.min_probability=-0.1", "match.threshold=1.5",
    "match.uncertainty_margin=2", "review.uncertainty_margin=-1", "ingest.max_quarantine_share=1.01",
    "generate.overlap=3",
])
def test_probabilities_and_shares_must_lie_between_0_and_1(override):
    key, value = override.split("=")
    section, name = key.split(".")
    with pytest.raises(ConfigError, match=rf"{section}: {name} must be between 0 and 1, got {float(value)!r}"):
        load_settings(overrides=[override])
    assert getattr(getattr(load_settings(overrides=[f"{key}=0.5"]), section), name) == 0.5


def test_conf_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("spark:\n  master: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("ingest:\n  max_title_char: 10\n")
    with pytest.raises(ConfigError, match=r"ingest\.max_title_char"):
        load_settings(typo)


def test_warehouse_precedence(monkeypatch, tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("warehouse: from_file\n")
    assert load_settings(conf).warehouse == "from_file"
    monkeypatch.setenv("EPM_WAREHOUSE", "from_env")
    assert load_settings(conf).warehouse == "from_env"
    assert load_settings(conf, warehouse="from_flag").warehouse == "from_flag"
    assert load_settings(conf, ["warehouse=from_set"]).warehouse == "from_set"
    assert load_settings(conf, ["warehouse=same"], warehouse="same").warehouse == "same"
    with pytest.raises(ConfigError, match="--warehouse a and --set warehouse=b disagree"):
        load_settings(conf, ["warehouse=b"], warehouse="a")


def test_set_warehouse_beats_the_environment_on_the_command_line(monkeypatch, tmp_path, capsys):
    import json

    import pandas as pd

    from epm_spark.io.delta import write_pandas

    env_wh, set_wh = tmp_path / "from_env", tmp_path / "from_set"
    write_pandas(str(env_wh), "labelled_pairs", pd.DataFrame(
        {"benchmark": ["b"], "left_id": ["1"], "right_id": ["2"], "left_source": ["l"], "right_source": ["r"],
         "label": [1], "split": ["train"], "left_cluster_id": [None], "right_cluster_id": [None],
         "is_hard_negative": [None]}), mode="overwrite")
    set_wh.mkdir()  # an empty warehouse
    monkeypatch.setenv("EPM_WAREHOUSE", str(env_wh))
    assert main(["tables", "--json"]) == 0
    assert [t["table"] for t in json.loads(capsys.readouterr().out)] == ["labelled_pairs"]
    assert main(["--set", f"warehouse={set_wh}", "tables", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_cli_reports_a_bad_setting_in_one_line(capsys):
    assert main(["--set", "block.kk=3", "tables"]) == 2
    err = capsys.readouterr().err
    assert "unknown setting 'block" in err
    assert "Traceback" not in err
