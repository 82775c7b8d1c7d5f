"""A run whose loss stops being finite stops cleanly; a diverging campaign is reported as failed."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import paddle
import paddle.nn.functional as F
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from conftest import ROOT
from dygraph_model import DygraphModel
import infer
import maml
from metaheac import report
from utils.config import load_config
from utils.divergence import LossWatch, TrainingDiverged, check_parameters
from utils.save_load import save_model
from utils.utils_single import create_dataset

SAMPLE = os.path.join(ROOT, "config.yaml")
# Adam steps of this size overflow the float32 weights' products: the sample diverges at once.
ABSURD_RATE = "1e38"


def test_the_guarded_loss_is_paddles_bit_for_bit_on_finite_predictions(rng):
    scores = np.concatenate([rng.uniform(0, 1, 200), [0.0, 1.0, 1e-30, 1 - 1e-7]])
    labels = paddle.to_tensor(rng.integers(0, 2, len(scores)).astype("float32"))
    results = []
    for loss_of in (maml.bce, F.binary_cross_entropy):
        prediction = paddle.to_tensor(scores.astype("float32"), stop_gradient=False)
        loss = loss_of(prediction, labels)
        (grad,) = paddle.grad(loss, [prediction])
        results.append((loss.numpy(), grad.numpy()))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_a_non_finite_prediction_makes_the_loss_nan_not_an_error():
    for bad in (float("nan"), float("inf")):
        prediction = paddle.to_tensor([0.2, bad, 0.7])
        with pytest.raises(ValueError):  # what Paddle's own loss does
            F.binary_cross_entropy(prediction, paddle.to_tensor([0.0, 1.0, 1.0]))
        assert np.isnan(float(maml.bce(prediction, paddle.to_tensor([0.0, 1.0, 1.0]))))


def test_the_watch_names_the_first_non_finite_step_and_its_campaigns():
    watch = LossWatch()
    for step, loss in enumerate([0.7, 0.6]):
        watch.record(2, step, paddle.to_tensor(loss), [step, 9])
    watch.check()  # all finite
    for step, loss in [(2, 0.5), (3, float("inf")), (4, float("nan"))]:
        watch.record(2, step, paddle.to_tensor([loss]), [step, 9])
    with pytest.raises(TrainingDiverged, match=r"^epoch 2, step 3: the loss is inf on the "
                                               r"meta-batch of campaigns \(aids\) \[3, 9\]; "):
        watch.check()
    watch.check()  # what was checked is not looked at again


def test_non_finite_weights_are_never_saved():
    net = paddle.nn.Linear(2, 3)
    check_parameters(net, epoch=0)
    net.bias.set_value(paddle.to_tensor([0.0, float("nan"), 0.0]))
    with pytest.raises(TrainingDiverged, match=r"^epoch 4: parameter\(s\) \['.*bias.*'\] are "
                                               r"not finite"):
        check_parameters(net, epoch=4)


def test_a_diverging_run_stops_and_leaves_the_good_checkpoint_as_it_was(tmp_path):
    config = load_config(SAMPLE)
    model_class = DygraphModel()
    model = model_class.create_model(config)
    save_model(model, model_class.create_optimizer(model, config), str(tmp_path), 0)
    files = {name: (tmp_path / "0" / name).read_bytes() for name in ("rec.pdparams", "rec.pdopt")}
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools/trainer.py"), "-m", SAMPLE, "-o",
         "hyper_parameters.optimizer.global_learning_rate=" + ABSURD_RATE,
         "runner.model_save_path=%s" % tmp_path], cwd=ROOT, capture_output=True, text=True,
        timeout=300)
    log = result.stdout + result.stderr
    assert result.returncode == 2, log[-2000:]
    assert "Traceback" not in log
    last = log.strip().splitlines()[-1]
    found = re.search(r" - epoch 0, step (\d+): the loss is nan on the meta-batch of campaigns "
                      r"\(aids\) \[\d+, \d+, \d+, \d+, \d+\]; training stopped before saving", last)
    assert found, log[-2000:]
    assert 1 <= int(found.group(1)) <= 20  # after the finite step 0, before the next log line
    assert {name: (tmp_path / "0" / name).read_bytes() for name in files} == files
    assert sorted(os.listdir(tmp_path)) == ["0", "training_curve.csv"]


@pytest.fixture(scope="module")
def hot_campaigns():
    config = load_config(SAMPLE, ["runner.infer_train_epoch=1"])
    paddle.seed(1)
    model_class = DygraphModel()
    net = model_class.create_model(config)
    net.eval()
    return model_class, net, config, create_dataset(config, mode="test")


def test_a_campaign_whose_fine_tuning_diverges_is_reported_failed_the_others_go_on(
        hot_campaigns, monkeypatch, tmp_path):
    model_class, net, config, dataset = hot_campaigns
    clean = infer.evaluate(model_class, net, dataset, config, 0, "hot")
    calls = []
    adapt_and_score = infer.adapt_and_score

    def second_campaign_diverges(model_class, net, config, *arrays, **options):
        calls.append(len(calls))
        if len(calls) == 2:
            config = dict(config, **{
                "hyper_parameters.optimizer.local_test_learning_rate": float(ABSURD_RATE)})
        return adapt_and_score(model_class, net, config, *arrays, **options)

    monkeypatch.setattr(infer, "adapt_and_score", second_campaign_diverges)
    result = infer.evaluate(model_class, net, dataset, config, 0, "hot")
    failed = result.campaigns[1]
    assert failed["failed"].startswith("fine-tuning diverged: %d of %d candidate scores are not "
                                       "finite" % ((failed["candidate_rows"],) * 2))
    assert np.isnan(failed["auc"]) and failed["auc_before"] == clean.campaigns[1]["auc_before"]
    others = [c for i, c in enumerate(result.campaigns) if i != 1]
    # the fixed schedule's validation_auc is NaN, which equals nothing: compare it as text
    assert repr(others) == repr([c for i, c in enumerate(clean.campaigns) if i != 1])
    assert result.summary["failed_campaigns"] == [failed["aid"]]
    assert failed["aid"] not in result.summary["one_class_campaigns"]
    assert result.summary["campaigns"] == len(clean.campaigns)
    kept = result.predictions[result.predictions["aid"] != failed["aid"]]
    assert result.pooled_auc == pytest.approx(roc_auc_score(kept["label"], kept["score"]))

    report.write(str(tmp_path), config, "checkpoint", [result])
    table = pd.read_csv(tmp_path / "per_campaign.csv")
    assert table["failed"].notna().tolist() == [i == 1 for i in range(len(table))]
    summary = json.loads((tmp_path / "metrics.json").read_text())["test_sets"][0]["summary"]
    assert summary["failed_campaigns"] == [failed["aid"]]
