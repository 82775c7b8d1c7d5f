"""Every configuration key this model module understands: its default and the values it takes.

Configs are PaddleRec YAML files flattened to dotted keys (``runner.epochs``,
``hyper_parameters.optimizer.global_learning_rate``). Code reads a key through
``get`` so that a key left out of a YAML file falls back to the default here,
including when the upstream PaddleRec trainer drives this module. ``validate``
checks a whole config (every value against its key's rule, the rules between keys,
and that a meta-step can fit in memory) before any work; every entry point calls it.

A key is one line of ``KEYS``: ``"section.name": Key(default, rule)``.
"""
import difflib
import math
import os
import re
from dataclasses import dataclass
from typing import Callable

from metaheac import schema


class ConfigError(ValueError):
    """A config key or value that is not understood; the message names the key."""


@dataclass(frozen=True)
class Rule:
    """The values a key takes: a test, and how a message describes what passes it."""
    accepts: Callable[[object], bool]
    description: str


def _is_int(value):
    return type(value) is int  # bool is an int subclass, and never a count


def integer(minimum, maximum=None):
    below = "" if maximum is None else " and at most %d" % maximum
    return Rule(lambda v: _is_int(v) and v >= minimum and (maximum is None or v <= maximum),
                "an integer of at least %d%s" % (minimum, below))


def one_of(*choices):
    return Rule(lambda v: type(v) in {type(c) for c in choices} and v in choices,
                "one of %s" % ", ".join(map(repr, choices)))


def optional(rule):
    return Rule(lambda v: v is None or rule.accepts(v), rule.description + ", or null")


def list_of(rule, non_empty=False):
    return Rule(lambda v: type(v) is list and (v or not non_empty) and all(map(rule.accepts, v)),
                "a %slist, each item %s" % ("non-empty " if non_empty else "", rule.description))


# hyper_parameters.max_idxs holds the max ids of these fields, group by group.
ID_GROUPS = (schema.STATIC_FIELDS, schema.SEQUENCE_FIELDS, schema.AD_FIELDS)


def _is_max_idxs(value):
    return (type(value) is list and len(value) == len(ID_GROUPS)
            and all(type(ids) is list and len(ids) == len(fields)
                    and all(_is_int(i) and i >= 0 for i in ids)
                    for ids, fields in zip(value, ID_GROUPS)))


def number(above, below=math.inf):
    """A finite number (int or float) strictly between `above` and `below`."""
    def accepts(v):
        finite = _is_int(v) or (type(v) is float and math.isfinite(v))
        return finite and above < v < below
    limits = "above %g" % above + ("" if below == math.inf else " and below %g" % below)
    return Rule(accepts, "a finite number " + limits)


POSITIVE = integer(1)
FLAG = Rule(lambda v: type(v) is bool, "true or false")
TEXT = Rule(lambda v: isinstance(v, str) and v.strip() != "" and v.isprintable(),
            "a non-empty string of printable characters")
MODULE = Rule(lambda v: isinstance(v, str) and re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", v),
              "a Python module name, e.g. reader_train")
STEP_SIZE = number(above=0)
MAX_IDXS = Rule(_is_max_idxs, "[static, sequence, ad]: lists of %d, %d and %d max ids (integers "
                "of at least 0)" % tuple(map(len, ID_GROUPS)))
# Accepted so that PaddleRec configs load, but this module does not do them.
UNSUPPORTED = Rule(lambda v: v is False, "false (not supported by this module)")


@dataclass(frozen=True)
class Key:
    default: object
    rule: Rule


