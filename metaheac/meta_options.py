"""The meta-learning switches of ``hyper_parameters``, read and checked in one place.

- ``meta_order``: 1 first-order MAML (upstream PaddleRec), 2 second order through
  the inner steps (the authors' code), 0 the baseline without an inner loop.
- ``inner_steps``: inner SGD steps per task (orders 1 and 2).
- ``sample_method``: how likely a campaign is to be drawn as a task, in proportion
  to its rows (``normal``), to their square root (``sqrt``) or uniformly (``unit``).
- ``sample_replace``: draw the tasks of a meta-batch with replacement (upstream
  PaddleRec) or without (the authors' code).
"""
from dataclasses import dataclass

import numpy as np

from metaheac import settings

ORDERS = (0, 1, 2)
TASK_WEIGHTS = {"normal": lambda rows: rows, "sqrt": np.sqrt, "unit": np.ones_like}


@dataclass(frozen=True)
class MetaOptions:
    order: int
    inner_steps: int
    sample_method: str
    sample_replace: bool


def read(config):
    """The options of `config`; a bad value is a ConfigError naming its key."""
    hp = lambda key: settings.get(config, "hyper_parameters." + key)  # noqa: E731
    options = MetaOptions(hp("meta_order"), hp("inner_steps"), hp("sample_method"),
                          hp("sample_replace"))
    if options.order not in ORDERS or isinstance(options.order, bool):
        _fail("meta_order", options.order, "one of %s" % (ORDERS,))
    if not isinstance(options.inner_steps, int) or isinstance(options.inner_steps, bool) \
            or options.inner_steps < 1:
        _fail("inner_steps", options.inner_steps, "an integer of at least 1")
    if options.sample_method not in TASK_WEIGHTS:
        _fail("sample_method", options.sample_method, "one of %s" % sorted(TASK_WEIGHTS))
    if not isinstance(options.sample_replace, bool):
        _fail("sample_replace", options.sample_replace, "true or false")
    return options


def task_probabilities(campaign_rows, sample_method):
    """Each campaign's chance to be drawn as a task, from its row count."""
    weights = TASK_WEIGHTS[sample_method](np.asarray(campaign_rows, dtype=np.float64))
    return weights / weights.sum()


def _fail(key, value, expected):
    raise settings.ConfigError("hyper_parameters.%s must be %s, got %r" % (key, expected, value))
