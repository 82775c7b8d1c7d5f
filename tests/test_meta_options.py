"""The meta-learning switches: checking, task sampling, and their way into training."""
import itertools

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from metaheac import meta_options
import reader_train
from metaheac import schema
from metaheac import settings
from conftest import (SMALL_MAX_IDXS, campaign_frame, random_inputs, tables_own_ids,
                      train_config, write_frame)
from dygraph_model import DygraphModel
from utils.config import apply_overrides

SIZES = {1: 10, 2: 20, 3: 40, 4: 80}


def test_defaults_are_upstream_paddlerec():
    assert meta_options.read({}) == meta_options.MetaOptions(
        order=1, inner_steps=1, inner_params="all", sample_method="normal", sample_replace=True)


@pytest.mark.parametrize("key, value, message", [
    ("meta_order", 3, "hyper_parameters.meta_order must be one of 0, 1, 2, got 3"),
    ("meta_order", True, "hyper_parameters.meta_order must be one of"),
    ("inner_steps", 0, "hyper_parameters.inner_steps must be an integer of at least 1 and at "
                       "most 1000, got 0"),
    ("inner_steps", 1001, "hyper_parameters.inner_steps must be an integer of at least 1 and at "
                          "most 1000, got 1001"),
    ("inner_steps", 1.5, "hyper_parameters.inner_steps must be an integer"),
    ("inner_params", "experts", "hyper_parameters.inner_params must be one of "
                                "'all', 'gates_critics', got 'experts'"),
    ("sample_method", "log", "hyper_parameters.sample_method must be one of "
                             "'normal', 'sqrt', 'unit', got 'log'"),
    ("sample_replace", "no", "hyper_parameters.sample_replace must be true or false"),
])
def test_a_bad_value_is_an_error_naming_the_key(key, value, message):
    config = {"hyper_parameters." + key: value}
    with pytest.raises(settings.ConfigError, match=message):
        meta_options.read(config)
    with pytest.raises(settings.ConfigError, match=message):  # before any data is read
        DygraphModel().create_model(config)


def test_overrides_are_typed_and_checked():
    config = apply_overrides({}, ["hyper_parameters.meta_order=2", "hyper_parameters.inner_steps=3",
                                  "hyper_parameters.inner_params=gates_critics",
                                  "hyper_parameters.sample_method=sqrt",
                                  "hyper_parameters.sample_replace=false"])
    assert meta_options.read(config) == meta_options.MetaOptions(2, 3, "gates_critics", "sqrt", False)
    with pytest.raises(settings.ConfigError, match="hyper_parameters.meta_order"):
        apply_overrides({}, ["hyper_parameters.meta_order=second"])


def sampling_reader(tmp_path, rng, **options):
    df = campaign_frame(rng, SIZES)
    df["advertiserId"] = df[schema.AID]  # so a task's campaign shows in its ad ids
    config = dict(train_config(batch_size=2, task_count=2),
                  **{"hyper_parameters." + k: v for k, v in options.items()})
    return reader_train.RecDataset([write_frame(df, str(tmp_path / "a.pkl"))], config)


def drawn_tasks(data, epochs):
    """The campaigns of every meta-batch, epochs x batches_per_epoch rows of task_count."""
    return np.array([[tables_own_ids(batch)[0][3][task][0][0] for task in range(data.task_count)]
                     for _ in range(epochs) for batch in data])


@pytest.mark.parametrize("method, weight", [
    ("normal", lambda rows: rows), ("sqrt", np.sqrt), ("unit", lambda rows: 1.0)])
def test_tasks_are_drawn_with_the_chosen_probability(tmp_path, rng, method, weight):
    data = sampling_reader(tmp_path, rng, sample_method=method)
    tasks = drawn_tasks(data, epochs=60).ravel()  # 60 x 75 x 2 = 9,000 draws
    total = sum(weight(rows) for rows in SIZES.values())
    for aid, rows in SIZES.items():
        expected = weight(rows) / total
        sigma = np.sqrt(expected * (1 - expected) / len(tasks))
        assert abs(np.mean(tasks == aid) - expected) < 4 * sigma, (aid, method)


def inclusion_without_replacement(p, k):
    """Each item's chance to be among k drawn one by one without replacement, each
    draw in proportion to `p` among the items left: summed over ordered draws."""
    chance = np.zeros(len(p))
    for order in itertools.permutations(range(len(p)), k):
        left, probability = 1.0, 1.0
        for item in order:
            probability *= p[item] / left
            left -= p[item]
        chance[list(order)] += probability
    return chance


def test_without_replacement_a_batch_holds_distinct_campaigns(tmp_path, rng):
    data = sampling_reader(tmp_path, rng, sample_replace=False)
    tasks = drawn_tasks(data, epochs=60)
    assert all(len(set(batch)) == len(batch) for batch in tasks)
    rows = np.array(list(SIZES.values()), dtype=float)
    expected = inclusion_without_replacement(rows / rows.sum(), k=2)
    for aid, chance in zip(SIZES, expected):
        sigma = np.sqrt(chance * (1 - chance) / len(tasks))
        assert abs(np.mean((tasks == aid).any(axis=1)) - chance) < 4 * sigma, aid


def test_without_replacement_needs_enough_campaigns(tmp_path, rng):
    path = write_frame(campaign_frame(rng, {1: 5, 2: 5}), str(tmp_path / "a.pkl"))
    config = dict(train_config(task_count=3), **{"hyper_parameters.sample_replace": False})
    with pytest.raises(settings.ConfigError, match="sample_replace is false.*task_count=3.*has 2"):
        reader_train.RecDataset([path], config)


def test_order_zero_trains_on_the_plain_query_loss(rng):
    paddle.seed(3)
    model_class = DygraphModel()
    config = {"hyper_parameters.max_idxs": SMALL_MAX_IDXS, "hyper_parameters.embed_dim": 4,
              "hyper_parameters.mlp_dims": [8], "hyper_parameters.meta_order": 0}
    model = model_class.create_model(config)
    support_x, query_x = (random_inputs(rng, 6, leading=(2,)) for _ in range(2))
    # float32 labels, as the readers yield them
    support_y, query_y = (rng.integers(0, 2, (2, 6)).astype("float32") for _ in range(2))
    batch = [[paddle.to_tensor(x) for x in support_x], paddle.to_tensor(support_y),
             [paddle.to_tensor(x) for x in query_x], paddle.to_tensor(query_y)]
    metrics, _ = model_class.create_metrics()
    loss, _, _ = model_class.train_forward(model, metrics, batch, config)
    plain = np.mean([float(F.binary_cross_entropy(
        model(*[paddle.to_tensor(x[t]) for x in query_x]),
        paddle.to_tensor(query_y[t], dtype="float32"))) for t in range(2)])
    np.testing.assert_allclose(float(loss), plain, rtol=1e-6)
