"""Every config value is checked before any work, with a one-line error naming the key."""
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings as hypothesis_settings, strategies as st

from conftest import ROOT, SMALL_MAX_IDXS, frame, write_frame
from dygraph_model import DygraphModel
import maml
from metaheac import meta_options, schema, settings
from metaheac.data_files import DataError
from utils.config import ConfigError, load_config, load_yaml
from utils.divergence import LossWatch, TrainingDiverged
from utils.save_load import CheckpointError, load_model
from utils.utils_single import create_data_loader

SAMPLE = os.path.join(ROOT, "config.yaml")

# The rows of the issue that asked for these checks: each was a traceback or a silent no-op.
ISSUE_ROWS = [
    ("hyper_parameters.batch_size=0", "hyper_parameters.batch_size must be an integer of at "
                                      "least 1, got 0"),
    ("hyper_parameters.mlp_dims=[]", "hyper_parameters.mlp_dims must be a non-empty list, each "
                                     "item an integer of at least 1, got []"),
    ("hyper_parameters.task_count=0", "hyper_parameters.task_count must be an integer of at "
                                      "least 1, got 0"),
    ("hyper_parameters.embed_dim=-1", "hyper_parameters.embed_dim must be an integer of at "
                                      "least 1, got -1"),
    ("hyper_parameters.num_expert=0", "hyper_parameters.num_expert must be an integer of at "
                                      "least 1, got 0"),
    ("hyper_parameters.optimizer.global_learning_rate=nan",
     "hyper_parameters.optimizer.global_learning_rate must be a finite number above 0, got nan"),
    ("hyper_parameters.max_idxs=[[1],[2],[3]]", "hyper_parameters.max_idxs must be "
     "[static, sequence, ad]: lists of 7, 7 and 6 max ids (integers of at least 0), "
     "got [[1], [2], [3]]"),
    ("runner.epochs=-1", "runner.epochs must be an integer of at least 1, got -1"),
]


def test_every_key_declares_its_values_and_its_default_passes():
    assert set(settings.KEYS) == set(settings.DEFAULTS)
    for key, spec in settings.KEYS.items():
        assert isinstance(spec, settings.Key) and isinstance(spec.rule, settings.Rule), key
        assert settings.DEFAULTS[key] == spec.default
    settings.validate({})
    for name in ("config.yaml", "config_big.yaml"):
        settings.validate(load_yaml(os.path.join(ROOT, name)))


def test_the_inner_params_choices_are_those_maml_can_adapt():
    rule = settings.KEYS["hyper_parameters.inner_params"].rule
    assert rule.description == "one of %s" % ", ".join(map(repr, maml.INNER_PARAMS))


def test_the_sample_methods_are_those_meta_options_can_weigh():
    rule = settings.KEYS["hyper_parameters.sample_method"].rule
    assert all(rule.accepts(name) for name in meta_options.TASK_WEIGHTS)
    assert rule.description == "one of %s" % ", ".join(map(repr, meta_options.TASK_WEIGHTS))


