"""Tests for tools/generate_data.py on the tiny preset."""
import os
import sys

import numpy as np
import pandas as pd
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (REPO_ROOT, os.path.join(REPO_ROOT, "tools")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import generate_data as gd  # noqa: E402
import schema  # noqa: E402

SPEC = gd.PRESETS["tiny"]
TEST_KEYS = [k for k in gd.FRAME_KEYS if k != "train"]


@pytest.fixture(scope="module")
def frames():
    return gd.generate(SPEC, seed=0)


@pytest.fixture(scope="module")
def everything(frames):
    return pd.concat(frames.values())


def _matrix(df, field):
    """The (rows, width) token matrix of a sequence column."""
    return np.stack(df[field.name].to_numpy()).reshape(len(df), field.width)


def _same(a, b):
    """Frame equality that compares array cells by value."""
    if list(a.columns) != list(b.columns) or not a.index.equals(b.index):
        return False
    flat = [c for c in a.columns if c not in schema.SEQUENCE_COLUMNS]
    if not a[flat].equals(b[flat]):
        return False
    return all(np.array_equal(_matrix(a, f), _matrix(b, f)) for f in schema.SEQUENCE_FIELDS)


def test_keys_and_size(frames):
    assert tuple(frames) == gd.FRAME_KEYS
    total = sum(len(df) for df in frames.values())
    assert 100 <= total <= 1000
    assert all(len(df) > 0 for df in frames.values())


def test_columns_and_dtypes(frames):
    for df in frames.values():
        assert list(df.columns) == schema.ALL_COLUMNS
        for name in schema.ALL_COLUMNS:
            expected = object if name in schema.SEQUENCE_COLUMNS else np.int64
            assert df[name].dtype == expected, name
        assert df.index.dtype == np.int64
        for f in schema.SEQUENCE_FIELDS:
            cells = df[f.name].to_numpy()
            assert all(isinstance(c, np.ndarray) and c.dtype == np.int64 and c.shape == (f.width,)
                       for c in cells), f.name


def test_ids_within_vocabulary(everything):
    assert set(everything[schema.LABEL].unique()) <= {0, 1}
    for f in schema.STATIC_FIELDS + schema.AD_FIELDS:
        assert everything[f.name].between(0, f.max_id).all(), f.name
    for f in schema.SEQUENCE_FIELDS:
        tokens = _matrix(everything, f)
        assert tokens.min() >= 0 and tokens.max() <= f.max_id, f.name
        assert everything[f.length_column].between(0, f.width).all(), f.name


def test_padding_after_length(everything):
    for f in schema.SEQUENCE_FIELDS:
        tokens = _matrix(everything, f)
        after = np.arange(f.width) >= everything[f.length_column].to_numpy()[:, None]
        assert (tokens[after] == gd.PAD_ID[f.name]).all(), f.name
        assert (tokens[~after] != gd.PAD_ID[f.name]).all(), f.name
        assert 0 <= gd.PAD_ID[f.name] <= f.max_id


def test_ad_fields_constant_within_aid(everything):
    per_aid = everything.groupby(schema.AID)[schema.AD_COLUMNS].nunique()
    assert (per_aid == 1).all().all()


def test_row_ids_unique_across_files(everything):
    assert everything.index.is_unique


def test_campaign_split(frames):
    train = set(frames["train"][schema.AID])
    hot = set(frames["test_hot_stage1"][schema.AID])
    cold = set(frames["test_cold_stage1"][schema.AID])
    assert len(train) == SPEC.n_train and len(hot) + len(cold) == SPEC.n_test
    assert not (train & hot or train & cold or hot & cold)
    assert set(frames["test_hot_stage2"][schema.AID]) == hot
    assert set(frames["test_cold_stage2"][schema.AID]) == cold


def test_hot_cold_threshold(frames):
    for kind, is_hot in (("hot", True), ("cold", False)):
        both = pd.concat([frames[f"test_{kind}_stage1"], frames[f"test_{kind}_stage2"]])
        positives = both.groupby(schema.AID)[schema.LABEL].sum()
        assert ((positives > SPEC.hot_threshold) == is_hot).all(), kind


def test_each_stage_has_both_classes(frames):
    for key in TEST_KEYS:
        classes = frames[key].groupby(schema.AID)[schema.LABEL].nunique()
        assert (classes == 2).all(), key


def test_stage2_volume(frames):
    for kind in ("hot", "cold"):
        n1 = frames[f"test_{kind}_stage1"].groupby(schema.AID).size()
        n2 = frames[f"test_{kind}_stage2"].groupby(schema.AID).size()
        ratio = n2 / n1
        assert ratio.between(0.1, 0.6).all(), kind


def test_positive_rate(everything):
    rate = everything[schema.LABEL].mean()
    assert SPEC.positive_rate / 2 <= rate <= SPEC.positive_rate * 2


def test_reproducible(frames):
    again = gd.generate(SPEC, seed=0)
    assert all(_same(frames[k], again[k]) for k in gd.FRAME_KEYS)
    other = gd.generate(SPEC, seed=1)
    assert not _same(frames["train"], other["train"])


def test_write_layout_round_trip(frames, tmp_path):
    paths = gd.write_paddlerec_layout(frames, str(tmp_path))
    assert paths["train"] == os.path.join(str(tmp_path), "train", schema.TRAIN_FILE)
    assert paths["test_hot_stage1"] == os.path.join(str(tmp_path), "test", schema.TEST_SEED_FILE)
    assert paths["test_cold_stage2"] == os.path.join(str(tmp_path), "test_cold", schema.TEST_CANDIDATE_FILE)
    for key, path in paths.items():
        assert _same(pd.read_pickle(path), frames[key]), key
    leftovers = [n for _, _, names in os.walk(tmp_path) for n in names if not n.endswith(".pkl")]
    assert leftovers == []


def test_cli(tmp_path, capsys):
    gd.main(["--preset", "tiny", "--seed", "3", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "elapsed" in out
    assert os.path.exists(os.path.join(str(tmp_path), "test", schema.TEST_CANDIDATE_FILE))
