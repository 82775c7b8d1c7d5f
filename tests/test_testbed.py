"""The testbed preset of tools/generate_data.py, its oracle.json, and tools/testbed.py."""
import dataclasses
import json
import os

import numpy as np
from sklearn.metrics import roc_auc_score

import generate_data as gd
import testbed
from metaheac import data_files, layout, schema

SPEC = gd.PRESETS["testbed"]
# The testbed's design at a size a test can draw in seconds.
SMALL = dataclasses.replace(SPEC, n_train=4, train_median_rows=300, min_rows=200, n_test=4,
                            test_design=((2, 400, 600), (2, 60, 90)), candidates=150, unseen_test=3)


def test_the_preset_is_built_like_the_hard_case():
    for seed in (1, 2, 3):
        world = gd._make_world(SPEC, np.random.default_rng(seed))
        test, sizes, hot = world["is_test"], world["sizes"], world["hot"]
        seeds = sizes - SPEC.candidates
        assert test.sum() == 16 and (~test).sum() == 24
        assert (hot & test).sum() == 8 and not (hot & ~test).any()
        assert ((seeds[hot] >= 4000) & (seeds[hot] <= 8000)).all()
        cold = test & ~hot
        assert ((seeds[cold] >= 150) & (seeds[cold] <= 600)).all()
        assert 90_000 < sizes[~test].sum() < 150_000
        category = world["ad"]["adCategoryId"]
        # 12 are of the categories training never draws from; the other 4 of the training
        # half, which the 24 training campaigns need not all cover
        assert 12 <= np.isin(category[test], category[~test], invert=True).sum() <= 16


def test_oracle_files_hold_the_true_probabilities_auc(tmp_path, monkeypatch):
    monkeypatch.setitem(gd.PRESETS, "testbed", SMALL)
    gd.main(["--preset", "testbed", "--seed", "4", "--out", str(tmp_path)])
    d = gd.draw(SMALL, 4)
    paths = layout.layout_paths(str(tmp_path))
    truth = dict(zip(d.row_id, d.probability))
    for key, n_campaigns in (("test_hot_stage2", 2), ("test_cold_stage2", 2)):
        columns = data_files.load_columns(paths[key])
        labels, aids = columns.label, columns.aid
        assert len(labels) == 150 * n_campaigns
        p = np.array([truth[i] for i in columns.row_id])
        with open(os.path.join(os.path.dirname(paths[key]), schema.ORACLE_FILE)) as f:
            oracle = json.load(f)
        assert oracle["pooled_auc"] == np.float64(roc_auc_score(labels, p)).item()
        gauc = np.mean([roc_auc_score(labels[aids == a], p[aids == a]) for a in np.unique(aids)])
        assert abs(oracle["gauc"] - gauc) < 1e-12 and 0.6 < oracle["pooled_auc"] < 1
        assert oracle["campaigns"] == n_campaigns


def test_testbed_driver_prints_the_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(gd.PRESETS, "testbed", SMALL)
    small = ["hyper_parameters.embed_dim=4", "hyper_parameters.mlp_dims=[8]",
             "hyper_parameters.batch_size=64", "runner.infer_max_steps=3"]
    calls = []

    def run_here(command, log):  # the generator in this process, to draw the small preset
        calls.append(command[1])
        if command[1] == "tools/generate_data.py":
            gd.main(command[2:])
        else:
            real_run(command, log)

    real_run = testbed.run
    monkeypatch.setattr(testbed, "run", run_here)
    text = testbed.main(["--root", str(tmp_path), "--seeds", "1", "--variants", "order0",
                         "--config", "config.yaml", "-o", *small])
    lines = text.splitlines()
    assert lines[2].startswith("| order0 | fixed | ") and lines[3].startswith("| order0 | auto | ")
    assert lines[4].startswith("| oracle (true probabilities) | | ")
    assert lines[-1].startswith("- order0, auto - fixed: hot ")
    figure = (tmp_path / "testbed.png").read_bytes()
    assert figure.startswith(b"\x89PNG") and len(figure) > 10_000
    report = json.load(open(tmp_path / "seed1" / "infer_order0_auto" / "0" / "metrics.json"))
    hot = report["test_sets"][0]["summary"]
    assert lines[3].split(" | ")[2] == "%.4f ± nan" % hot["pooled_auc"]  # one seed: no sd
    assert hot["oracle_lift_reached_pooled_auc"] == (hot["pooled_auc"] - 0.5) / (hot["oracle_pooled_auc"] - 0.5)
    assert calls.count("tools/trainer.py") == 1
    testbed.main(["--root", str(tmp_path), "--seeds", "1", "--variants", "order0",
                  "--config", "config.yaml", "-o", *small])
    assert calls.count("tools/trainer.py") == 1  # done steps are not run again
