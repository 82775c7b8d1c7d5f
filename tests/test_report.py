"""Evaluation metrics against direct NumPy computations, and the files infer.py and the
trainer write."""
import json
import logging
import math
import os
import sys
import types

import numpy as np
import pandas as pd
import paddle
import pytest

from metaheac import atomic_files
import infer
from metaheac import metrics
from metaheac import report
from metaheac import schema
import trainer
from conftest import campaign_frame
from metaheac import training_curve
from utils.config import apply_overrides, load_yaml
from utils.save_load import save_model
from utils.utils_single import load_dy_model_class

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def pairwise_auc(labels, scores):
    """The chance that a random positive outscores a random negative, ties counting half."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    return ((pos[:, None] > neg) + 0.5 * (pos[:, None] == neg)).mean()


def test_auc_and_log_loss_match_their_definitions(rng):
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.uniform(0.01, 0.99, 300), 2)  # rounded: many ties
    np.testing.assert_allclose(metrics.auc(labels, scores), pairwise_auc(labels, scores),
                               rtol=1e-12)
    row = metrics.campaign_metrics(labels, scores, scores[::-1])
    expected_loss = -np.mean(labels * np.log(scores) + (1 - labels) * np.log(1 - scores))
    np.testing.assert_allclose(row["log_loss"], expected_loss, rtol=1e-12)
    np.testing.assert_allclose(row["auc_before"], pairwise_auc(labels, scores[::-1]), rtol=1e-12)
    assert row["positives"] == labels.sum() and row["positive_rate"] == labels.mean()
    assert math.isnan(metrics.auc([1, 1, 1], [0.2, 0.5, 0.9]))


def test_the_top_is_the_ceiling_of_five_percent():
    for n in range(1, 500):
        k = metrics.top_count(n)
        assert (k - 1) / n < 0.05 <= k / n, n


@pytest.mark.parametrize("n", [1, 19, 20, 21, 57, 200])
def test_precision_and_recall_at_the_top_count_hits_in_score_order(rng, n):
    labels = rng.integers(0, 2, n)
    scores = np.round(rng.random(n), 1)  # ties: the earlier candidate ranks first
    top = sorted(range(n), key=lambda i: (-scores[i], i))[:math.ceil(n * 0.05)]
    hits = sum(labels[i] for i in top)
    precision, recall = metrics.precision_recall_at_top(labels, scores)
    assert precision == hits / len(top)
    assert recall == hits / labels.sum() if labels.sum() else math.isnan(recall)


def campaign(aid, auc, rows, precision=0.5, recall=0.5):
    return {"aid": aid, "auc": auc, "auc_before": auc - 0.1, "candidate_rows": rows,
            metrics.PRECISION: precision, metrics.RECALL: recall}


def test_gauc_leaves_out_and_lists_one_class_campaigns():
    rows = [campaign(1, 0.9, 100, 0.2, 1.0), campaign(2, float("nan"), 50, 0.0, float("nan")),
            campaign(3, 0.6, 300, 0.4, 0.5)]
    summary = metrics.summarize(rows, pooled_auc=0.7)
    assert summary["campaigns"] == 3 and summary["two_class_campaigns"] == 2
    assert summary["one_class_campaigns"] == [2] and summary["candidate_rows"] == 450
    assert summary["gauc"] == pytest.approx(0.75)
    assert summary["gauc_row_weighted"] == pytest.approx((0.9 * 100 + 0.6 * 300) / 400)
    assert summary["gauc_before"] == pytest.approx(0.65)
    assert summary["mean_" + metrics.PRECISION] == pytest.approx(0.3)
    assert summary["mean_" + metrics.RECALL] == pytest.approx(0.75)


def test_an_interrupted_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = str(tmp_path / "out" / "metrics.json")
    atomic_files.write_json({"a": 1}, path)
    with pytest.raises(ValueError):  # an Infinity is no strict JSON: fails mid-write
        atomic_files.write_json({"a": float("inf")}, path)
    assert json.load(open(path)) == {"a": 1}
    assert os.listdir(tmp_path / "out") == ["metrics.json"]


# --- infer.py end to end, in process, on tiny data -----------------------------------

TINY = """
runner:
  train_data_dir: train
  test_data_dir: hot
  model_save_path: {models}
  infer_load_path: {models}
  print_interval: 1
  infer_train_epoch: 1
hyper_parameters:
  embed_dim: 4
  mlp_dims: [8]
  num_expert: 2
  num_output: 2
  task_count: 2
  batch_size: 8
