"""Train and infer through the command lines, as a user runs them."""
import os
import re
import subprocess
import sys

import pandas as pd
import pytest

from conftest import ROOT, SHARED_FIXTURE

import generate_data


def run(script, config, *overrides):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, script), "-m", config, "-o", *overrides],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def pooled_auc(log):
    return float(re.findall(r"pooled AUC: ([0-9.]+)", log)[-1])


def test_train_then_infer_beats_chance_on_generated_data(tmp_path):
    data = tmp_path / "data"
    generate_data.write_paddlerec_layout(
        generate_data.generate(generate_data.PRESETS["sample"], seed=99), str(data))
    models = str(tmp_path / "models")
    config = os.path.join(ROOT, "config.yaml")
    log = run("tools/trainer.py", config, "runner.train_data_dir=%s" % (data / "train"),
              "runner.model_save_path=%s" % models, "runner.epochs=2")
    assert re.search(r"epoch: 0, step: 0/\d+, AUC: [0-9.na]+, loss: [0-9.]+, "
                     r"avg_reader_cost: [0-9.]+ sec, avg_batch_cost: [0-9.]+ sec, ips: [0-9.]+ samples/s",
                     log), log[-2000:]
    for epoch in (0, 1):
        for suffix in ("pdparams", "pdopt"):
            assert os.path.isfile(os.path.join(models, str(epoch), "rec." + suffix))
    aucs = []
    for test_dir in ("test", "test_cold"):
        log = run("infer.py", config, "runner.test_data_dir=%s" % (data / test_dir),
                  "runner.infer_load_path=%s" % models)
        assert re.search(r"campaign 1/\d+, aid: \d+, seed rows: \d+, candidates: \d+", log)
        aucs.append(pooled_auc(log))
    assert min(aucs) > 0.6, aucs
    # One run evaluates both folders, with the same numbers, and prints their table.
    log = run("infer.py", config, "runner.test_data_dirs=[%s,%s]" % (data / "test", data / "test_cold"),
              "runner.infer_load_path=%s" % models)
    table = re.findall(r"^\| \S+/(test|test_cold) \| 0 \| \d+ \(\d+\) \| ([0-9.]+) \|", log, re.M)
    assert [(name, round(float(auc), 4)) for name, auc in table] == \
        [("test", round(aucs[0], 4)), ("test_cold", round(aucs[1], 4))], log[-1500:]
    assert os.path.isfile(os.path.join(models, "infer", "0", "metrics.json"))
    predictions = pd.read_csv(os.path.join(models, "infer", "0", "predictions.csv"))
    assert (predictions.uid == predictions.row_id + 1).all()  # the generator's uid, carried
    assert os.path.isfile(os.path.join(models, "training_curve.png"))


@pytest.mark.skipif(not os.path.exists(SHARED_FIXTURE), reason="../shared is not present")
def test_training_on_the_legacy_upstream_sample_runs(tmp_path):
    log = run("tools/trainer.py", os.path.join(ROOT, "config.yaml"),
              "runner.train_data_dir=%s" % os.path.dirname(SHARED_FIXTURE),
              "runner.model_save_path=%s" % tmp_path, "hyper_parameters.batch_size=4",
              "runner.epochs=1")
    assert "AUC: nan" in log  # every label is 1: the AUC is undefined, not an error
    assert os.path.isfile(os.path.join(str(tmp_path), "0", "rec.pdparams"))


def test_gpu_request_on_a_cpu_build_falls_back_with_a_message(tmp_path):
    # Without training data the run stops (status 2) just after choosing the device.
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools/trainer.py"), "-m",
         os.path.join(ROOT, "config.yaml"), "-o", "runner.use_gpu=True",
         "runner.train_data_dir=%s" % (tmp_path / "none")],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "running on the CPU" in result.stdout + result.stderr


def test_bad_override_exits_with_one_clear_line(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools/trainer.py"), "-m",
         os.path.join(ROOT, "config.yaml"), "-o", "runner.epoch=2"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "did you mean 'runner.epochs'" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