@pytest.mark.parametrize("override, message", ISSUE_ROWS)
def test_each_row_of_the_issue_is_a_one_line_error(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(SAMPLE, [override])
    assert str(error.value) == "-o %s: %s" % (override, message)
    # The same config as upstream's trainer hands it over: checked before the network is built.
    key, _, text = override.partition("=")
    upstream_config = dict(load_yaml(SAMPLE), **{key: yaml.safe_load(text)})
    with pytest.raises(ConfigError, match="^%s must be" % key):
        DygraphModel().create_model(upstream_config)


@pytest.mark.parametrize("key, good, bad", [
    ("hyper_parameters.max_idxs", [SMALL_MAX_IDXS, schema.DEFAULT_MAX_IDXS],
     [[[4] * 7, [30] * 7], [[4] * 7, [30] * 7, [3] * 5], [[4] * 7, [30] * 7, [3] * 5 + [-1]],
      [[4] * 7, [30] * 7, [3] * 5 + [True]], [[4] * 7, [30] * 7, [3] * 5 + [1.0]], "[]"]),
    ("hyper_parameters.mlp_dims", [[1], [64, 64], [3, 2, 1]], [[], [0], [8, -1], [True], [2.0], 8]),
    ("hyper_parameters.optimizer.global_learning_rate", [1e-6, 1, 1e30, 10 ** 400],
     [0, -0.1, float("nan"), float("inf"), True, "0.1"]),
    ("hyper_parameters.local_lr", [0.0002], [0.0, float("-inf")]),
    ("hyper_parameters.meta_order", [0, 1, 2], [3, -1, True, 1.0, "1"]),
    ("hyper_parameters.sample_method", ["normal", "sqrt", "unit"], ["Normal", "", 1]),
    ("hyper_parameters.optimizer.class", ["adam", "Adam"], ["sgd"]),
    ("runner.seed", [0, 2021, 2 ** 32 - 1], [-1, 2 ** 32, 1.5]),
    ("runner.last_epoch", [-1, 0, 7], [-2]),
    ("runner.infer_train_epoch", [0, 2], [-1]),
    ("runner.print_interval", [1, 100], [0, -5]),
    ("runner.use_gpu", [True, False], [0, "yes", None]),
    ("runner.use_xpu", [False], [True]),
    ("runner.model_init_path", [None, "out/3"], ["", "  ", 3, "a\x00b"]),
    ("runner.train_data_dir", ["data/train", "123"], ["", None, ["data/train"]]),
    ("runner.test_data_dirs", [[], ["data/test", "data/test_cold"]], [[""], "data/test", [1]]),
    ("runner.train_reader_path", ["reader_train", "pkg.reader"], ["reader/train", "1reader", ""]),
    ("runner.infer_batch_size", [None, 1], [0]),
])
def test_values_are_checked_against_the_keys_rule(key, good, bad):
    for value in good:
        settings.check_value(key, value)
    for value in bad:
        with pytest.raises(ConfigError) as error:
            settings.check_value(key, value)
        assert str(error.value) == "%s must be %s, got %r" % (
            key, settings.KEYS[key].rule.description, value)


@pytest.mark.parametrize("overrides, message", [
    (["runner.epochs=3", "runner.last_epoch=2"],
     "runner.last_epoch = 2, runner.epochs = 3: last_epoch must be below epochs - 1"),
    (["runner.epochs=2", "runner.last_epoch=5"], "runner.last_epoch = 5, runner.epochs = 2"),
    (["runner.infer_start_epoch=1", "runner.infer_end_epoch=1"],
     "runner.infer_start_epoch = 1, runner.infer_end_epoch = 1: infer_start_epoch must be below "
     "infer_end_epoch"),
])
def test_values_that_make_no_sense_together_are_errors(overrides, message):
    with pytest.raises(ConfigError, match="^" + message):
        load_config(SAMPLE, overrides)
    load_config(SAMPLE, ["runner.epochs=3", "runner.last_epoch=1", "runner.infer_start_epoch=1",
                         "runner.infer_end_epoch=2"])


@pytest.mark.parametrize("override", ["hyper_parameters.batch_size=%d" % 2 ** 36,
                                      "hyper_parameters.task_count=%d" % 2 ** 36,
                                      "hyper_parameters.embed_dim=%d" % 2 ** 30,
                                      "hyper_parameters.num_expert=%d" % 2 ** 40])
def test_a_config_that_cannot_fit_in_memory_is_an_error_naming_the_sizes(override):
    key, value = override.split("=")
    with pytest.raises(ConfigError) as error:
        load_config(SAMPLE, [override])
    message = str(error.value)
    assert "%s = %s" % (key, value) in message and "more than this machine's" in message
    assert all(size_key + " = " in message for size_key in settings.MEMORY_KEYS), message


def test_the_memory_floor_is_below_what_the_network_holds():
    """parameter_floor counts the tables and the experts' first layer: at most the built
    network's parameters, and nearly all of them; the default config fits here."""
    for overrides in ([], ["hyper_parameters.mlp_dims=[32, 16]", "hyper_parameters.embed_dim=8"]):
        config = load_config(SAMPLE, overrides)
        held = sum(int(p.size) for p in DygraphModel().create_model(config).parameters())
        assert 0.95 * held <= settings.parameter_floor(config) <= held
        assert settings.memory_floor_bytes(config) < settings.physical_memory_bytes()


def test_unknown_keys_and_empty_values_are_errors():
    with pytest.raises(ConfigError, match="config: unknown config key 'runner.epoch'"):
        settings.validate({"runner.epoch": 2})
    settings.validate({"config_abs_dir": "/x", "profiler_options": None})  # a trainer's own
    with pytest.raises(ConfigError, match="^-o runner.epochs=null: expected a value of type int"):
        load_config(SAMPLE, ["runner.epochs=null"])
    with pytest.raises(ConfigError, match="^-o hyper_parameters.mlp_dims=null: "
                                          "hyper_parameters.mlp_dims must be .*, got None$"):
        load_config(SAMPLE, ["hyper_parameters.mlp_dims=null"])


def test_an_override_with_a_line_break_gives_one_line():
    with pytest.raises(ConfigError) as error:
        load_config(SAMPLE, ["runner.seed=1\n2"])
    assert "\n" not in str(error.value) and "runner.seed" in str(error.value)


def test_bad_values_in_a_yaml_file_name_the_file_on_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("runner:\n  epochs: [1,\n")
    with pytest.raises(ConfigError, match="c.yaml is not valid YAML: [^\n]*$"):
        load_config(str(path))
    path.write_text("hyper_parameters:\n  local_lr: .inf\n")
    with pytest.raises(ConfigError, match="c.yaml: hyper_parameters.local_lr must be a finite "
                                          "number above 0, got inf$"):
        load_config(str(path))


def override_texts(largest):
    """Override texts: numbers of all kinds, YAML scalars, lists, nested lists, free text;
    integers up to `largest` (and some far beyond, which no size key should accept)."""
    return st.one_of(
        st.integers(-3, largest).map(str),
        st.integers(-2 ** 40, 2 ** 40).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.sampled_from(["true", "false", "null", "~", "", "[]", "{}", "{a: 1}", "[a, b]", "'3'",
                         "[[1],[2],[3]]", repr(schema.DEFAULT_MAX_IDXS), repr(SMALL_MAX_IDXS),
                         "normal", "sqrt", "unit", "adam", "reader_train", "data/train"]),
        st.lists(st.integers(-2, largest), max_size=4).map(str),
        st.lists(st.lists(st.integers(-1, 40), min_size=5, max_size=8), max_size=4).map(str),
        st.text(max_size=12),
    )


KEYS = st.sampled_from(sorted(settings.DEFAULTS))
# Texts most keys take, so that many drawn configs get as far as training.
LIKELY_TEXTS = st.sampled_from(["0", "1", "2", "3", "true", "false", "null", "0.001", "1e30",
                                "[4]", "[8, 2]", "sqrt", "unit", "Adam", "reader_train",
                                repr(SMALL_MAX_IDXS)])


@hypothesis_settings(max_examples=400, deadline=None)
@given(key=KEYS, text=override_texts(70))
def test_any_override_is_taken_or_a_one_line_error_naming_the_key(key, text):
    override = "%s=%s" % (key, text)
    try:
        config = load_config(SAMPLE, [override])
    except ConfigError as error:
        assert "\n" not in str(error) and key in str(error), str(error)
        return
    value = config[key]
    assert settings.get(config, key) == value or value is None  # taken, not dropped
    settings.check_value(key, settings.get(config, key))
    # Never a silent no-op: the trainer trains an epoch, infer evaluates a checkpoint.
    run = lambda name: settings.get(config, "runner." + name)  # noqa: E731
    assert run("last_epoch") + 1 < run("epochs")
    assert run("infer_start_epoch") < run("infer_end_epoch")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A sample config on a small generated training file with small vocabularies."""
    folder = tmp_path_factory.mktemp("small")
    df = frame(np.random.default_rng(3), rows=120, aids=4)
    for fields, max_ids in zip(settings.ID_GROUPS, SMALL_MAX_IDXS):
        for field, max_id in zip(fields, max_ids):
            df[field.name] = [ids % (max_id + 1) for ids in df[field.name]]
    write_frame(df, str(folder / "train" / schema.TRAIN_FILE))
    return ["runner.train_data_dir=%s" % (folder / "train"),
            "runner.model_save_path=%s" % (folder / "models"),
            "hyper_parameters.max_idxs=%s" % SMALL_MAX_IDXS,
            "hyper_parameters.embed_dim=4", "hyper_parameters.batch_size=8"]


@hypothesis_settings(max_examples=40, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=KEYS, text=st.one_of(LIKELY_TEXTS, override_texts(12)))
def test_a_config_that_validates_starts_training(small_run, key, text):
    """What the trainer does before its loop, and a meta-step: it works, or stops with one
    of the trainer's one-line errors (a missing file or checkpoint, a loss that is not
    finite at once); never another exception."""
    try:
        config = load_config(SAMPLE, small_run + ["%s=%s" % (key, text)])
    except ConfigError:
        event("rejected")
        return
    try:
        paddle.seed(settings.get(config, "runner.seed"))
        model_class = DygraphModel()
        model = model_class.create_model(config)
        optimizer = model_class.create_optimizer(model, config)
        if settings.get(config, "runner.model_init_path"):
            load_model(settings.get(config, "runner.model_init_path"), model, optimizer=optimizer)
        loader = create_data_loader(config, "train")
        batch = next(iter(loader()))
        metrics, _ = model_class.create_metrics()
        loss, _, _ = model_class.train_forward(model, metrics, batch, config)
        loss.backward()
        optimizer.step()
        watch = LossWatch()
        watch.record(0, 0, loss.detach(), loader.dataset.last_tasks)
        watch.check()
        event("trained a meta-step")
    except (ConfigError, DataError, CheckpointError, FileNotFoundError, TrainingDiverged) as error:
        event("stopped: %s" % type(error).__name__)
        assert "\n" not in str(error), str(error)


def run_cli(script, *overrides):
    result = subprocess.run([sys.executable, os.path.join(ROOT, script), "-m", SAMPLE, "-o",
                             *overrides], cwd=ROOT, capture_output=True, text=True, timeout=300)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("script, row", [("tools/trainer.py", 0), ("infer.py", 5)])
def test_the_command_lines_stop_with_the_message_and_status_2(script, row, tmp_path):
    override, message = ISSUE_ROWS[row]
    code, log = run_cli(script, override, "runner.model_save_path=%s" % tmp_path,
                        "runner.infer_load_path=%s" % tmp_path)
    assert code == 2, log[-2000:]
    assert log.strip().splitlines()[-1].endswith(" - -o %s: %s" % (override, message)), log
    assert "Traceback" not in log and not os.listdir(tmp_path)  # nothing done before
