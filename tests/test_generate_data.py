"""Tests for tools/generate_data.py, mostly on the tiny preset."""
import os

import numpy as np
import pandas as pd
import pytest

from metaheac import data_files, layout
import generate_data as gd
from metaheac import schema
from conftest import ROOT

SPEC = gd.PRESETS["tiny"]
TEST_KEYS = [k for k in layout.FRAME_KEYS if k != "train"]


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
    assert tuple(frames) == layout.FRAME_KEYS
    total = sum(len(df) for df in frames.values())
    assert 100 <= total <= 1000
    assert all(len(df) > 0 for df in frames.values())


def test_columns_and_dtypes(frames):
    for df in frames.values():
        assert list(df.columns) == schema.ALL_COLUMNS + [schema.UID]
        np.testing.assert_array_equal(df[schema.UID], df.index + 1)
        for name in schema.ALL_COLUMNS + [schema.UID]:
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
    assert all(_same(frames[k], again[k]) for k in layout.FRAME_KEYS)
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


def test_sample_preset_still_draws_the_shipped_data():
    frames = gd.generate(gd.PRESETS["sample"], seed=2021)
    for key, path in layout.layout_paths(os.path.join(ROOT, "data")).items():
        assert _same(pd.read_pickle(path), frames[key]), key


def test_chunks_hold_whole_campaigns_and_keep_their_guarantees():
    sizes = gd._make_world(SPEC, np.random.default_rng(0))["sizes"]
    chunks = gd._campaign_chunks(sizes, 60)
    assert len(chunks) > 2 and chunks[0][0] == 0 and chunks[-1][1] == len(sizes)
    assert all(previous[1] == following[0] for previous, following in zip(chunks, chunks[1:]))
    d = gd.draw(SPEC, seed=0, chunk_rows=60)
    label, aid = d.columns[schema.LABEL], d.columns[schema.AID]
    for key, rows in gd.split_rows(d).items():
        if key != "train":
            assert (pd.Series(label[rows]).groupby(aid[rows]).nunique() == 2).all(), key
    np.testing.assert_array_equal(d.hot, np.bincount(aid, weights=label) > SPEC.hot_threshold)


def test_storage_types_hold_every_id():
    d = gd.draw(SPEC, seed=0)
    for f in schema.STATIC_FIELDS + schema.SEQUENCE_FIELDS + schema.AD_FIELDS:
        assert np.iinfo(d.columns[f.name].dtype).max >= f.max_id, f.name


def test_streamed_pickle_reads_back_as_the_same_frame(frames, tmp_path, monkeypatch):
    monkeypatch.setattr(data_files, "TO_PICKLE_MAX_ROWS", 0)
    monkeypatch.setattr(data_files, "CELL_BATCH", 7)  # several batches per column
    frame = frames["train"]
    columns = {name: np.stack(frame[name].to_numpy()) if name in schema.SEQUENCE_COLUMNS
               else frame[name].to_numpy().astype(np.int32) for name in schema.ALL_COLUMNS + [schema.UID]}
    path = str(tmp_path / "streamed.pkl")
    data_files.write_frame(path, columns, frame.index.to_numpy())
    assert _same(pd.read_pickle(path), frame)
    loaded = data_files.load_columns(path, use_cache=False)  # the project's restricted unpickler
    first = schema.SEQUENCE_FIELDS[0]
    np.testing.assert_array_equal(loaded.sequence[:, schema.SEQUENCE_SLICES[0]], _matrix(frame, first))
    np.testing.assert_array_equal(loaded.row_id, frame.index.to_numpy())


def test_full_preset_matches_the_authors_data():
    spec = gd.PRESETS["full"]
    world = gd._make_world(spec, np.random.default_rng(2021))  # sizes only: no rows drawn
    sizes, is_test, rate = world["sizes"], world["is_test"], world["rate"]
    assert len(sizes) == 173 and (~is_test).sum() == 86
    assert 4.0e6 <= sizes[~is_test].sum() <= 4.8e6
    seed_rows = np.where(is_test, sizes / (1 + spec.stage2_fraction), sizes)
    seeds = seed_rows * rate  # expected positive stage-1 rows
    assert (seeds <= 2000).mean() > 0.55 and (seeds > 14000).any()
    assert 0.04 <= (sizes * rate).sum() / sizes.sum() <= 0.06
    assert spec.hot_threshold == 4000 and gd.DEFAULT_LAYOUT["full"] == "lookalike"


def test_threshold_and_layout_flags(tmp_path):
    gd.main(["--preset", "tiny", "--seed", "3", "--out", str(tmp_path), "--threshold", "100000",
             "--layout", "lookalike"])
    paths = layout.layout_paths(str(tmp_path), "lookalike")
    assert paths["train"] == os.path.join(str(tmp_path), "train_data", schema.TRAIN_FILE)
    assert paths["test_hot_stage1"] == os.path.join(str(tmp_path), "test_hot_data", schema.TEST_SEED_FILE)
    assert len(pd.read_pickle(paths["test_hot_stage1"])) == 0  # no campaign has that many positives
    cold = pd.read_pickle(paths["test_cold_stage1"])[schema.AID].nunique()
    assert cold == SPEC.n_test


def test_raw_files(tmp_path):
    d = gd.draw(SPEC, seed=0)
    paths = gd.write_raw(d, str(tmp_path))
    ads = pd.read_csv(paths["ads"])
    assert list(ads.columns) == gd.RAW_AD_COLUMNS and list(ads["aid"]) == list(range(1, len(d.is_test) + 1))
    seeds = pd.read_csv(paths["seeds"])
    candidates = pd.read_csv(paths["candidates"], header=None, names=["aid", "uid", "label"])
    assert list(seeds.columns) == ["aid", "uid", "label"]
    assert set(seeds["label"]) == {1, -1} and set(candidates["label"]) == {1, -1}
    assert len(seeds) + len(candidates) == len(d.row_id) and len(candidates) == d.stage2.sum()
    assert (candidates["label"] == 1).sum() == d.columns[schema.LABEL][d.stage2].sum()

    with open(paths["users"]) as f:
        lines = f.read().splitlines()
    assert len(lines) == len(d.row_id)
    row = int(np.flatnonzero(d.row_id == 4)[0])  # uid 5
    fields = dict(field.split(" ", 1) for field in lines[4].split("|"))
    assert fields["uid"] == "5"
    for f in schema.STATIC_FIELDS:
        assert int(fields[f.name]) == d.columns[f.name][row]
    for f in schema.SEQUENCE_FIELDS:
        length = d.columns[f.length_column][row]
        tokens = [int(t) for t in fields[f.name].split()] if f.name in fields else []
        assert tokens == list(d.columns[f.name][row, :length]), f.name
