"""Config loading: every shipped config validates; bad configs are refused with every problem and its key path."""
import json
from pathlib import Path

import pytest

from training.config import load_config
from utils import ConfigError, apply_overrides

CONFIGS = sorted(Path(__file__).resolve().parents[1].glob("configs/**/*.json"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    config = load_config(path)
    expected = path.stem + "_reference" if path.parent.name == "reference" else path.stem  # its own results folder
    assert config["exp_name"] == expected or config["exp_name"].startswith("DEMO_")
    assert config["ssl"]["type"] in path.stem


def test_nine_seed_configs_with_published_values():
    seed = [p for p in CONFIGS if p.name.startswith("DLPROJ_pretrain_") and p.parent.name == "configs"]
    assert len(seed) == 9
    for path in seed:
        c = load_config(path)
        assert (c["trainer"]["batch_size"], c["trainer"]["learning_rate"], c["trainer"]["weight_decay"]) == (128, 1e-3, 1e-4)
        assert c["trainer"]["max_epochs"] == 500 and c["trainer"]["early_stopping_patience"] >= 1
        assert c["ssl"]["params"]["temperature"] == 0.1 and c["ssl"]["params"]["alpha_crl"] == 10
        assert c["data"]["masking_ratio"] == 0.5


def _write(tmp_path, config):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    return path


def _base():
    return json.loads(CONFIGS[0].read_text())


def test_all_problems_reported_at_once_with_paths(tmp_path):
    config = _base()
    config["trainer"]["learning_rate"] = "fast"
    config["trainer"]["batch_sise"] = 64
    config["data"]["masking_ratio"] = 1.5
    config["ssl"]["type"] = "BYOL"
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, config))
    text = str(err.value)
    for expected in ["trainer.learning_rate: expected float", "trainer.batch_sise: unknown key",
                     "data.masking_ratio: 1.5 is above the maximum", "ssl.type: 'BYOL' is not one of"]:
        assert expected in text
    assert len(err.value.problems) == 4


def test_bad_backbone_type_and_param_named(tmp_path):
    config = _base()
    config["backbone"] = {"type": "LSTM", "params": {}}
    with pytest.raises(ConfigError, match=r"backbone.type: 'LSTM' is not one of \['CNN', 'CNN_Attention', 'Transformer'\]"):
        load_config(_write(tmp_path, config))
    config["backbone"] = {"type": "CNN", "params": {"kernel_sise": 3}}
    with pytest.raises(ConfigError, match=r"backbone.params.kernel_sise: unknown key"):
        load_config(_write(tmp_path, config))


def test_token_masking_needs_transformer(tmp_path):
    config = _base()
    config["backbone"] = {"type": "CNN", "params": {}}
    config["data"]["masking"] = "token"
    with pytest.raises(ConfigError, match="data.masking: 'token' masking needs backbone.type 'Transformer'"):
        load_config(_write(tmp_path, config))


def test_overrides_parse_json_values():
    config = apply_overrides({"trainer": {"max_epochs": 500}}, ["trainer.max_epochs=3", "exp_name=x", "trainer.amp=false"])
    assert config == {"trainer": {"max_epochs": 3, "amp": False}, "exp_name": "x"}


def test_yaml_config_loads(tmp_path):
    yaml = pytest.importorskip("yaml")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_base()))
    assert load_config(path)["exp_name"] == _base()["exp_name"]


def test_missing_file_and_unparseable(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(bad)
