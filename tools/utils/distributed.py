"""Data parallelism over ``paddle.distributed``: the same code on CPUs (gloo) and GPUs (NCCL).

A run started by ``python -m paddle.distributed.launch`` with ``runner.use_fleet:
True`` is one rank per process; what each rank does is in readme.md, "Several
processes, GPUs or machines". A process started without the launcher is rank 0 of
1, and every method below is then a no-op, so single-process runs are unchanged.

A gloo collective fails when a rank waits more than 30 s for the others (Paddle
gives no way to raise gloo's limit), so after work that takes the ranks unequal
time the ranks first meet in ``wait_for_all``, which has no such limit.
"""
import itertools
import os
import signal
import time
from dataclasses import dataclass

import numpy as np

from utils import cpu  # noqa: F401  (before Paddle)
import paddle  # noqa: E402
import paddle.distributed as dist  # noqa: E402
from paddle.base import core  # noqa: E402
from paddle.distributed.fleet.utils.hybrid_parallel_util import (  # noqa: E402
    fused_allreduce_gradients)
from paddle.distributed.parallel import sync_params_buffers  # noqa: E402

from metaheac import settings  # noqa: E402
from metaheac.settings import ConfigError  # noqa: E402

_meetings = itertools.count()  # every rank meets in the same order, so the keys agree


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    size: int = 1

    @property
    def main(self):
        """Rank 0 writes the checkpoints, the curve and the reports."""
        return self.rank == 0

    def sync_parameters(self, model):
        """Give every rank rank 0's weights, as paddle.DataParallel does when it wraps a model."""
        if self.size > 1:
            sync_params_buffers(model)

    def average_gradients(self, parameters):
        """Replace each gradient by its mean over the ranks, in fused buckets.

        Each rank's loss is the mean over its tasks, so the mean of the ranks'
        gradients is the gradient of the mean loss over all their tasks.
        """
        if self.size > 1:
            fused_allreduce_gradients(list(parameters), None)

    def mean(self, tensor):
        """The mean of a tensor over the ranks; the input is left alone."""
        if self.size == 1:
            return tensor
        total = tensor.detach().clone()
        dist.all_reduce(total)
        return total / self.size

    def gather(self, obj):
        """Every rank's `obj`, in rank order, however long the others take to get here;
        the objects may differ in size."""
        if self.size == 1:
            return [obj]
        self.wait_for_all()
        gathered = []
        dist.all_gather_object(gathered, obj)
        return gathered

    def wait_for_all(self):
        """Return once every rank has called this, however long that takes.

        Counts arrivals in the launcher's key-value store (the one the process
        group was set up through). If a rank fails, the launcher stops the others.
        """
        if self.size == 1:
            return
        store = core.create_or_get_global_tcp_store()
        key = "metaheac/meeting/%d" % next(_meetings)
        store.add(key, 1)
        while store.add(key, 0) < self.size:
            time.sleep(0.1)


class GatheredMetric:
    """A metric fed with the predictions of all ranks, in rank order.

    Wraps a metric of the ``update(preds, labels)`` / ``accumulate()`` interface,
    so the AUC a rank logs covers the whole meta-batch, as in one process. Every
    rank updates once per meta-step, with arrays of one shape (``task_count x
    batch_size``), which lets a plain tensor all_gather carry them.
    """

    def __init__(self, metric):
        self.metric = metric

    def update(self, preds, labels):
        self.metric.update(*(self._all(np.asarray(a)) for a in (preds, labels)))

    def accumulate(self):
        return self.metric.accumulate()

    def _all(self, array):
        parts = []
        dist.all_gather(parts, paddle.to_tensor(array))
        return np.concatenate([part.numpy() for part in parts])


def start(config):
    """This process's Ranks; joins the process group when launched as several processes.

    Call it after ``set_device``: ranks on the CPU talk over gloo even where this
    Paddle build has CUDA (which would pick NCCL).
    """
    size = dist.get_world_size()  # the launcher's PADDLE_TRAINERS_NUM, read before joining
    if size == 1:
        return Ranks()
    if not settings.get(config, "runner.use_fleet"):
        # Every rank stops here, and the launcher ends the others when the first one exits:
        # let its SIGTERM end this rank quietly, not with Paddle's C++ termination report.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise ConfigError("launched as %d processes, but runner.use_fleet is False: set "
                          "runner.use_fleet: True (or -o runner.use_fleet=True) to run data "
                          "parallel, or start a single process" % size)
    if paddle.device.get_device() == "cpu":
        os.environ.setdefault("PADDLE_DISTRI_BACKEND", "gloo")
    dist.init_parallel_env()
    return Ranks(dist.get_rank(), size)


def metrics_over_ranks(metrics, ranks):
    """`metrics` as they are in one process; else each fed by every rank."""
    return metrics if ranks.size == 1 else [GatheredMetric(m) for m in metrics]
