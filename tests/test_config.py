import json
from pathlib import Path

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


# ------------------------------------------------------------------ base: inheritance (issue 10)
ROOT = Path(__file__).resolve().parents[1]


def test_every_config_resolves_to_what_it_was_before_base_inheritance():
    """tests/fixtures/resolved_configs.json holds every config file resolved before the ablations
    were rewritten with ``base:``; the resolved configs must not move. (configs/experiments/
    holds experiment grids, not model configs.)"""
    before = json.loads((ROOT / "tests" / "fixtures" / "resolved_configs.json").read_text())
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").rglob("*.yaml")
                   if p.parent.name != "experiments")
    assert files == sorted(before)
    for name in files:
        assert load_config(ROOT / name).to_dict() == before[name], name


# the ablations of paper.yaml derive from it; the U-ConvBlock pair (issue 9) from default.yaml
ABLATION_BASES = {"uconv.yaml": "../default.yaml", "convtasnet-uconv.yaml": "uconv.yaml"}


def test_ablations_state_only_what_differs():
    for path in (ROOT / "configs" / "ablations").glob("*.yaml"):
        text = path.read_text()
        base = ABLATION_BASES.get(path.name, "../paper.yaml")
        assert f"\nbase: {base}\n" in text and len(text.splitlines()) <= 10, path.name


def test_base_merges_sections_and_own_keys_win(tmp_path):
    (tmp_path / "a.yaml").write_text("model:\n  n_sources: 3\n  hidden: 16\ntrain:\n  steps: 7\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yaml").write_text("base: ../a.yaml\nmodel:\n  hidden: 8\n")
    cfg = load_config(tmp_path / "sub" / "b.yaml", ["train.lr=0.5"])
    assert (cfg.model.n_sources, cfg.model.hidden, cfg.train.steps, cfg.train.lr) == (3, 8, 7, 0.5)


@pytest.mark.parametrize("files,match", [
    ({"a.yaml": "base: b.yaml\n", "b.yaml": "base: a.yaml\n"}, "loop"),
    ({"a.yaml": "base: a.yaml\n"}, "loop"),
    ({"a.yaml": "base: missing.yaml\n"}, "cannot read"),
    ({"a.yaml": "base: [x]\n"}, "file name"),
    ({"a.yaml": "base: b.yaml\n", "b.yaml": "model:\n  nope: 1\n"}, "model.nope"),
])
def test_bad_base_is_a_clear_error(tmp_path, files, match):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(tmp_path / "a.yaml")


def test_print_config_shows_the_resolved_result(capsys):
    import yaml

    from lvbd.cli import main

    assert main(["train", "--config", str(ROOT / "configs" / "ablations" / "upit.yaml"),
                 "--set", "train.steps=3", "--print-config"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    expected = load_config(ROOT / "configs" / "ablations" / "upit.yaml", ["train.steps=3"]).to_dict()
    assert shown == expected and shown["loss"]["pit"] == "upit" and shown["model"]["n_filters"] == 256
