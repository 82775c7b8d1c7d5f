"""Helpers shared by tools/trainer.py and infer.py (named as in PaddleRec's tools)."""
import importlib
import logging
import os
import sys

import numpy as np

from utils import cpu  # noqa: F401  (before Paddle)
import paddle  # noqa: E402

from metaheac import settings  # noqa: E402
from metaheac.settings import ConfigError  # noqa: E402

logger = logging.getLogger(__name__)


def load_dy_model_class(abs_dir):
    """The ``DygraphModel`` of the model folder that holds the config."""
    if abs_dir not in sys.path:
        sys.path.insert(0, abs_dir)
    from dygraph_model import DygraphModel
    return DygraphModel()


def set_device(config):
    """The Paddle place for this run; a GPU asked for on a CPU-only Paddle falls back."""
    if settings.get(config, "runner.use_gpu"):
        if paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
            return paddle.set_device("gpu")
        logger.warning("runner.use_gpu is True but this Paddle build has no usable GPU; "
                       "running on the CPU (set runner.use_gpu: False to silence this)")
    return paddle.set_device("cpu")


def data_files(config, mode):
    key = "runner.train_data_dir" if mode == "train" else "runner.test_data_dir"
    data_dir = os.path.join(config.get("config_abs_dir", ""), settings.get(config, key))
    if not os.path.isdir(data_dir):
        raise FileNotFoundError("%s = %s: no such directory" % (key, data_dir))
    files = sorted(os.path.join(data_dir, name) for name in os.listdir(data_dir))
    if not files:
        raise FileNotFoundError("%s = %s: the directory is empty" % (key, data_dir))
    return files


def create_dataset(config, mode="train"):
    key = "runner.train_reader_path" if mode == "train" else "runner.infer_reader_path"
    name = settings.get(config, key)
    try:
        reader = importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is None or not (name + ".").startswith(error.name + "."):
            raise  # the reader exists but imports something missing: its own trace helps
        raise ConfigError("%s = %s: no such module in the model folder or on the Python path"
                          % (key, name)) from None
    return reader.RecDataset(data_files(config, mode), config=config)


class TensorLoader:
    """Iterates a dataset in the calling thread, turning its NumPy arrays into tensors.

    ``paddle.io.DataLoader`` reads in a background thread, and an exception raised
    there before the first batch leaves the trainer waiting forever; here a reader
    error stops the run at once with the reader's own message. Reading costs about a
    millisecond per meta-step, so nothing is lost by not overlapping it.
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def __call__(self):
        return iter(self)

    def __iter__(self):
        for sample in self.dataset:
            yield _to_tensors(sample)


def _to_tensors(sample):
    if isinstance(sample, np.ndarray):
        return paddle.to_tensor(sample)
    if isinstance(sample, (list, tuple)):
        return [_to_tensors(part) for part in sample]
    return sample


def create_data_loader(config, mode="train"):
    """The dataset of `mode`, yielding tensors on the device ``set_device`` chose."""
    return TensorLoader(create_dataset(config, mode))
