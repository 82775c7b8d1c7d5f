"""PaddleRec-style configs: a YAML file flattened to dotted keys, plus ``-o key=value``."""
import os

import yaml

from metaheac import settings
from metaheac.settings import ConfigError


def flatten(tree, prefix=""):
    flat = {}
    for key, value in tree.items():
        dotted = prefix + str(key)
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def load_yaml(path):
    """The config at `path` as a dict of dotted keys; unknown keys are an error."""
    if not os.path.isfile(path):
        raise ConfigError("config file %s does not exist" % path)
    with open(path) as f:
        try:
            tree = yaml.safe_load(f) or {}
        except yaml.YAMLError as error:
            raise ConfigError("%s is not valid YAML: %s" % (path, error)) from None
    if not isinstance(tree, dict):
        raise ConfigError("%s must be a mapping with runner: and hyper_parameters:" % path)
    config = flatten(tree)
    for key, value in config.items():
        settings.check_known(key, path)
        settings.check_type(key, value, path)
    config["config_abs_dir"] = os.path.dirname(os.path.abspath(path))
    return config


def apply_overrides(config, overrides):
    """Apply ``key=value`` strings; each value is typed like the key's current value."""
    for item in overrides or ():
        key, sep, text = item.strip().partition("=")
        if not sep or not key:
            raise ConfigError("-o %r: expected key=value, e.g. runner.epochs=2" % item)
        settings.check_known(key, "-o %s" % item)
        current = settings.get(config, key)
        config[key] = _typed(key, text, current)
    return config


def _typed(key, text, current):
    """`text` parsed as YAML, or as the type of `current` when that is a number or string."""
    if isinstance(current, str):
        return text
    try:
        value = type(current)(text) if type(current) in (int, float) else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError):
        raise ConfigError("-o %s=%s: expected a value of type %s like %r"
                          % (key, text, type(current).__name__, current)) from None
    settings.check_type(key, value, "-o %s=%s" % (key, text))
    return value
