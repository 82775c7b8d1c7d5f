"""metaheac/early_stopping.py: the held-out rows and the stopping rule."""
import math

import numpy as np
import pytest

from metaheac.early_stopping import EarlyStopping, stratified_holdout


def test_holdout_takes_the_fraction_of_each_class_and_repeats_from_seed_and_aid():
    labels = np.r_[np.ones(13), np.zeros(87)][np.random.default_rng(0).permutation(100)]
    mask = stratified_holdout(labels, 0.2, seed=5, aid=3)
    assert mask.dtype == bool and mask.sum() == 3 + 17  # round(2.6), round(17.4)
    assert labels[mask].sum() == 3
    np.testing.assert_array_equal(mask, stratified_holdout(labels, 0.2, seed=5, aid=3))
    assert not np.array_equal(mask, stratified_holdout(labels, 0.2, seed=5, aid=4))
    assert not np.array_equal(mask, stratified_holdout(labels, 0.2, seed=6, aid=3))


def run(values, patience, metric):
    stopper = EarlyStopping(patience, metric)
    for step, value in enumerate(values):
        stopper.update(step, value)
        if stopper.stop:
            return stopper.best_step, stopper.best_value, step
    return stopper.best_step, stopper.best_value, None


@pytest.mark.parametrize("values, patience, metric, expected", [
    ([0.9, 0.7, 0.8, 0.75, 0.72, 0.6], 3, "logloss", (1, 0.7, 4)),   # stops 3 after the best
    ([0.9, 0.7, 0.8, 0.75, 0.6, 0.9], 3, "logloss", (4, 0.6, None)),  # improves in time
    ([0.5, 0.6, 0.6, 0.55], 2, "auc", (1, 0.6, 3)),                  # a tie is no improvement
    ([math.nan, 0.6, math.nan, 0.5], 2, "auc", (1, 0.6, 3)),          # NaN never improves
])
def test_best_step_and_stop(values, patience, metric, expected):
    assert run(values, patience, metric) == expected


def test_nothing_defined_leaves_no_best_step():
    best_step, best_value, stopped = run([math.nan, math.nan], 2, "logloss")
    assert best_step is None and math.isnan(best_value) and stopped == 1