KEYS = {
    # runner: where data and models live, how the run is driven
    "runner.train_data_dir": Key("data/train", TEXT),
    "runner.train_reader_path": Key("reader_train", MODULE),
    "runner.test_data_dir": Key("data/test", TEXT),
    "runner.infer_reader_path": Key("reader_test", MODULE),
    "runner.use_gpu": Key(False, FLAG),
    "runner.use_xpu": Key(False, UNSUPPORTED),
    "runner.use_npu": Key(False, UNSUPPORTED),
    "runner.use_auc": Key(True, FLAG),
    "runner.use_visual": Key(False, FLAG),
    "runner.use_fleet": Key(False, FLAG),
    "runner.use_inference": Key(False, UNSUPPORTED),
    "runner.seed": Key(2021, integer(0, 2 ** 32 - 1)),
    "runner.epochs": Key(1, POSITIVE),
    "runner.last_epoch": Key(-1, integer(-1)),
    "runner.print_interval": Key(10, POSITIVE),
    "runner.model_save_path": Key("output_model_metaheac", TEXT),
    "runner.model_init_path": Key(None, optional(TEXT)),
    "runner.infer_load_path": Key("output_model_metaheac", TEXT),
    "runner.infer_start_epoch": Key(0, integer(0)),
    "runner.infer_end_epoch": Key(1, POSITIVE),
    "runner.infer_train_epoch": Key(2, integer(0)),
    # per-campaign fine-tuning: "fixed" = infer_train_epoch epochs (upstream); "auto" = early
    # stopping on a held-out part of the seed rows (infer.py, metaheac/early_stopping.py)
    "runner.infer_finetune": Key("fixed", one_of("fixed", "auto")),
    "runner.infer_holdout_fraction": Key(0.2, number(0, 1)),
    # fewer held-out positives than this: the campaign falls back to the fixed schedule
    "runner.infer_min_holdout_positives": Key(5, POSITIVE),
    "runner.infer_patience": Key(3, POSITIVE),  # validations without improvement before stopping
    "runner.infer_max_steps": Key(100, POSITIVE),
    "runner.infer_auto_metric": Key("logloss", one_of("logloss", "auc")),
    # true: refit on all seed rows for the chosen number of steps; false: the best weights
    "runner.infer_auto_refit": Key(False, FLAG),
    # several test folders evaluated in one run (e.g. hot and cold); empty: test_data_dir
    "runner.test_data_dirs": Key([], list_of(TEXT)),
    # where infer.py writes its report; None: <infer_load_path>/infer
    "runner.infer_output_dir": Key(None, optional(TEXT)),
    # expand.py: with positive-only seeds, negatives drawn from the pool per positive seed
    "runner.expand_negatives_per_positive": Key(4, POSITIVE),
    # expand.py: pool rows read and scored at once (bounds its memory, whatever the pool size)
    "runner.expand_chunk_rows": Key(65536, POSITIVE),
    # PaddleRec runner keys that this model reads from hyper_parameters.batch_size
    "runner.train_batch_size": Key(None, optional(POSITIVE)),
    # rows per fine-tuning step; None: hyper_parameters.batch_size
    "runner.infer_batch_size": Key(None, optional(POSITIVE)),
    # hyper_parameters: the network and the meta-learning
    "hyper_parameters.max_idxs": Key(schema.DEFAULT_MAX_IDXS, MAX_IDXS),
    "hyper_parameters.embed_dim": Key(64, POSITIVE),
    # upstream lists [64, 64] but applies only the first expert layer: [64] is what it computes
    "hyper_parameters.mlp_dims": Key([64], list_of(POSITIVE, non_empty=True)),
    "hyper_parameters.num_expert": Key(8, POSITIVE),
    "hyper_parameters.num_output": Key(5, POSITIVE),
    "hyper_parameters.task_count": Key(5, POSITIVE),
    "hyper_parameters.batch_size": Key(1024, POSITIVE),
    "hyper_parameters.local_lr": Key(0.0002, STEP_SIZE),
    # meta-learning switches, read in meta_options.py (sample methods: its TASK_WEIGHTS)
    "hyper_parameters.meta_order": Key(1, one_of(0, 1, 2)),
    # bounded: each step is a pass over the support batch, and a typo must not hang a run
    "hyper_parameters.inner_steps": Key(1, integer(1, 1000)),
    # the weights the inner steps move (maml.INNER_PARAMS; a test keeps the two equal)
    "hyper_parameters.inner_params": Key("all", one_of("all", "gates_critics")),
    "hyper_parameters.sample_method": Key("normal", one_of("normal", "sqrt", "unit")),
    "hyper_parameters.sample_replace": Key(True, FLAG),
    # the optimizer is Adam; class and strategy are there for PaddleRec configs
    "hyper_parameters.optimizer.class": Key("adam", one_of("adam", "Adam")),
    "hyper_parameters.optimizer.global_learning_rate": Key(0.001, STEP_SIZE),
    "hyper_parameters.optimizer.local_test_learning_rate": Key(0.001, STEP_SIZE),
    "hyper_parameters.optimizer.strategy": Key("async", TEXT),
}

for _key, _spec in KEYS.items():  # a bare default here would leave the key unchecked
    if not isinstance(_spec, Key):
        raise TypeError("settings.KEYS[%r] must be Key(default, rule), got %r" % (_key, _spec))

DEFAULTS = {key: spec.default for key, spec in KEYS.items()}

# Keys a trainer adds to the config at run time rather than reads from YAML.
RUNTIME_KEYS = ("config_abs_dir",)


@dataclass(frozen=True)
class Between:
    """A rule between keys: `holds(*values)` must be true; `requirement` says what it asks."""
    keys: tuple
    holds: Callable[..., bool]
    requirement: str


