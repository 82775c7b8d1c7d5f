"""Ranking metrics: exact AUC (with the paddle.metric interface), log loss,
precision and recall at the top of a campaign's candidates, and GAUC.

Every metric of a campaign is computed on its candidates (stage 2) from the
click probabilities the fine-tuned model gives them.
"""
import math

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

# Precision and recall count the positives among the top TOP_PERCENT % of a
# campaign's candidates: the audience a marketer would reach (the authors' metric).
TOP_PERCENT = 5
PRECISION = "precision_at_%dpct" % TOP_PERCENT
RECALL = "recall_at_%dpct" % TOP_PERCENT


def auc(labels, scores):
    """ROC AUC; NaN when the labels are all of one class (the AUC is undefined)."""
    labels = np.asarray(labels).ravel()
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, np.asarray(scores, dtype=np.float64).ravel()))


def log_loss_of(labels, scores):
    """Mean binary cross-entropy of click probabilities `scores` (clipped as scikit-learn does)."""
    return float(log_loss(np.asarray(labels).ravel(), y_proba=np.asarray(scores, dtype=np.float64).ravel(),
                          labels=[0, 1]))


def top_count(candidates):
    """How many candidates the top TOP_PERCENT % holds: ceil(TOP_PERCENT % of them)."""
    return math.ceil(candidates * TOP_PERCENT / 100)


def precision_recall_at_top(labels, scores):
    """Precision and recall of the top ``top_count`` candidates by score.

    Ties keep candidate order. Recall is NaN for a campaign without positives.
    """
    labels = np.asarray(labels, dtype=np.float64)
    top = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:top_count(len(labels))]
    hits = labels[top].sum()
    precision = hits / len(top) if len(top) else float("nan")
    recall = hits / labels.sum() if labels.sum() else float("nan")
    return float(precision), float(recall)


def campaign_metrics(labels, scores, scores_before, failed=None):
    """One campaign's candidate counts and metrics, from the scores after fine-tuning
    (and, for ``auc_before``, the scores of the meta-trained weights).

    `failed` says why fine-tuning failed, if it did: the metrics after it are then
    NaN, and the row keeps the reason under ``failed``."""
    labels = np.asarray(labels, dtype=np.float64)
    row = {"candidate_rows": len(labels), "positives": int(labels.sum()),
           "positive_rate": float(labels.mean()) if len(labels) else float("nan"),
           "auc_before": auc(labels, scores_before)}
    if failed:
        nan = float("nan")
        return dict(row, auc=nan, log_loss=nan, **{PRECISION: nan, RECALL: nan}, failed=failed)
    precision, recall = precision_recall_at_top(labels, scores)
    return dict(row, auc=auc(labels, scores),
                log_loss=log_loss_of(labels, scores),
                **{PRECISION: precision, RECALL: recall})


def summarize(campaigns, pooled_auc):
    """A test set's summary from its campaign rows (dicts with ``auc`` and ``auc_before``).

    GAUC is the mean AUC of the campaigns whose candidates hold both classes, plain
    and weighted by candidate rows; the means of precision and recall are over the
    same campaigns. Campaigns of one class, and those whose fine-tuning failed, are
    counted and listed, not averaged.
    """
    scored = [c for c in campaigns if not math.isnan(c["auc"])]
    failed = [c["aid"] for c in campaigns if c.get("failed")]
    return {"campaigns": len(campaigns), "two_class_campaigns": len(scored),
            "one_class_campaigns": [c["aid"] for c in campaigns
                                    if math.isnan(c["auc"]) and c["aid"] not in failed],
            "failed_campaigns": failed,
            "candidate_rows": sum(c["candidate_rows"] for c in campaigns),
            "pooled_auc": pooled_auc, "gauc": _mean(scored, "auc"),
            "gauc_row_weighted": _mean(scored, "auc", weight="candidate_rows"),
            "gauc_before": _mean(scored, "auc_before"),
            "mean_" + PRECISION: _mean(scored, PRECISION), "mean_" + RECALL: _mean(scored, RECALL)}


def lift_reached(value, oracle):
    """The share of the oracle's lift over a random ranking (AUC 0.5) that `value` reaches."""
    return (value - 0.5) / (oracle - 0.5)


def _mean(rows, key, weight=None):
    if not rows:
        return float("nan")
    weights = [r[weight] for r in rows] if weight else None
    return float(np.average([r[key] for r in rows], weights=weights))


class ExactAuc:
    """ROC AUC over everything seen since the last reset, computed exactly.

    ``paddle.metric.Auc`` buckets scores into 4095 bins and so only approximates
    the AUC. This keeps the scores and asks scikit-learn. When the labels seen are
    all of one class the AUC is undefined and ``accumulate`` returns NaN.
    Scores and labels may be tensors: they are kept as given and copied to the host
    only in ``accumulate``, so a training step does not wait for the device.
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
        self._scores.append(preds)
        self._labels.append(labels)

    def accumulate(self):
        if not self._labels:
            return float("nan")
        return auc(_flat(self._labels), _flat(self._scores).astype(np.float64))


def _flat(parts):
    return np.concatenate([np.asarray(part).ravel() for part in parts])
