"""The meta-learning switches of ``hyper_parameters``, read and checked in one place.

- ``meta_order``: 1 first-order MAML (upstream PaddleRec), 2 second order through
  the inner steps (the authors' code), 0 the baseline without an inner loop.
- ``inner_steps``: inner SGD steps per task (orders 1 and 2).
- ``inner_params``: the weights the inner steps move: ``all`` (upstream) or
  ``gates_critics`` (the gates and critics; tables and experts stay shared).
- ``sample_method``: how likely a campaign is to be drawn as a task, in proportion
  to its rows (``normal``), to their square root (``sqrt``) or uniformly (``unit``).
- ``sample_replace``: draw the tasks of a meta-batch with replacement (upstream
  PaddleRec) or without (the authors' code).
"""
from dataclasses import dataclass

import numpy as np

from metaheac import settings

# Its names are the choices of hyper_parameters.sample_method in settings.py (a test
# keeps the two equal).
TASK_WEIGHTS = {"normal": lambda rows: rows, "sqrt": np.sqrt, "unit": np.ones_like}


@dataclass(frozen=True)
class MetaOptions:
    order: int
    inner_steps: int
    inner_params: str
    sample_method: str
    sample_replace: bool


def read(config):
    """The options of `config`; a bad value is a ConfigError naming its key."""
    return MetaOptions(*(settings.checked(config, "hyper_parameters." + key) for key in
                         ("meta_order", "inner_steps", "inner_params", "sample_method",
                          "sample_replace")))


def task_probabilities(campaign_rows, sample_method):
    """Each campaign's chance to be drawn as a task, from its row count."""
    weights = TASK_WEIGHTS[sample_method](np.asarray(campaign_rows, dtype=np.float64))
    return weights / weights.sum()

