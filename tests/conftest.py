"""Shared test helpers; puts the repo root and tools/ on the path (the only place tests do)."""
import os
import sys

import numpy as np
import pandas as pd
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.join(ROOT, "tools")):
    if path not in sys.path:
        sys.path.insert(0, path)

from utils import cpu  # noqa: E402,F401  (the CPU set up as the trainer sets it, before Paddle)
from metaheac import reference, schema  # noqa: E402

# Small vocabularies keep unit tests fast; the maths does not depend on the sizes.
SMALL_MAX_IDXS = [[4] * len(schema.STATIC_FIELDS), [30] * len(schema.SEQUENCE_FIELDS),
                  [3] * len(schema.AD_FIELDS)]
SHARED_FIXTURE = os.path.join(ROOT, "..", "shared", "fixtures", "paddlerec_sample",
                              "train_stage1.pkl")


def random_inputs(rng, batch, max_idxs=SMALL_MAX_IDXS, leading=()):
    """Random (static, sequence, lengths, ad) int64 arrays within `max_idxs`."""
    return reference.random_inputs(rng, tuple(leading) + (batch,), max_idxs)


def frame(rng, rows=12, aids=3):
    """A schema-conforming DataFrame of random rows."""
    data = {schema.LABEL: rng.integers(0, 2, rows), schema.AID: rng.integers(0, aids, rows)}
    for f in schema.STATIC_FIELDS + schema.AD_FIELDS:
        data[f.name] = rng.integers(0, f.max_id + 1, rows)
    for f in schema.SEQUENCE_FIELDS:
        data[f.name] = [rng.integers(0, f.max_id + 1, f.width) for _ in range(rows)]
        data[f.length_column] = rng.integers(0, f.width + 1, rows)
    return pd.DataFrame(data, columns=schema.ALL_COLUMNS, index=np.arange(100, 100 + rows))


def campaign_frame(rng, sizes, start_index=0):
    """Random rows of the campaigns in `sizes` (aid -> rows), each with constant ad fields."""
    parts = []
    for aid, size in sizes.items():
        part = frame(rng, size)
        part[schema.AID] = aid
        for column in schema.AD_COLUMNS:  # a campaign's ad fields are constant
            part[column] = part[column].iloc[0]
        parts.append(part)
    df = pd.concat(parts)
    df.index = np.arange(start_index, start_index + len(df))
    return df


def tables_own_ids(batch):
    """A train batch's support and query inputs with each task's ids mapped back from
    its local rows (reader_train.py) to the tables' own ids."""
    support_x, _, query_x, _, task_rows = batch
    own = []
    for inputs in (support_x, query_x):
        ids = [np.stack([np.concatenate(rows)[x[task]] for task, rows in enumerate(task_rows)])
               for x in (inputs[0], inputs[1], inputs[3])]
        own.append([ids[0], ids[1], inputs[2], ids[2]])
    return own


def train_config(batch_size=4, task_count=3, seed=5):
    return {"hyper_parameters.batch_size": batch_size, "hyper_parameters.task_count": task_count,
            "runner.seed": seed}


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def write_frame(df, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    df.to_pickle(path)
    return path
