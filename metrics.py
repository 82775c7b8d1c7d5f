"""Exact ranking metrics with the paddle.metric interface (update / accumulate / reset)."""
import numpy as np
from sklearn.metrics import roc_auc_score


class ExactAuc:
    """ROC AUC over everything seen since the last reset, computed exactly.

    ``paddle.metric.Auc`` buckets scores into 4095 bins and so only approximates
    the AUC. This keeps the scores and asks scikit-learn. When the labels seen are
    all of one class the AUC is undefined and ``accumulate`` returns NaN.
    """

    def __init__(self, name="AUC"):
        self._name = name
        self.reset()

    def name(self):
        return self._name

    def reset(self):
        self._scores, self._labels = [], []

    def update(self, preds, labels):
        """`preds`: scores (probabilities of label 1), any shape; `labels` alike."""
        self._scores.append(np.asarray(preds, dtype=np.float64).ravel())
        self._labels.append(np.asarray(labels).ravel())

    def accumulate(self):
        if not self._labels:
            return float("nan")
        labels = np.concatenate(self._labels)
        if len(np.unique(labels)) < 2:
            return float("nan")
        return float(roc_auc_score(labels, np.concatenate(self._scores)))
