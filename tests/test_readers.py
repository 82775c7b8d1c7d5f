import logging

import numpy as np
import pytest

import reader_test
import reader_train
from metaheac import schema
from conftest import campaign_frame, frame, tables_own_ids, train_config, write_frame
from metaheac.data_files import DataError


def test_train_batches_have_the_upstream_shapes(tmp_path, rng):
    path = write_frame(frame(rng, 30), str(tmp_path / "train_stage1.pkl"))
    data = reader_train.RecDataset([path], train_config())
    batches = list(data)
    assert len(batches) == int(np.ceil(30 / 4)) == data.batches_per_epoch
    support_x, support_y, query_x, query_y, task_rows = batches[0]
    assert [x.shape for x in support_x] == [(3, 4, 7), (3, 4, 50), (3, 4, 7), (3, 4, 6)]
    assert [x.shape for x in query_x] == [x.shape for x in support_x]
    assert support_y.shape == query_y.shape == (3, 4)
    # Per task, the rows of each of the 20 tables it reads; its ids index them stacked.
    assert [len(rows) for rows in task_rows] == [20] * 3
    for task, rows in enumerate(task_rows):
        used = sum(len(r) for r in rows)
        assert all(np.all(np.diff(r) > 0) for r in rows)
        for x in (support_x, query_x):
            assert {x[k][task].max() for k in (0, 1, 3)} <= set(range(used))


def test_each_task_is_one_campaign_and_rows_are_consistent(tmp_path, rng):
    df = campaign_frame(rng, {10: 20, 11: 20, 12: 20})
    data = reader_train.RecDataset([write_frame(df, str(tmp_path / "a.pkl"))], train_config())
    by_key = {tuple(r): label for r, label in zip(
        np.concatenate([data.data.static, data.data.sequence, data.data.lengths, data.data.ad], 1),
        data.data.label)}
    for batch in data:
        (support_x, _), support_y = tables_own_ids(batch), batch[1]
        for task in range(3):
            assert len(np.unique(support_x[3][task], axis=0)) == 1  # one campaign's ad fields
            rows = np.concatenate([x[task] for x in support_x], axis=1)
            for row, label in zip(rows, support_y[task]):
                assert by_key[tuple(row)] == label


def test_campaigns_are_drawn_in_proportion_to_their_rows(tmp_path, rng):
    sizes = {1: 10, 2: 30, 3: 60}
    df = campaign_frame(rng, sizes)
    config = train_config(batch_size=2, task_count=5)
    data = reader_train.RecDataset([write_frame(df, str(tmp_path / "a.pkl"))], config)
    ad_to_aid = {tuple(a): aid for a, aid in zip(data.data.ad, data.data.aid)}
    counts = {aid: 0 for aid in sizes}
    for _ in range(40):
        for batch in data:
            support_x = tables_own_ids(batch)[0]
            for task in range(5):
                counts[ad_to_aid[tuple(support_x[3][task][0])]] += 1
    total = sum(counts.values())  # 40 epochs x 50 batches x 5 tasks = 10,000 draws
    for aid, size in sizes.items():
        expected = size / 100
        assert abs(counts[aid] / total - expected) < 4 * np.sqrt(expected * (1 - expected) / total)


def test_epochs_differ_and_runs_repeat(tmp_path, rng):
    # Upstream re-seeded in __iter__, so every epoch replayed the same tasks.
    path = write_frame(frame(rng, 40, aids=4), str(tmp_path / "a.pkl"))

    def two_epochs():
        data = reader_train.RecDataset([path], train_config())
        return [np.concatenate([tables_own_ids(b)[0][1].ravel() for b in data])
                for _ in range(2)]

    first_run, second_run = two_epochs(), two_epochs()
    assert not np.array_equal(first_run[0], first_run[1])
    for a, b in zip(first_run, second_run):
        np.testing.assert_array_equal(a, b)


def test_every_pkl_file_is_read_in_sorted_order(tmp_path, rng):
    b = write_frame(campaign_frame(rng, {2: 5}, 50), str(tmp_path / "b.pkl"))
    a = write_frame(campaign_frame(rng, {1: 7}), str(tmp_path / "a.pkl"))
    (tmp_path / "notes.txt").write_text("not data")
    data = reader_train.RecDataset([b, str(tmp_path / "notes.txt"), a], train_config())
    assert len(data.data) == 12 and list(data.aids) == [1, 2]
    assert list(data.data.row_id[:7]) == list(range(7))


def test_small_campaigns_are_sampled_with_replacement(tmp_path, rng, caplog):
    df = campaign_frame(rng, {1: 3, 2: 50})
    with caplog.at_level(logging.WARNING):
        data = reader_train.RecDataset([write_frame(df, str(tmp_path / "a.pkl"))],
                                       train_config(batch_size=8))
    assert "fewer rows than batch_size=8" in caplog.text and "[1]" in caplog.text
    assert all(b[1].shape == (3, 8) for b in data)


def test_no_training_files_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no training data files"):
        reader_train.RecDataset([str(tmp_path / "x.txt")], train_config())


def test_reader_yields_one_campaign_at_a_time(tmp_path, rng, caplog):
    seeds = campaign_frame(rng, {5: 9, 3: 6, 8: 4})
    candidates = campaign_frame(rng, {3: 5, 5: 7, 9: 2}, start_index=1000)
    files = [write_frame(seeds, str(tmp_path / schema.TEST_SEED_FILE)),
             write_frame(candidates, str(tmp_path / schema.TEST_CANDIDATE_FILE))]
    with caplog.at_level(logging.WARNING):
        data = reader_test.RecDataset(files, {"runner.seed": 1})
    assert "aids [8]" in caplog.text and "aids [9]" in caplog.text
    out = list(data)
    assert [int(c[0][0]) for c in out] == [3, 5] and len(data) == 2
    for aid, seed_x, seed_y, cand_x, cand_y, cand_ids in out:
        aid = int(aid[0])
        expected_seed = seeds[seeds.aid == aid]
        assert len(seed_y) == len(expected_seed) and seed_x[1].shape == (len(seed_y), 50)
        assert sorted(seed_x[0][:, 0]) == sorted(expected_seed.carrier)
        expected_cand = candidates[candidates.aid == aid]
        np.testing.assert_array_equal(cand_ids["row_id"], expected_cand.index)
        assert "uid" not in cand_ids  # the file has no uid column
        np.testing.assert_array_equal(cand_y, expected_cand.label)
        np.testing.assert_array_equal(cand_x[0], expected_cand[schema.STATIC_COLUMNS].to_numpy())
    first_seed_order = out[1][1][0][:, 0].tolist()
    assert first_seed_order == [c for c in list(data)][1][1][0][:, 0].tolist()


def test_reader_requires_both_stages(tmp_path, rng):
    path = write_frame(frame(rng), str(tmp_path / schema.TEST_SEED_FILE))
    with pytest.raises(DataError, match="missing \\['test_stage2'\\]"):
        reader_test.RecDataset([path], {})
