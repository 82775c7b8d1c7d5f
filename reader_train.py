"""Meta-training reader: batches of tasks, each a support and a query batch of one campaign.

``RecDataset(file_list, config)`` reads every ``.pkl`` file in ``file_list`` (sorted)
once into NumPy arrays. Each epoch yields ``ceil(rows / batch_size)`` meta-batches;
a meta-batch draws ``task_count`` campaigns (by default with probability
proportional to their row count and with replacement, as upstream PaddleRec;
``sample_method`` and ``sample_replace`` in metaheac/meta_options.py) and, for each, a
support and a query batch of ``batch_size`` rows drawn independently. Epoch e
draws from a stream seeded by (``runner.seed``, e): epochs differ, runs repeat, and
a run resumed at epoch e (``set_epoch``) draws what the uninterrupted run drew.

A meta-batch is ``[support_x, support_y, query_x, query_y, task_rows]``: each task's
ids come remapped onto the rows of the embedding tables it uses, which
``task_rows`` lists per task and table (``maml.plan_tasks``). That id work is done
here, on NumPy, so the meta-step never copies a tensor back to the host.

``shard(rank, world_size)`` keeps a rank's share of every meta-batch under data
parallelism (readme.md, "Several processes, GPUs or machines").
"""
import logging

import numpy as np
from paddle.io import IterableDataset

import maml
import net
from metaheac import meta_options
from metaheac import settings
from metaheac.data_files import Columns, DataError, load_columns, select_data_files

logger = logging.getLogger(__name__)


class RecDataset(IterableDataset):
    def __init__(self, file_list, config):
        super().__init__()
        self.batch_size = settings.get(config, "hyper_parameters.batch_size")
        self.task_count = settings.get(config, "hyper_parameters.task_count")
        files = select_data_files(file_list)
        if not files:
            raise DataError("no training data files (.pkl or .npz) among %s" % sorted(file_list))
        max_idxs = settings.get(config, "hyper_parameters.max_idxs")
        self.table_sizes = net.table_sizes(max_idxs)
        self.data = Columns.concat([load_columns(f, max_idxs) for f in files])
        if len(self.data) == 0:
            raise DataError("the training files %s hold no rows" % files)
        self.aids, self.campaign_rows = self.data.campaigns()
        sizes = np.array([len(rows) for rows in self.campaign_rows])
        options = meta_options.read(config)
        self.campaign_probability = meta_options.task_probabilities(sizes, options.sample_method)
        self.sample_replace = options.sample_replace
        self.shard(0, 1)
        small = self.aids[sizes < self.batch_size]
        if len(small):
            logger.warning("%d of %d campaigns have fewer rows than batch_size=%d (aids %s); "
                           "their support and query batches are drawn with replacement",
                           len(small), len(self.aids), self.batch_size, small[:10].tolist())
        self.seed = settings.get(config, "runner.seed")
        self.epoch = 0

    def shard(self, rank, world_size):
        """Yield rank `rank`'s tasks of a data-parallel run over `world_size` ranks."""
        tasks = self.task_count * world_size
        if not self.sample_replace and tasks > len(self.aids):
            raise settings.ConfigError(
                "hyper_parameters.sample_replace is false, so hyper_parameters.task_count=%d "
                "x %d rank(s) needs as many training campaigns; the data has %d"
                % (self.task_count, world_size, len(self.aids)))
        self.rank, self.world_size = rank, world_size
        self.batches_per_epoch = int(np.ceil(len(self.data) / (self.batch_size * world_size)))

    def set_epoch(self, epoch):
        """Make the next pass draw epoch `epoch`'s tasks (passes count up by themselves)."""
        self.epoch = epoch

    def __len__(self):
        return self.batches_per_epoch

    def __iter__(self):
        self.rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        mine = slice(self.rank * self.task_count, (self.rank + 1) * self.task_count)
        for _ in range(self.batches_per_epoch):
            tasks = self.rng.choice(len(self.aids), size=self.task_count * self.world_size,
                                    replace=self.sample_replace, p=self.campaign_probability)
            # Every rank makes every draw, so the stream stays the one-process stream.
            support = np.stack([self._draw(t) for t in tasks])[mine]
            query = np.stack([self._draw(t) for t in tasks])[mine]
            self.last_tasks = self.aids[tasks].tolist()  # named if the run diverges here
            support_x, query_x, task_rows = maml.plan_tasks(
                self.data.features(support), self.data.features(query), self.table_sizes)
            yield [support_x, self.data.label[support], query_x, self.data.label[query],
                   task_rows]

    def _draw(self, task):
        rows = self.campaign_rows[task]
        return rows[self.rng.choice(len(rows), size=self.batch_size,
                                    replace=len(rows) < self.batch_size)]
