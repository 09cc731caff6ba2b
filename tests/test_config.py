"""Configs: every YAML validates; typos and wrong types name the key and the closest one."""

from pathlib import Path

import pytest

from scaled_ql.config import ConfigError, ExperimentConfig, load_config, load_config_json

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_file_validates(path):
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.train.batch_size % len(cfg.games) == 0


def test_overrides_apply_with_yaml_types():
    cfg = load_config(CONFIGS[0].parent / "debug.yaml", ["train.steps=7", "loss.cql_alpha=0.5", "games=[Pong, Breakout]", "train.lr=3e-4"])
    assert cfg.train.steps == 7 and cfg.loss.cql_alpha == 0.5 and cfg.games == ["Pong", "Breakout"]
    assert cfg.train.lr == pytest.approx(3e-4)


def test_unknown_key_names_key_and_closest():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.setps'.*did you mean 'steps'"):
        load_config(None, ["train.setps=10"])
    with pytest.raises(ConfigError, match=r"unknown config key 'modle'.*did you mean 'model'"):
        load_config(None, ["modle.backbone=nature"])


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match=r"train.steps.*expected int.*'many'"):
        load_config(None, ["train.steps=many"])
    with pytest.raises(ConfigError, match=r"model.feature_norm.*true or false"):
        load_config(None, ["model.feature_norm=3"])


def test_invalid_values_and_unknown_game():
    with pytest.raises(ConfigError, match=r"data.gamma"):
        load_config(None, ["data.gamma=1.5"])
    with pytest.raises(ConfigError, match=r"train.batch_size.*multiple of the number of games"):
        load_config(None, ["games=[Pong, Breakout, Boxing]", "train.batch_size=32"])
    with pytest.raises(ConfigError, match=r"'games'.*Pongg.*Pong"):
        load_config(None, ["games=[Pongg]", "train.batch_size=32"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml.*not valid YAML"):
        load_config(bad)


def test_json_round_trip(tmp_path):
    cfg = load_config(CONFIGS[0], ["train.steps=3"])
    path = tmp_path / "config.json"
    path.write_text(cfg.to_json())
    assert load_config_json(path) == cfg


def test_slots_reject_attribute_typos():
    cfg = ExperimentConfig()
    with pytest.raises(AttributeError):
        cfg.train.setps = 3
