"""expand.py end to end on generated data with a planted structure, its chunked reading,
its exported models, and its errors on bad input.

expand.py runs in this process (``expand.cli``, what its command line calls), which saves
a Paddle start-up per run; one test runs the command line itself."""
import dataclasses
import logging
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from metaheac import data_files, schema

import expand as expand_py
import generate_data

# Few, large test campaigns (all "hot"), so each pool holds enough positives to measure
# an audience's precision; a small meta-training set keeps the run short.
SPEC = dataclasses.replace(generate_data.PRESETS["sample"], n_test=3, test_median_rows=2000,
                           stage2_fraction=2.0, hot_threshold=0, positive_rate=0.08)
CONFIG = os.path.join(ROOT, "config.yaml")


@pytest.fixture
def run(caplog):
    """Runs expand.py's command line in this process; returns its status and log."""
    def run(*args, check=True):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="expand"):
            code = expand_py.cli([str(a) for a in args])
        if check:
            assert code == 0, caplog.text[-3000:]
        return code, caplog.text
    return run


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Generated data (train, seeds, pool) and a model meta-trained on it."""
    root = tmp_path_factory.mktemp("expand")
    frames = generate_data.generate(SPEC, seed=11)
    paths = {}
    for key, name in (("train", "train/train_stage1.pkl"), ("test_hot_stage1", "seeds.pkl"),
                      ("test_hot_stage2", "pool.pkl")):
        paths[key] = root / name
        paths[key].parent.mkdir(parents=True, exist_ok=True)
        frames[key].to_pickle(paths[key])
    models = root / "models"
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "trainer.py"), "-m", CONFIG, "-o",
                    "runner.train_data_dir=%s" % paths["train"].parent,
                    "runner.model_save_path=%s" % models], cwd=ROOT, check=True,
                   capture_output=True, timeout=600)
    return dict(root=root, frames=frames, seeds=paths["test_hot_stage1"],
                pool=paths["test_hot_stage2"], models=models)


@pytest.fixture
def expand(run):
    def expand(world, seeds, out, *flags, pool=None):
        return run("-m", CONFIG, "--seeds", seeds, "--pool", pool or world["pool"], "--out", out,
                   *flags, "-o", "runner.infer_load_path=%s" % world["models"])
    return expand


def precision_and_base_rate(world, audience):
    pool = world["frames"]["test_hot_stage2"]
    truth = dict(zip(zip(pool[schema.AID], pool[schema.UID]), pool[schema.LABEL]))
    hits = [truth[key] for key in zip(audience[schema.AID], audience[schema.UID])]
    return float(np.mean(hits)), float(pool[schema.LABEL].mean())


def check_audience(world, audience, fraction):
    pool = world["frames"]["test_hot_stage2"]
    seeds = world["frames"]["test_hot_stage1"]
    for aid, rows in audience.groupby(schema.AID, sort=False):
        reachable = set(pool.uid[pool.aid == aid]) - set(seeds.uid[seeds.aid == aid])
        assert len(rows) == np.ceil(fraction * len(reachable))
        assert set(rows.uid) <= reachable  # no seed user, only pool users
        assert list(rows["rank"]) == list(range(1, len(rows) + 1))
        assert (np.diff(rows.score.to_numpy()) <= 0).all()
    assert sorted(audience.aid.unique()) == sorted(pool.aid.unique())


@pytest.fixture(scope="module")
def labelled(world, tmp_path_factory):
    """The audience of the labelled seeds (top 10 %), its exported models and its log."""
    root = tmp_path_factory.mktemp("labelled")
    out, export_dir = root / "audience.csv", root / "models"
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logging.getLogger("expand").addHandler(handler)
    try:
        code = expand_py.cli([str(a) for a in (
            "-m", CONFIG, "--seeds", world["seeds"], "--pool", world["pool"], "--out", out,
            "--top-fraction", 0.1, "--export-dir", export_dir,
            "-o", "runner.infer_load_path=%s" % world["models"])])
    finally:
        logging.getLogger("expand").removeHandler(handler)
    assert code == 0, lines[-5:]
    return out, export_dir, "\n".join(lines)


def test_labelled_seeds_give_an_audience_well_above_the_base_rate(world, labelled):
    out, _, log = labelled
    audience = pd.read_csv(out)
    assert list(audience.columns) == ["aid", "uid", "score", "rank"]
    check_audience(world, audience, 0.1)
    precision, base = precision_and_base_rate(world, audience)
    assert precision > 2.5 * base, (precision, base)
    assert log.count("score cut-off") == SPEC.n_test


def test_positive_only_seeds_give_an_audience_well_above_the_base_rate(world, expand, tmp_path):
    seeds = world["frames"]["test_hot_stage1"]
    positives = tmp_path / "positives.pkl"
    seeds[seeds.label == 1].drop(columns=[schema.LABEL]).to_pickle(positives)
    out = tmp_path / "audience.csv"
    _, log = expand(world, positives, out, "--top-fraction", 0.1)
    assert "PU learning" in log
    audience = pd.read_csv(out)
    check_audience(world, audience, 0.1)
    precision, base = precision_and_base_rate(world, audience)
    assert precision > 2.5 * base, (precision, base)


def test_a_chunked_columnar_pool_scores_as_one_chunk(world, labelled, run, tmp_path):
    pool = data_files.frame_to_columns(data_files.read_frame(str(world["pool"])), "pool")
    data_files.save_columnar(pool, str(tmp_path / "pool.npz"))
    chunked = tmp_path / "chunked.csv"
    run("-m", CONFIG, "--seeds", world["seeds"], "--pool", tmp_path / "pool.npz",
        "--out", chunked, "--top-fraction", 0.1, "-o", "runner.infer_load_path=%s" % world["models"],
        "runner.expand_chunk_rows=37")
    # The labelled run read the .pkl pool in chunks larger than any campaign.
    a, b = pd.read_csv(labelled[0]), pd.read_csv(chunked)
    assert (a[["aid", "uid", "rank"]].to_numpy() == b[["aid", "uid", "rank"]].to_numpy()).all()
    np.testing.assert_allclose(a.score, b.score, rtol=1e-5, atol=1e-7)


def test_the_exported_models_score_as_expand_wrote(world, labelled):
    import paddle.inference as inference
    out, export_dir, _ = labelled
    audience = pd.read_csv(out)
    pool = data_files.frame_to_columns(data_files.read_frame(str(world["pool"])), "pool")
    for aid, rows in audience.groupby(schema.AID):
        config = inference.Config(str(export_dir / str(aid) / "inference.json"),
                                  str(export_dir / str(aid) / "inference.pdiparams"))
        config.disable_gpu()
        predictor = inference.create_predictor(config)
        assert predictor.get_input_names() == ["static_ids", "sequence_ids",
                                               "sequence_lengths", "ad_ids"]
        in_pool = np.flatnonzero(pool.aid == aid)
        by_uid = dict(zip(pool.uid[in_pool], in_pool))
        inputs = pool.features(np.array([by_uid[u] for u in rows.uid]))
        for name, values in zip(predictor.get_input_names(), inputs):
            predictor.get_input_handle(name).copy_from_cpu(values)
        predictor.run()
        scores = predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
        np.testing.assert_allclose(scores, rows.score, rtol=1e-5, atol=1e-6)


def _bad_files(world, tmp_path):
    seeds, pool = world["frames"]["test_hot_stage1"], world["frames"]["test_hot_stage2"]
    files = {}

    def write(name, frame):
        files[name] = tmp_path / (name + ".pkl")
        frame.to_pickle(files[name])

    write("no_age", pool.drop(columns=["age"]))
    write("empty", pool.iloc[:0])
    write("twice", pd.concat([pool, pool.iloc[:1]]).reset_index(drop=True))
    out_of_range = pool.copy()
    out_of_range.iloc[5, out_of_range.columns.get_loc("age")] = 99
    write("out_of_range", out_of_range)
    other = pool.copy()
    other[schema.AID] += 1000
    write("other_campaigns", other)
    write("seeds_no_gender", seeds.drop(columns=["gender"]))
    return files


@pytest.mark.parametrize("case, flags, message", [
    ("no_age", ["--pool", "{no_age}"], r"no_age.pkl: missing column\(s\) \['age'\]"),
    ("seeds_no_gender", ["--seeds", "{seeds_no_gender}"],
     r"seeds_no_gender.pkl: missing column\(s\) \['gender'\]"),
    ("empty", ["--pool", "{empty}"], "empty.pkl: the pool is empty"),
    ("twice", ["--pool", "{twice}"], r"twice.pkl: uid \d+ appears more than once in campaign aid"),
    ("out_of_range", ["--pool", "{out_of_range}"], r"out_of_range.pkl: column 'age' has id 99"),
    ("other_campaigns", ["--pool", "{other_campaigns}"], "no campaign .aid. has both seeds and pool"),
    ("checkpoint", ["-o", "runner.infer_load_path=no/models"], "no checkpoint at no/models/0"),
    ("fraction", ["--top-fraction", "1.5"], r"--top-fraction must lie in \(0, 1\], got 1.5"),
])
def test_bad_input_is_one_line_and_writes_nothing(world, run, tmp_path, case, flags, message):
    files = _bad_files(world, tmp_path)
    chosen = {"--seeds": world["seeds"], "--pool": world["pool"], "--top": 10}
    extra = []
    for flag, value in zip(flags[::2], flags[1::2]):
        if flag == "-o":
            extra = ["-o", value]
        else:
            chosen[flag] = value.format(**files)
    if "--top-fraction" in chosen:
        del chosen["--top"]
    out = tmp_path / "audience.csv"
    args = ["-m", CONFIG, "--out", out, *[x for kv in chosen.items() for x in kv]]
    code, log = run(*args, *(extra or ["-o", "runner.infer_load_path=%s" % world["models"]]),
                    check=False)
    assert code == 2, log[-2000:]
    errors = [line for line in log.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and re.search(message, errors[0]), log[-2000:]
    assert not out.exists()


def test_the_command_line_exits_2_with_one_line(world, tmp_path):
    out = tmp_path / "audience.csv"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "expand.py"), "-m", CONFIG, "--seeds", world["seeds"],
         "--pool", world["pool"], "--out", out, "--top", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "--top must be at least 1, got 0" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_campaigns_in_one_file_only_and_a_large_top_are_warnings(world, expand, tmp_path):
    pool = world["frames"]["test_hot_stage2"]
    first = pool.aid.min()
    partial = tmp_path / "partial.pkl"
    pool[pool.aid != first].to_pickle(partial)
    out = tmp_path / "audience.csv"
    _, log = expand(world, world["seeds"], out, "--top", 100000, pool=partial)
    assert "skipping campaign(s) aid [%d]: rows in %s, none in %s" % (first, world["seeds"], partial) in log
    assert "--top 100000 exceeds the pool of campaign aid" in log
    audience = pd.read_csv(out)
    assert first not in set(audience.aid)
    assert len(audience) == len(pool[pool.aid != first])  # seeds and pool users are distinct


def test_uid_is_optional_and_checked(tmp_path, rng):
    from conftest import frame
    df = frame(rng, 20)
    path = tmp_path / "x.pkl"
    df.drop(columns=[schema.LABEL]).to_pickle(path)
    loaded = data_files.load_columns(str(path), require_label=False)
    assert loaded.label is None and loaded.uid is None
    assert (loaded.user_ids() == df.index.to_numpy()).all()
    with pytest.raises(data_files.DataError, match=r"x.pkl: missing column\(s\) \['label'\]"):
        data_files.load_columns(str(path), use_cache=False)
    df[schema.UID] = 0.5
    df.to_pickle(path)
    with pytest.raises(data_files.DataError, match="column 'uid' has the non-integer 0.5"):
        data_files.load_columns(str(path), use_cache=False)
