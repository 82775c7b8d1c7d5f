"""Random defects in data files: each file either loads correctly or fails with a DataError."""
import numpy as np
import pandas as pd
from hypothesis import HealthCheck, event, given, settings, strategies as st

from metaheac import schema
from conftest import frame
from metaheac.data_files import DataError, load_columns

ID_COLUMNS = schema.STATIC_COLUMNS + schema.AD_COLUMNS + [schema.AID]


def _present(df, columns):
    return [c for c in columns if c in df.columns] or [c for c in df.columns]


def _drop(df, draw):
    return df.drop(columns=[draw(st.sampled_from(list(df.columns)))])


def _set_scalar(df, draw):
    column = draw(st.sampled_from(_present(df, ID_COLUMNS + schema.LENGTH_COLUMNS + [schema.LABEL])))
    value = draw(st.one_of(st.integers(-5, 300000), st.just(np.nan), st.floats(-2, 2),
                           st.text(max_size=3)))
    df = df.copy()
    df[column] = df[column].astype(object)
    df.at[df.index[draw(st.integers(0, len(df) - 1))], column] = value
    return df


def _set_cell(df, draw):
    field = draw(st.sampled_from(schema.SEQUENCE_FIELDS))
    if field.name not in df.columns:
        return df
    width = draw(st.integers(0, 12))
    cell = draw(st.one_of(
        st.just(np.arange(width)), st.just(np.full(width, -1)), st.just(np.full(width, 10 ** 7)),
        st.just(np.linspace(0, 1, width)), st.just("tokens"), st.just(None)))
    df = df.copy()
    df.at[df.index[draw(st.integers(0, len(df) - 1))], field.name] = cell
    return df


def _retype_column(df, draw):
    column = draw(st.sampled_from(list(df.columns)))
    df = df.copy()
    df[column] = df[column].astype(str)
    return df


def _extra_column(df, draw):
    df = df.copy()
    df[draw(st.sampled_from(["creativeId", "ct", "uid"]))] = 1
    return df


DEFECTS = [_drop, _set_scalar, _set_cell, _retype_column, _extra_column]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), seed=st.integers(0, 2 ** 16))
def test_defective_frames_load_correctly_or_fail_clearly(tmp_path, data, seed):
    df = frame(np.random.default_rng(seed), rows=data.draw(st.integers(1, 8)))
    for defect in data.draw(st.lists(st.sampled_from(DEFECTS), min_size=1, max_size=3)):
        df = defect(df, data.draw)
    path = str(tmp_path / "fuzz.pkl")
    pd.to_pickle(df, path)
    try:
        columns = load_columns(path, use_cache=False)
    except DataError as error:
        assert "fuzz.pkl" in str(error)
        event("refused")
        return
    event("loaded")
    # Whatever loads must satisfy the schema.
    assert set(np.unique(columns.label)) <= {0.0, 1.0}
    assert columns.sequence.shape == (len(df), schema.SEQUENCE_TOTAL_WIDTH)
    for i, field in enumerate(schema.SEQUENCE_FIELDS):
        assert ((columns.lengths[:, i] >= 0) & (columns.lengths[:, i] <= field.width)).all()
        assert columns.sequence[:, schema.SEQUENCE_SLICES[i]].max(initial=0) <= field.max_id
    for i, field in enumerate(schema.STATIC_FIELDS):
        assert 0 <= columns.static[:, i].min() and columns.static[:, i].max() <= field.max_id
    np.testing.assert_array_equal(columns.label, df[schema.LABEL].astype(float).to_numpy())
