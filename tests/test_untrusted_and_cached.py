"""Pickles that try to run code, the columnar cache, and the pickle-free .npz form."""
import logging
import os
import pickle

import numpy as np
import pytest

from metaheac import data_files
import reader_test
import reader_train
from metaheac import schema
from conftest import frame, write_frame
from metaheac.data_files import DataError, load_columns
from convert_data import convert


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, ("touch %s" % self.marker,))


def test_a_pickle_that_calls_os_system_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"frame": _RunsCode(str(marker))}))
    with pytest.raises(DataError, match=r"evil.pkl: .*refused to load (posix|os)\.system"):
        load_columns(str(path))
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # the same file run by plain pickle does run code
    assert marker.exists()


def test_a_truncated_pickle_is_named(tmp_path, rng):
    path = write_frame(frame(rng), str(tmp_path / "t.pkl"))
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(DataError, match="t.pkl: not a readable pickled DataFrame"):
        load_columns(path)


def test_nan_and_float_columns(tmp_path, rng):
    df = frame(rng)
    df["age"] = df["age"].astype(float)  # integral floats are fine
    np.testing.assert_array_equal(load_columns(write_frame(df, str(tmp_path / "a.pkl"))).static[:, 3],
                                  df["age"].astype(int))
    df.loc[df.index[4], "age"] = np.nan
    with pytest.raises(DataError, match="'age' has a missing value \\(NaN\\) at row 104"):
        load_columns(write_frame(df, str(tmp_path / "b.pkl")))


def cache_file(path):
    return os.path.join(os.path.dirname(path), data_files.CACHE_DIR, os.path.basename(path) + ".npz")


def test_the_cache_is_built_once_used_and_rebuilt_when_the_source_changes(tmp_path, rng, monkeypatch):
    path = write_frame(frame(rng), str(tmp_path / "a.pkl"))
    first = load_columns(path)
    assert os.path.isfile(cache_file(path))
    monkeypatch.setattr(data_files, "read_frame", lambda p: pytest.fail("cache not used"))
    cached = load_columns(path)
    for name in ("label", "aid", "static", "sequence", "lengths", "ad", "row_id"):
        np.testing.assert_array_equal(getattr(cached, name), getattr(first, name))
    monkeypatch.undo()
    changed = frame(rng, rows=5)
    write_frame(changed, path)
    assert len(load_columns(path)) == 5


def test_an_unwritable_folder_still_loads(tmp_path, rng, caplog, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(data_files, "save_columnar", refuse)  # as in a read-only folder
    path = write_frame(frame(rng), str(tmp_path / "a.pkl"))
    with caplog.at_level(logging.WARNING):
        assert len(load_columns(path)) == 12
    assert "could not cache" in caplog.text and "Permission denied" in caplog.text


def test_converted_npz_loads_without_pickle_and_readers_take_it(tmp_path, rng):
    seeds, candidates = frame(rng, 20), frame(rng, 10)
    seeds["aid"] = candidates["aid"] = 1
    source = tmp_path / "pkl"
    converted = tmp_path / "npz"
    for df, name in ((seeds, schema.TEST_SEED_FILE), (candidates, schema.TEST_CANDIDATE_FILE)):
        convert(write_frame(df, str(source / name)), str(converted))
    assert sorted(os.listdir(converted)) == ["test_stage1.npz", "test_stage2.npz"]
    from_npz = list(reader_test.RecDataset([str(p) for p in converted.iterdir()], {}))
    from_pkl = list(reader_test.RecDataset([str(p) for p in source.iterdir()], {}))
    for a, b in zip(from_npz[0][3] + [from_npz[0][4]], from_pkl[0][3] + [from_pkl[0][4]]):
        np.testing.assert_array_equal(a, b)
    train = reader_train.RecDataset([str(converted / "test_stage1.npz")],
                                    {"hyper_parameters.batch_size": 4})
    assert len(train.data) == 20


def test_a_folder_with_both_forms_of_one_file_is_refused(tmp_path, rng):
    path = write_frame(frame(rng), str(tmp_path / "train_stage1.pkl"))
    convert(path)
    with pytest.raises(DataError, match="both .*train_stage1.pkl and .*train_stage1.npz"):
        reader_train.RecDataset([str(p) for p in tmp_path.iterdir()], {})


def test_npz_ids_are_checked_against_the_config(tmp_path, rng):
    path = convert(write_frame(frame(rng), str(tmp_path / "a.pkl")))
    small = [[0] * 7, [0] * 7, [0] * 6]
    with pytest.raises(DataError, match="a.npz: column 'carrier' has id"):
        load_columns(path, small)
