"""Every configuration key this model module understands, with its default.

Configs are PaddleRec YAML files flattened to dotted keys (``runner.epochs``,
``hyper_parameters.optimizer.global_learning_rate``). Code reads a key through
``get`` so that a key left out of a YAML file falls back to the default here,
including when the upstream PaddleRec trainer drives this module.
"""
import difflib

from metaheac import schema

DEFAULTS = {
    # runner: where data and models live, how the run is driven
    "runner.train_data_dir": "data/train",
    "runner.train_reader_path": "reader_train",
    "runner.test_data_dir": "data/test",
    "runner.infer_reader_path": "reader_test",
    "runner.use_gpu": False,
    "runner.use_xpu": False,
    "runner.use_npu": False,
    "runner.use_auc": True,
    "runner.use_visual": False,
    "runner.use_fleet": False,
    "runner.use_inference": False,
    "runner.seed": 2021,
    "runner.epochs": 1,
    "runner.last_epoch": -1,
    "runner.print_interval": 10,
    "runner.model_save_path": "output_model_metaheac",
    "runner.model_init_path": None,
    "runner.infer_load_path": "output_model_metaheac",
    "runner.infer_start_epoch": 0,
    "runner.infer_end_epoch": 1,
    "runner.infer_train_epoch": 2,
    # several test folders evaluated in one run (e.g. hot and cold); empty: test_data_dir
    "runner.test_data_dirs": [],
    # where infer.py writes its report; None: <infer_load_path>/infer
    "runner.infer_output_dir": None,
    # PaddleRec runner keys that this model reads from hyper_parameters.batch_size
    "runner.train_batch_size": None,
    "runner.infer_batch_size": None,
    # hyper_parameters: the network and the meta-learning
    "hyper_parameters.max_idxs": schema.DEFAULT_MAX_IDXS,
    "hyper_parameters.embed_dim": 64,
    "hyper_parameters.mlp_dims": [64, 64],
    "hyper_parameters.num_expert": 8,
    "hyper_parameters.num_output": 5,
    "hyper_parameters.task_count": 5,
    "hyper_parameters.batch_size": 1024,
    "hyper_parameters.local_lr": 0.0002,
    # meta-learning switches, checked in meta_options.py
    "hyper_parameters.meta_order": 1,
    "hyper_parameters.inner_steps": 1,
    "hyper_parameters.sample_method": "normal",
    "hyper_parameters.sample_replace": True,
    "hyper_parameters.optimizer.class": "adam",
    "hyper_parameters.optimizer.global_learning_rate": 0.001,
    "hyper_parameters.optimizer.local_test_learning_rate": 0.001,
    "hyper_parameters.optimizer.strategy": "async",
}

# Keys a trainer adds to the config at run time rather than reads from YAML.
RUNTIME_KEYS = ("config_abs_dir",)


class ConfigError(ValueError):
    """A config key or value that is not understood; the message names the key."""


def get(config, key):
    if key not in DEFAULTS:
        raise KeyError("unknown config key %r" % key)
    value = config.get(key)
    return DEFAULTS[key] if value is None else value


def check_type(key, value, where):
    """Raise a ConfigError if `value` is not of the type of the key's default."""
    default = DEFAULTS.get(key)
    if default is None or value is None:
        return
    expected = type(default)
    if expected is float and type(value) is int:
        return
    if type(value) is not expected:
        raise ConfigError("%s: %s must be of type %s (like %r), got %r"
                          % (where, key, expected.__name__, default, value))


def check_known(key, where):
    """Raise a ConfigError naming `key` and the nearest known key if it is unknown."""
    if key in DEFAULTS or key in RUNTIME_KEYS:
        return
    nearest = difflib.get_close_matches(key, DEFAULTS, n=1)
    hint = " (did you mean %r?)" % nearest[0] if nearest else ""
    raise ConfigError("%s: unknown config key %r%s" % (where, key, hint))