"""


@pytest.fixture
def tiny(tmp_path, rng):
    """A config over tiny hot and cold test sets (campaign 3 has only negatives) and a
    checkpoint of an untrained model; returns (config path, model dir, frames)."""
    frames = {}
    for folder, seeds, candidates in (("hot", {1: 12, 2: 9, 3: 10}, {1: 30, 2: 41, 3: 6}),
                                      ("cold", {7: 8, 8: 20}, {7: 22, 8: 15})):
        seed_frame = campaign_frame(rng, seeds)
        candidate_frame = campaign_frame(rng, candidates, start_index=5000)
        candidate_frame.loc[candidate_frame[schema.AID] == 3, schema.LABEL] = 0
        os.makedirs(tmp_path / folder)
        seed_frame.to_pickle(str(tmp_path / folder / schema.TEST_SEED_FILE))
        candidate_frame.to_pickle(str(tmp_path / folder / schema.TEST_CANDIDATE_FILE))
        frames[folder] = candidate_frame
    os.makedirs(tmp_path / "train")
    train = campaign_frame(rng, {1: 20, 2: 20, 4: 20})
    train.to_pickle(str(tmp_path / "train" / schema.TRAIN_FILE))
    models = str(tmp_path / "models")
    config = tmp_path / "config.yaml"
    config.write_text(TINY.format(models=models))
    return str(config), models, frames


def checkpoint(config_path, models):
    config = apply_overrides(load_yaml(config_path), [])
    model = load_dy_model_class(config["config_abs_dir"]).create_model(config)
    save_model(model, None, models, 0)
    return model


def test_one_run_reports_hot_and_cold(tiny, capsys):
    config, models, frames = tiny
    model = checkpoint(config, models)
    results = infer.main(infer.parse_args(["-m", config, "-o", "runner.test_data_dirs=[hot,cold]"]))
    assert [r.name for r in results] == ["hot", "cold"]
    table = capsys.readouterr().out
    assert "| hot | 0 | 3 (1) |" in table and "| cold | 0 | 2 (0) |" in table
    out = os.path.join(models, "infer", "0")
    assert sorted(os.listdir(out)) == sorted(["metrics.json", "per_campaign.csv", "predictions.csv",
                                              *report.FIGURES])
    for figure in report.FIGURES:
        assert open(os.path.join(out, figure), "rb").read(8) == PNG_SIGNATURE

    predictions = pd.read_csv(os.path.join(out, "predictions.csv"))
    per_campaign = pd.read_csv(os.path.join(out, "per_campaign.csv"))
    for folder, frame in frames.items():
        mine = predictions[predictions.test_set == folder].set_index("row_id")
        # the audience rows are the source DataFrame's rows, with their labels
        assert sorted(mine.index) == sorted(frame.index)
        np.testing.assert_array_equal(mine.label.loc[frame.index], frame[schema.LABEL])
        for aid, part in mine.groupby("aid"):
            row = per_campaign.set_index(["test_set", "aid"]).loc[(folder, aid)]
            labels, scores = part.label.to_numpy(), part.score.to_numpy()
            assert row.candidate_rows == len(part)
            if labels.min() == labels.max():
                assert math.isnan(row.auc)
            else:
                np.testing.assert_allclose(row.auc, pairwise_auc(labels, scores), rtol=1e-6)

    with open(os.path.join(out, "metrics.json")) as f:
        saved = json.load(f)
    assert saved["checkpoint"] == os.path.join(models, "0")
    assert saved["config"]["runner.test_data_dirs"] == ["hot", "cold"]
    hot = saved["test_sets"][0]
    assert hot["summary"]["one_class_campaigns"] == [3] and hot["campaigns"][2]["auc"] is None
    # "before" is the checkpoint's own ranking of the candidates
    before = model(*[paddle.to_tensor(x) for x in _features(frames["hot"], 1)]).numpy()
    labels = frames["hot"][frames["hot"][schema.AID] == 1][schema.LABEL].to_numpy()
    np.testing.assert_allclose(hot["campaigns"][0]["auc_before"], pairwise_auc(labels, before),
                               rtol=1e-6)


def _features(frame, aid):
    part = frame[frame[schema.AID] == aid]
    sequence = np.concatenate([np.stack(part[c].to_numpy()) for c in schema.SEQUENCE_COLUMNS], 1)
    return [part[schema.STATIC_COLUMNS].to_numpy(), sequence,
            part[schema.LENGTH_COLUMNS].to_numpy(), part[schema.AD_COLUMNS].to_numpy()]


def test_the_single_test_folder_and_an_output_folder_still_work(tiny, tmp_path):
    config, models, _ = tiny
    checkpoint(config, models)
    out = str(tmp_path / "report")
    results = infer.main(infer.parse_args(["-m", config, "-o", "runner.infer_output_dir=" + out]))
    assert [r.name for r in results] == ["hot"]
    assert os.path.isfile(os.path.join(out, "0", "metrics.json"))


# --- the training curve ----------------------------------------------------------------


def test_training_writes_its_curve_and_says_how_to_get_visualdl(tiny, caplog, monkeypatch):
    config, models, _ = tiny
    monkeypatch.setitem(sys.modules, "visualdl", None)  # as if not installed
    with caplog.at_level(logging.WARNING):
        trainer.main(trainer.parse_args(["-m", config, "-o", "runner.use_visual=True"]))
    assert "pip install visualdl" in caplog.text
    curve = pd.read_csv(os.path.join(models, training_curve.CSV_NAME))
    assert list(curve.step) == list(range(len(curve))) and curve.meta_step.iloc[-1] == len(curve)
    np.testing.assert_allclose(curve["loss"], curve["mean_loss"], rtol=1e-6)  # interval of 1
    assert open(os.path.join(models, training_curve.PNG_NAME), "rb").read(8) == PNG_SIGNATURE


def test_visualdl_gets_the_curve_when_installed(tmp_path, monkeypatch):
    scalars = []

    class LogWriter:
        def __init__(self, logdir):
            self.logdir = logdir

        def add_scalar(self, tag, value, step):
            scalars.append((tag, value, step))

        def close(self):
            scalars.append("closed")

    monkeypatch.setitem(sys.modules, "visualdl", types.SimpleNamespace(LogWriter=LogWriter))
    curve = training_curve.TrainingCurve(str(tmp_path), use_visual=True)
    curve.record(0, 0, 1, 0.7, 0.7, float("nan"))
    curve.record(0, 1, 2, 0.5, 0.6, 0.55)
    curve.close()
    assert scalars == [("train/loss", 0.7, 1), ("train/loss", 0.6, 2), ("train/auc", 0.55, 2),
                       "closed"]
