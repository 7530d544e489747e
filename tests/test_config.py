import pytest

from lvbd.config import Config, ConfigError, config_from_dict, load_config


def test_defaults_round_trip():
    cfg = Config()
    assert config_from_dict(cfg.to_dict()) == cfg


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  n_sources: 3\ntrain:\n  lr: 0.0005\n")
    cfg = load_config(path, ["model.demixer=iss", "train.steps=7", "data.engines=[a, b]",
                             "loss.kl=1"])
    assert cfg.model.n_sources == 3 and cfg.train.lr == 5e-4
    assert cfg.model.demixer == "iss" and cfg.train.steps == 7
    assert cfg.data.engines == ["a", "b"] and cfg.loss.kl == 1.0


@pytest.mark.parametrize("text,key", [
    ("model:\n  n_source: 3\n", "model.n_source"),
    ("modle: {}\n", "modle"),
    ("model:\n  n_sources: two\n", "model.n_sources"),
    ("train:\n  lr: [1]\n", "train.lr"),
    ("model:\n  variational: 1\n", "model.variational"),
])
def test_unknown_keys_and_wrong_types_are_named(tmp_path, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(path)


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("model: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_bad_override():
    with pytest.raises(ConfigError):
        load_config(None, ["steps=3"])
    with pytest.raises(ConfigError, match="train.nope"):
        load_config(None, ["train.nope=3"])
