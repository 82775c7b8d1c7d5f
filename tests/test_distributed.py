"""Data-parallel training and sharded inference under ``paddle.distributed.launch`` (2 CPU ranks).

Two ranks must give what one process gives: training with ``task_count`` 2 per rank
equals one process with ``task_count`` 4 on the same tasks, and inference gives the
same metrics and predictions.
"""
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest

import infer
import reader_train
from metaheac import schema
import trainer
from conftest import ROOT, campaign_frame
from utils import distributed
from metaheac import settings
from utils.config import ConfigError, apply_overrides, load_yaml
from utils.save_load import save_model
from utils.utils_single import create_data_loader, load_dy_model_class

LAUNCH_TIMEOUT = 120

CONFIG = """
runner:
  train_data_dir: train
  test_data_dirs: [hot, cold]
  model_save_path: {models}
  infer_load_path: {models}
  print_interval: 1
  infer_train_epoch: 2
  use_fleet: True
hyper_parameters:
  embed_dim: 4
  mlp_dims: [8]
  num_expert: 2
  num_output: 2
  task_count: 2
  batch_size: 8
"""


@pytest.fixture
def setup(tmp_path, rng):
    """A config over small train, hot and cold folders; returns (config path, model dir)."""
    train = campaign_frame(rng, {1: 40, 2: 60, 3: 30, 4: 50})
    os.makedirs(tmp_path / "train")
    train.to_pickle(str(tmp_path / "train" / schema.TRAIN_FILE))
    # Campaign 1 outweighs 2 and 3 together, so the ranks' shares are uneven; campaign 3
    # has one class.
    for folder, seeds, candidates in (("hot", {1: 40, 2: 9, 3: 10}, {1: 30, 2: 41, 3: 6}),
                                      ("cold", {7: 8, 8: 20}, {7: 22, 8: 15})):
        os.makedirs(tmp_path / folder)
        candidate_frame = campaign_frame(rng, candidates, start_index=5000)
        candidate_frame.loc[candidate_frame[schema.AID] == 3, schema.LABEL] = 0
        campaign_frame(rng, seeds).to_pickle(str(tmp_path / folder / schema.TEST_SEED_FILE))
        candidate_frame.to_pickle(str(tmp_path / folder / schema.TEST_CANDIDATE_FILE))
    models = str(tmp_path / "models")
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(models=models))
    return str(config), models


