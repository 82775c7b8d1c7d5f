"""Fine-tuning fitted to one seed set: a held-out part of it, and when to stop.

``runner.infer_finetune: auto`` (infer.py) holds out a stratified part of a campaign's
seed rows, fine-tunes on the rest while ``EarlyStopping`` watches the held-out score,
and keeps the step where that score was best.
"""
import math

import numpy as np

# What a validation score measures, and whether a larger value is better.
HIGHER_IS_BETTER = {"logloss": False, "auc": True}


def stratified_holdout(labels, fraction, seed, aid):
    """A boolean mask of the rows to hold out: round(fraction x rows) of each class.

    Drawn from (seed, aid) alone, so a campaign gets the same rows in every process
    and whichever rank evaluates it."""
    labels = np.asarray(labels).ravel()
    rng = np.random.default_rng([seed, aid])
    mask = np.zeros(len(labels), dtype=bool)
    for value in (0, 1):
        rows = np.flatnonzero(labels == value)
        mask[rng.choice(rows, size=int(round(fraction * len(rows))), replace=False)] = True
    return mask


class EarlyStopping:
    """Tracks validation scores, given step by step; `stop` once `patience` scores in a row
    have not improved on the best. NaN never improves. Ties keep the earlier step."""

    def __init__(self, patience, metric):
        self.patience = patience
        self.higher_is_better = HIGHER_IS_BETTER[metric]
        self.best_step, self.best_value = None, math.nan
        self.waited = 0

    def update(self, step, value):
        """Record `value` at `step`; True when it is the new best."""
        improved = not math.isnan(value) and (
            self.best_step is None or math.isnan(self.best_value)
            or (value > self.best_value if self.higher_is_better else value < self.best_value))
        if improved:
            self.best_step, self.best_value, self.waited = step, value, 0
        else:
            self.waited += 1
        return improved

    @property
    def stop(self):
        return self.waited >= self.patience
