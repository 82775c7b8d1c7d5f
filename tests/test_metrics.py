import math

import numpy as np
from sklearn.metrics import roc_auc_score

from metaheac.metrics import ExactAuc


def test_auc_accumulates_across_updates_exactly(rng):
    scores, labels = rng.random((3, 50)), rng.integers(0, 2, (3, 50))
    auc = ExactAuc()
    for s, y in zip(scores, labels):
        auc.update(s, y)
    assert auc.accumulate() == roc_auc_score(labels.ravel(), scores.ravel())
    auc.update(scores[:1].reshape(5, 10), labels[:1].reshape(5, 10))  # shapes are flattened
    assert auc.accumulate() == roc_auc_score(np.concatenate([labels.ravel(), labels[0]]),
                                             np.concatenate([scores.ravel(), scores[0]]))


def test_auc_of_one_class_is_undefined():
    auc = ExactAuc()
    assert math.isnan(auc.accumulate())
    auc.update([0.2, 0.9], [1, 1])
    assert math.isnan(auc.accumulate())
    auc.reset()
    auc.update([0.2, 0.9], [0, 1])
    assert auc.accumulate() == 1.0