def launch(script, config, log_dir, *overrides):
    """Run `script` as 2 ranks; returns (exit code, {rank: worker log})."""
    command = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
               "--log_dir", str(log_dir), os.path.join(ROOT, script), "-m", config,
               "-o", *overrides]
    launcher = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        launcher.wait(timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        pass
    finally:
        _stop(launcher)
    logs = {rank: (log_dir / ("workerlog.%d" % rank)).read_text() for rank in (0, 1)
            if (log_dir / ("workerlog.%d" % rank)).exists()}
    return launcher.returncode, logs


def _stop(launcher):
    """End the launcher and its workers (each worker leads its own process group)."""
    if launcher.poll() is not None:
        return
    workers = _children(launcher.pid)
    launcher.terminate()  # the launcher stops its workers on SIGTERM
    try:
        launcher.wait(timeout=10)
    except subprocess.TimeoutExpired:
        launcher.kill()
        launcher.wait()
    for pid in workers:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _children(pid):
    children = []
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.isdigit() and int(fields[1]) == pid:
            children.append(int(entry))
    return children


def succeeded(code, logs):
    assert code == 0, "launcher exit code %s\n%s" % (code, "\n".join(
        "--- workerlog.%d ---\n%s" % (rank, log[-3000:]) for rank, log in logs.items()))


def read_config(path, *overrides):
    return apply_overrides(load_yaml(path), list(overrides))


# --- the reader: ranks split the one-process meta-batch -------------------------------


def test_ranks_take_their_part_of_the_one_process_meta_batch(setup):
    config = read_config(setup[0])
    files = [os.path.join(config["config_abs_dir"], "train", schema.TRAIN_FILE)]
    whole = reader_train.RecDataset(files, dict(config, **{"hyper_parameters.task_count": 4}))
    ranks = [reader_train.RecDataset(files, config) for _ in range(2)]
    for rank, dataset in enumerate(ranks):
        dataset.shard(rank, 2)
    assert [len(d) for d in ranks] == [int(np.ceil(180 / 16))] * 2 and len(whole) == 23
    pairs = list(zip(*ranks))
    assert len(pairs) == len(ranks[0])
    for (first, second), expected in zip(pairs, whole):
        *inputs, task_rows = zip(first, second, expected)
        for a, b, e in inputs:
            if isinstance(e, list):
                for x, y, z in zip(a, b, e):
                    np.testing.assert_array_equal(np.concatenate([x, y]), z)
            else:
                np.testing.assert_array_equal(np.concatenate([a, b]), e)
        a, b, e = task_rows  # each rank's tasks, then the next rank's
        for x, z in zip(a + b, e):
            for rows, expected_rows in zip(x, z):
                np.testing.assert_array_equal(rows, expected_rows)


def test_without_replacement_the_tasks_of_all_ranks_must_fit(setup):
    config = read_config(setup[0], "hyper_parameters.sample_replace=false",
                         "hyper_parameters.task_count=3")
    dataset = reader_train.RecDataset(
        [os.path.join(config["config_abs_dir"], "train", schema.TRAIN_FILE)], config)
    with pytest.raises(ConfigError, match=r"task_count=3 x 2 rank\(s\) needs"):
        dataset.shard(1, 2)


# --- two launched ranks against one process -------------------------------------------


def test_two_ranks_train_like_one_process_with_both_ranks_tasks(setup, tmp_path):
    config_path, models = setup
    code, logs = launch("tools/trainer.py", config_path, tmp_path / "log")
    succeeded(code, logs)
    steps = int(np.ceil(180 / (8 * 2)))
    lines = re.findall(r"step: (\d+)/(\d+), AUC: \S+, loss: ([0-9.]+)", logs[0])
    assert [(int(s), int(n)) for s, n, _ in lines] == [(s, steps) for s in range(steps)]
    assert "saved model" in logs[0] and "saved model" not in logs[1]
    assert "epoch: 0 done" not in logs[1]
    assert sorted(os.listdir(models)) == ["0", "training_curve.csv", "training_curve.png"]

    # One process, task_count 4: the first `steps` meta-batches hold both ranks' tasks.
    config = read_config(config_path, "hyper_parameters.task_count=4")
    paddle.seed(settings.get(config, "runner.seed"))
    model_class = load_dy_model_class(config["config_abs_dir"])
    model = model_class.create_model(config)
    optimizer = model_class.create_optimizer(model, config)
    metrics, _ = model_class.create_metrics()
    losses = []
    for batch in itertools.islice(create_data_loader(config)(), steps):
        loss, metrics, _ = trainer.train_step(model_class, model, optimizer, metrics, batch,
                                              config, distributed.Ranks())
        losses.append(float(loss))
    # Each logged loss is the mean of the ranks' means: the mean over all 4 tasks.
    np.testing.assert_allclose([float(x) for _, _, x in lines], losses, atol=2e-6)
    auc = float(re.search(r"epoch: 0 done, AUC: ([0-9.]+)", logs[0]).group(1))
    assert auc == pytest.approx(metrics[0].accumulate(), abs=1e-3)
    trained = paddle.load(os.path.join(models, "0", "rec.pdparams"))
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(trained[name].numpy(), value.numpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=name)


def test_two_ranks_infer_like_one_process(setup, tmp_path):
    config_path, models = setup
    config = read_config(config_path)
    paddle.seed(1)
    save_model(load_dy_model_class(config["config_abs_dir"]).create_model(config), None, models, 0)
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    infer.main(infer.parse_args(["-m", config_path, "-o", "runner.infer_output_dir=" + one]))
    code, logs = launch("infer.py", config_path, tmp_path / "log",
                        "runner.infer_output_dir=" + two)
    succeeded(code, logs)
    # Each campaign goes to the rank with the fewer rows so far (2 x seed + candidate rows):
    # hot 1 (110 rows) to rank 0, 2 (59) and 3 (26) to rank 1; cold 7 to rank 0, 8 to rank 1.
    assert re.findall(r"campaign \d+/\d+, aid: (\d+)", logs[1]) == ["2", "3", "8"]
    for name in ("predictions.csv", "per_campaign.csv"):
        with open(os.path.join(one, "0", name)) as a, open(os.path.join(two, "0", name)) as b:
            assert a.read() == b.read(), name
    reports = []
    for out in (one, two):
        with open(os.path.join(out, "0", "metrics.json")) as f:
            saved = json.load(f)
        del saved["config"]["runner.infer_output_dir"]
        reports.append(saved)
    assert reports[0] == reports[1]


def test_launching_without_use_fleet_stops_with_a_clear_error(setup, tmp_path):
    start = time.time()
    code, logs = launch("tools/trainer.py", setup[0], tmp_path / "log", "runner.use_fleet=False")
    assert code != 0 and time.time() - start < LAUNCH_TIMEOUT
    assert "launched as 2 processes, but runner.use_fleet is False" in logs[0]
    assert "Traceback" not in logs[0]
