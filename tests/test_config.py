import os

import pytest

from conftest import ROOT
from metaheac import settings
from utils.config import ConfigError, apply_overrides, load_yaml


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "runner:\n  epochs: 1\n  use_gpu: False\n  train_data_dir: data/train\n"
        "hyper_parameters:\n  embed_dim: 16\n  mlp_dims: [64, 64]\n  local_lr: 0.0002\n"
        "  optimizer:\n    global_learning_rate: 0.001\n")
    return load_yaml(str(path))


def test_yaml_is_flattened_to_dotted_keys(config, tmp_path):
    assert config["runner.epochs"] == 1
    assert config["hyper_parameters.optimizer.global_learning_rate"] == 0.001
    assert config["config_abs_dir"] == str(tmp_path)


@pytest.mark.parametrize("override, key, expected", [
    ("runner.epochs=3", "runner.epochs", 3),
    ("runner.use_gpu=true", "runner.use_gpu", True),
    ("runner.use_gpu=False", "runner.use_gpu", False),
    ("hyper_parameters.local_lr=1e-3", "hyper_parameters.local_lr", 0.001),
    ("hyper_parameters.local_lr=1", "hyper_parameters.local_lr", 1.0),
    ("hyper_parameters.mlp_dims=[64,32]", "hyper_parameters.mlp_dims", [64, 32]),
    ("runner.train_data_dir=123", "runner.train_data_dir", "123"),
    ("runner.seed=7", "runner.seed", 7),  # absent from the file: typed by the default
    ("runner.model_init_path=out/3", "runner.model_init_path", "out/3"),
])
def test_overrides_are_typed_like_the_existing_value(config, override, key, expected):
    value = apply_overrides(config, [override])[key]
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("override, message", [
    ("runner.epoch=3", "did you mean 'runner.epochs'"),
    ("runner.epochs=three", "expected a value of type int"),
    ("runner.use_gpu=maybe", "runner.use_gpu must be true or false, got 'maybe'"),
    ("hyper_parameters.mlp_dims=64", "hyper_parameters.mlp_dims must be a non-empty list, each "
                                     "item an integer of at least 1, got 64"),
    ("runner.epochs", "expected key=value"),
])
def test_bad_overrides_name_the_key(config, override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        apply_overrides(config, [override])


def test_unknown_yaml_key_is_rejected_with_a_suggestion(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("runner:\n  print_intervall: 3\n")
    with pytest.raises(ConfigError, match="runner.print_intervall.*runner.print_interval"):
        load_yaml(str(path))


def test_defaults_fill_keys_left_out(config):
    assert settings.get(config, "hyper_parameters.task_count") == 5
    assert settings.get(config, "hyper_parameters.embed_dim") == 16


def test_yaml_values_of_the_wrong_type_are_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("hyper_parameters:\n  batch_size: lots\n")
    with pytest.raises(ConfigError, match="c.yaml: hyper_parameters.batch_size must be an integer of at least 1, got 'lots'"):
        load_yaml(str(path))


def test_every_key_is_documented_in_the_readme():
    # A key's full name, or the last part of a hyper-parameter, in the key tables.
    with open(os.path.join(ROOT, "readme.md")) as f:
        text = f.read()
    tables = text[text.index("## Configuration keys"):text.index("## Fine-tuning fitted")]
    missing = [key for key in settings.KEYS
               if "`%s`" % key not in tables and "`%s`" % key.split(".")[-1] not in tables]
    assert not missing, missing
