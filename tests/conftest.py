import os
import sys

import numpy as np
import pandas as pd
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.join(ROOT, "tools")):
    if path not in sys.path:
        sys.path.insert(0, path)

import schema  # noqa: E402

# Small vocabularies keep unit tests fast; the maths does not depend on the sizes.
SMALL_MAX_IDXS = [[4] * len(schema.STATIC_FIELDS), [30] * len(schema.SEQUENCE_FIELDS),
                  [3] * len(schema.AD_FIELDS)]
SHARED_FIXTURE = os.path.join(ROOT, "..", "shared", "fixtures", "paddlerec_sample",
                              "train_stage1.pkl")


def random_inputs(rng, batch, max_idxs=SMALL_MAX_IDXS, leading=()):
    """Random (static, sequence, lengths, ad) int64 arrays within `max_idxs`."""
    static_max, sequence_max, ad_max = max_idxs
    shape = tuple(leading) + (batch,)
    static = np.stack([rng.integers(0, m + 1, shape) for m in static_max], axis=-1)
    sequence = np.concatenate(
        [rng.integers(0, m + 1, shape + (f.width,))
         for f, m in zip(schema.SEQUENCE_FIELDS, sequence_max)], axis=-1)
    lengths = np.stack([rng.integers(0, f.width + 1, shape) for f in schema.SEQUENCE_FIELDS],
                       axis=-1)
    ad = np.stack([rng.integers(0, m + 1, shape) for m in ad_max], axis=-1)
    return [static, sequence, lengths, ad]


def frame(rng, rows=12, aids=3):
    """A schema-conforming DataFrame of random rows."""
    data = {schema.LABEL: rng.integers(0, 2, rows), schema.AID: rng.integers(0, aids, rows)}
    for f in schema.STATIC_FIELDS + schema.AD_FIELDS:
        data[f.name] = rng.integers(0, f.max_id + 1, rows)
    for f in schema.SEQUENCE_FIELDS:
        data[f.name] = [rng.integers(0, f.max_id + 1, f.width) for _ in range(rows)]
        data[f.length_column] = rng.integers(0, f.width + 1, rows)
    return pd.DataFrame(data, columns=schema.ALL_COLUMNS, index=np.arange(100, 100 + rows))


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def write_frame(df, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    df.to_pickle(path)
    return path