BETWEEN = (
    Between(("runner.last_epoch", "runner.epochs"), lambda last, epochs: last + 1 < epochs,
            "last_epoch must be below epochs - 1, as epochs last_epoch+1 .. epochs-1 are trained"),
    Between(("runner.infer_start_epoch", "runner.infer_end_epoch"), lambda start, end: start < end,
            "infer_start_epoch must be below infer_end_epoch, as the checkpoints of epochs "
            "[infer_start_epoch, infer_end_epoch) are evaluated"),
)


def memory_floor_bytes(config):
    """Bytes a meta-step needs at the least, from the network and batch keys: the
    parameters with their gradients and Adam's two moments (16 bytes each), and one
    meta-batch's embedded ids, user vectors and experts' first-layer outputs (float32,
    forward only). A lower bound: a config above it cannot run on a machine with less."""
    embed_dim, user_width, first_width, experts = _network_sizes(config)
    per_row = schema.ID_COLUMNS * embed_dim + user_width + experts * first_width
    rows = 2 * get(config, "hyper_parameters.task_count") * get(config,
                                                               "hyper_parameters.batch_size")
    return 16 * parameter_floor(config) + 4 * rows * per_row


def parameter_floor(config):
    """The network's parameters, at the least: the embedding tables and the experts'
    first layer (most of them; the rest is left out)."""
    embed_dim, user_width, first_width, experts = _network_sizes(config)
    table_rows = sum(max_id + 1 for group in get(config, "hyper_parameters.max_idxs")
                     for max_id in group)
    return table_rows * embed_dim + experts * user_width * first_width


def _network_sizes(config):
    """Embedding width, user vector width, experts' first-layer width, expert count."""
    embed_dim = get(config, "hyper_parameters.embed_dim")
    return (embed_dim, schema.USER_FIELDS * embed_dim, get(config, "hyper_parameters.mlp_dims")[0],
            get(config, "hyper_parameters.num_expert"))


def physical_memory_bytes():
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


# The keys memory_floor_bytes reads, named in its error.
MEMORY_KEYS = tuple("hyper_parameters." + k for k in (
    "max_idxs", "embed_dim", "mlp_dims", "num_expert", "task_count", "batch_size"))


def check_fits_in_memory(config):
    """Raise a ConfigError naming the size keys when a meta-step cannot fit in this
    machine's memory, rather than let the run be killed for want of it."""
    need, have = memory_floor_bytes(config), physical_memory_bytes()
    if need > have:
        named = ", ".join("%s = %r" % (key, get(config, key)) for key in MEMORY_KEYS)
        raise ConfigError("%s: a meta-step needs at least %.1f GB (the parameters with their "
                          "gradients and Adam's moments, and one meta-batch's activations), "
                          "more than this machine's %.1f GB" % (named, need / 1e9, have / 1e9))


def get(config, key):
    if key not in DEFAULTS:
        raise KeyError("unknown config key %r" % key)
    value = config.get(key)
    return DEFAULTS[key] if value is None else value


def checked(config, key):
    """The value of `key` in `config` (or its default), after checking it."""
    value = get(config, key)
    check_value(key, value)
    return value


def check_value(key, value, where=None):
    """Raise a ConfigError naming `key`, `value` and what the key accepts, unless it does."""
    rule = KEYS[key].rule
    if not rule.accepts(value):
        raise ConfigError("%s%s must be %s, got %r"
                          % (where + ": " if where else "", key, rule.description, value))


def check_known(key, where):
    """Raise a ConfigError naming `key` and the nearest known key if it is unknown."""
    if key in DEFAULTS or key in RUNTIME_KEYS:
        return
    nearest = difflib.get_close_matches(key, DEFAULTS, n=1)
    hint = " (did you mean %r?)" % nearest[0] if nearest else ""
    raise ConfigError("%s: unknown config key %r%s" % (where, key, hint))


def validate(config):
    """Check the whole of `config` before any work; returns it, or raises a ConfigError.

    Dotted keys must be known (others are what a trainer adds at run time, such as
    ``config_abs_dir``), every key's value (or default) must pass its rule, and the
    values must make sense together."""
    for key in config:
        if "." in key:
            check_known(key, "config")
    for key in KEYS:
        checked(config, key)
    for rule in BETWEEN:
        values = [get(config, key) for key in rule.keys]
        if not rule.holds(*values):
            named = ", ".join("%s = %r" % pair for pair in zip(rule.keys, values))
            raise ConfigError("%s: %s" % (named, rule.requirement))
    check_fits_in_memory(config)
    return config
