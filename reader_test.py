"""Evaluation reader: one test campaign at a time.

``RecDataset(file_list, config)`` takes ``test_stage1`` (each campaign's seed set,
for fine-tuning) and ``test_stage2`` (the candidates to rank), ``.pkl`` or ``.npz``, from
``file_list`` and yields, per campaign in ascending aid order:
``[aid, seed inputs, seed labels, candidate inputs, candidate labels, candidate ids]``,
the ids a dict: ``row_id`` (the DataFrame index) and, where the file has one, ``uid``.
Seed rows come shuffled (seeded by ``runner.seed``), candidates in file order.
"""
import logging
import os

import numpy as np
from paddle.io import IterableDataset

from metaheac import schema
from metaheac import settings
from metaheac.data_files import DataError, data_file_stem, load_columns, select_data_files

logger = logging.getLogger(__name__)


class RecDataset(IterableDataset):
    def __init__(self, file_list, config):
        super().__init__()
        by_stem = {os.path.basename(data_file_stem(f)): f for f in select_data_files(file_list)}
        wanted = [data_file_stem(n) for n in (schema.TEST_SEED_FILE, schema.TEST_CANDIDATE_FILE)]
        missing = [stem for stem in wanted if stem not in by_stem]
        if missing:
            raise DataError("test data needs %s (.pkl or .npz); missing %s among %s"
                            % (wanted, missing, sorted(file_list)))
        max_idxs = settings.get(config, "hyper_parameters.max_idxs")
        self.seeds, self.candidates = [load_columns(by_stem[stem], max_idxs) for stem in wanted]
        seed_aids, self.seed_rows = self.seeds.campaigns()
        candidate_aids, self.candidate_rows = self.candidates.campaigns()
        self.aids = np.intersect1d(seed_aids, candidate_aids)
        self.skipped = {
            "no candidate rows (stage 2)": np.setdiff1d(seed_aids, candidate_aids).tolist(),
            "no seed rows (stage 1)": np.setdiff1d(candidate_aids, seed_aids).tolist()}
        for reason, aids in self.skipped.items():
            if aids:
                logger.warning("skipping %d test campaign(s) with %s: aids %s",
                               len(aids), reason, aids)
        self._seed_index = dict(zip(seed_aids.tolist(), self.seed_rows))
        self._candidate_index = dict(zip(candidate_aids.tolist(), self.candidate_rows))
        self.seed = settings.get(config, "runner.seed")

    def __len__(self):
        return len(self.aids)

    def seed_counts(self):
        """The number of seed rows of each campaign, in the order they are yielded."""
        return [len(self._seed_index[aid]) for aid in self.aids.tolist()]

    def __iter__(self):
        rng = np.random.default_rng(self.seed)
        for aid in self.aids.tolist():
            seed_rows = rng.permutation(self._seed_index[aid])
            candidate_rows = self._candidate_index[aid]
            yield [np.array([aid]),
                   self.seeds.features(seed_rows), self.seeds.label[seed_rows],
                   self.candidates.features(candidate_rows), self.candidates.label[candidate_rows],
                   self._ids(candidate_rows)]

    def _ids(self, rows):
        ids = {"row_id": self.candidates.row_id[rows]}
        if self.candidates.uid is not None:
            ids[schema.UID] = self.candidates.uid[rows]
        return ids
