"""Checkpoints in the PaddleRec layout: ``<path>/<epoch>/rec.pdparams`` and ``rec.pdopt``.

Files are written to a temporary name and renamed, so an interrupted save leaves
the previous checkpoint whole.
"""
import logging
import os

from utils import cpu  # noqa: F401  (before Paddle)
import paddle  # noqa: E402

from metaheac.atomic_files import replacing  # noqa: E402

logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that is missing or does not fit the model."""


def atomic_save(obj, path):
    with replacing(path) as temporary:
        paddle.save(obj, temporary)


def save_model(net, optimizer, model_path, epoch_id, prefix="rec"):
    directory = os.path.join(model_path, str(epoch_id))
    os.makedirs(directory, exist_ok=True)
    atomic_save(net.state_dict(), os.path.join(directory, prefix + ".pdparams"))
    if optimizer is not None:
        atomic_save(optimizer.state_dict(), os.path.join(directory, prefix + ".pdopt"))
    logger.info("saved model in %s", directory)


def load_model(model_path, net, prefix="rec", optimizer=None):
    """Load weights (and optimizer state, if asked and present) from a checkpoint."""
    params_file = os.path.join(model_path, prefix + ".pdparams")
    if not os.path.isfile(params_file):
        raise CheckpointError("no checkpoint at %s (expected %s)" % (model_path, params_file))
    state = paddle.load(params_file)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise CheckpointError("%s lacks parameter(s) %s; was it trained with another config?"
                              % (params_file, missing[:5]))
    for name, value in expected.items():
        if list(state[name].shape) != list(value.shape):
            raise CheckpointError(
                "%s: parameter %s has shape %s, the model built from this config expects %s"
                % (params_file, name, list(state[name].shape), list(value.shape)))
    net.set_state_dict(state)
    opt_file = os.path.join(model_path, prefix + ".pdopt")
    if optimizer is not None and os.path.isfile(opt_file):
        optimizer.set_state_dict(paddle.load(opt_file))
    logger.info("loaded model from %s", model_path)
