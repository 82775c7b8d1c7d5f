import os

import numpy as np
import pandas as pd
import pytest

from metaheac import schema
from conftest import SHARED_FIXTURE, frame
from metaheac.data_files import DataError, load_columns


def write(tmp_path, df, name="part.pkl"):
    path = str(tmp_path / name)
    df.to_pickle(path)
    return path


def test_columns_match_the_frame(tmp_path, rng):
    df = frame(rng)
    cols = load_columns(write(tmp_path, df))
    np.testing.assert_array_equal(cols.static, df[schema.STATIC_COLUMNS].to_numpy())
    np.testing.assert_array_equal(cols.ad, df[schema.AD_COLUMNS].to_numpy())
    np.testing.assert_array_equal(cols.lengths, df[schema.LENGTH_COLUMNS].to_numpy())
    for field, cells in zip(schema.SEQUENCE_FIELDS, schema.SEQUENCE_SLICES):
        np.testing.assert_array_equal(cols.sequence[:, cells], np.stack(df[field.name]))
    np.testing.assert_array_equal(cols.row_id, df.index)
    aids, groups = cols.campaigns()
    for aid, rows in zip(aids, groups):
        np.testing.assert_array_equal(rows, np.flatnonzero(df.aid.to_numpy() == aid))


@pytest.mark.skipif(not os.path.exists(SHARED_FIXTURE), reason="../shared is not present")
def test_legacy_upstream_pickle_loads():
    # Written by pandas < 2: plain pickle.load fails on pandas 2+.
    cols = load_columns(SHARED_FIXTURE)
    assert len(cols) == 586 and cols.sequence.shape == (586, 50)
    assert set(np.unique(cols.label)) == {1.0}
    assert len(cols.campaigns()[0]) == 5


def test_missing_column_is_named(tmp_path, rng):
    with pytest.raises(DataError, match="missing column.*'kw2'"):
        load_columns(write(tmp_path, frame(rng).drop(columns=["kw2"])))


def test_wrong_sequence_width_is_named(tmp_path, rng):
    df = frame(rng)
    df.at[df.index[3], "topic1"] = np.arange(4)
    with pytest.raises(DataError, match="'topic1'.*width 5"):
        load_columns(write(tmp_path, df))


def test_id_above_vocabulary_is_named(tmp_path, rng):
    df = frame(rng)
    df.loc[df.index[2], "LBS"] = 856
    with pytest.raises(DataError, match=r"'LBS' has id 856 at row 102.*\[0, 855\]"):
        load_columns(write(tmp_path, df))


def test_bad_label_and_length_are_named(tmp_path, rng):
    df = frame(rng)
    df.loc[df.index[0], "label"] = -1
    with pytest.raises(DataError, match="'label' must hold only 0 and 1"):
        load_columns(write(tmp_path, df))
    df = frame(rng)
    df.loc[df.index[1], "kw1_length"] = 6
    with pytest.raises(DataError, match=r"'kw1_length' has length 6 at row 101; lengths must lie in \[0, 5\]"):
        load_columns(write(tmp_path, df))


def test_not_a_pickle_and_not_a_frame(tmp_path):
    junk = tmp_path / "junk.pkl"
    junk.write_text("hello")
    with pytest.raises(DataError, match="junk.pkl: not a readable pickled DataFrame"):
        load_columns(str(junk))
    pd.to_pickle([1, 2], str(tmp_path / "list.pkl"))
    with pytest.raises(DataError, match="holds a list, expected a pandas DataFrame"):
        load_columns(str(tmp_path / "list.pkl"))
    with pytest.raises(DataError, match="no such data file"):
        load_columns(str(tmp_path / "absent.pkl"))
