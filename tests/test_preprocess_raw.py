"""Tests for tools/preprocess_raw.py: exact encoding on hand-written raw files, clear errors on bad
ones, and a round trip from the generator's raw files through training and inference."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from metaheac import data_files, layout
import generate_data as gd
import preprocess_raw as pr
from metaheac import schema
from conftest import ROOT

ADS = """aid,advertiserId,campaignId,creativeId,creativeSize,adCategoryId,productId,productType
177,8203,76104,1500666,59,282,0,6
2050,19441,,1500012,35,27,113,9
9,8203,70000,1500001,22,282,0,6
"""
# uid 13 has no row, so neither it nor its values count; marriageStatus and ct are not in the schema.
USERS = """uid 10|age 4|gender 2|marriageStatus 11|LBS 950|interest1 93 70 77 86 109 47 75 69 45 8 29 49\
|kw1 5 4 3 2 1 9 8|topic1 7|ct 3 1|carrier 1|consumptionAbility 2|education 7|house 1
uid 11|age 2|gender 1|LBS 950|interest1 70 5|interest2 46 19|kw1 4|carrier 0|consumptionAbility 1|education 2
uid 12|age 4|gender 1|LBS 3|interest2 46|carrier 1|consumptionAbility 1|education 7|house 1
uid 13|age 5|gender 2|LBS 7|interest1 1 2 3|carrier 2|consumptionAbility 2|education 1
"""
SEEDS = "aid,uid,label\n177,10,1\n177,11,-1\n2050,12,1\n2050,10,-1\n"
CANDIDATES = "177,12,-1\n2050,11,1\n"
# Source rows (aid, uid, label) of train.csv (stage 1) and test1_truth.csv (stage 2).
ROWS = {1: [(177, 10, 1), (177, 11, 0), (2050, 12, 1), (2050, 10, 0)], 2: [(177, 12, 0), (2050, 11, 1)]}
AID_CODE = {177: 0, 2050: 1}
# What each kept user becomes. interest1 keeps 10 of uid 10's 12 tokens and kw1 5 of its 7; the
# vocabularies hold only kept tokens, in increasing order, and "missing" is the id after them.
EXPECTED_USERS = {
    10: {"carrier": 1, "consumptionAbility": 1, "LBS": 1, "age": 1, "education": 1, "gender": 1, "house": 1,
         "interest1": [9, 5, 7, 8, 10, 3, 6, 4, 2, 1], "interest2": [2] * 10, "interest3": [0] * 10,
         "kw1": [4, 3, 2, 1, 0], "kw2": [0] * 5, "topic1": [0, 1, 1, 1, 1], "topic2": [0] * 5,
         "lengths": [10, 0, 0, 5, 0, 1, 0]},
    11: {"carrier": 0, "consumptionAbility": 0, "LBS": 1, "age": 0, "education": 0, "gender": 0, "house": 0,
         "interest1": [5, 0] + [11] * 8, "interest2": [1, 0] + [2] * 8, "interest3": [0] * 10,
         "kw1": [3, 5, 5, 5, 5], "kw2": [0] * 5, "topic1": [1] * 5, "topic2": [0] * 5,
         "lengths": [2, 2, 0, 1, 0, 0, 0]},
    12: {"carrier": 1, "consumptionAbility": 0, "LBS": 0, "age": 1, "education": 1, "gender": 0, "house": 1,
         "interest1": [11] * 10, "interest2": [1] + [2] * 9, "interest3": [0] * 10,
         "kw1": [5] * 5, "kw2": [0] * 5, "topic1": [1] * 5, "topic2": [0] * 5,
         "lengths": [0, 1, 0, 0, 0, 0, 0]},
}
# aid 177 / 2050: advertiserId, campaignId (2050's is absent: -1 ranks first), creativeSize, ...
EXPECTED_ADS = {177: [0, 1, 1, 1, 0, 0], 2050: [1, 0, 0, 0, 1, 1]}
EXPECTED_MAX_IDXS = [[1] * 7, [11, 2, 0, 5, 0, 1, 0], [1] * 6]


def write_raw(directory, **replace):
    files = {"ads": ADS, "users": USERS, "seeds": SEEDS, "candidates": CANDIDATES, **replace}
    os.makedirs(directory, exist_ok=True)
    for key, text in files.items():
        with open(os.path.join(directory, layout.RAW_FILES[key]), "w") as f:
            f.write(text)
    return str(directory)


def test_hand_written_files_are_encoded_as_the_authors_script_does(tmp_path):
    raw = write_raw(tmp_path / "raw")
    paths, encoded, written = pr.preprocess(raw, str(tmp_path / "out"), seed=0, threshold=1)
    assert encoded.max_idxs == EXPECTED_MAX_IDXS
    frames = {key: pd.read_pickle(path) for key, path in paths.items()}
    train_aids = set(frames["train"][schema.AID])
    assert len(train_aids) == 1  # half of the two campaigns
    seen = []
    for key, frame in frames.items():
        stage = 2 if key.endswith("stage2") else 1
        for source_row, row in frame.iterrows():
            aid, uid, label = ROWS[stage][source_row]
            seen.append((stage, source_row))
            assert row[schema.LABEL] == label and row[schema.AID] == AID_CODE[aid]
            assert row[schema.UID] == uid  # the raw uid, kept
            assert (AID_CODE[aid] in train_aids) == (key == "train")
            positives = sum(r[2] for s in (1, 2) for r in ROWS[s] if r[0] == aid)
            assert ("hot" in key) == (key != "train" and positives > 1)
            expected = EXPECTED_USERS[uid]
            for name in schema.STATIC_COLUMNS:
                assert row[name] == expected[name], (uid, name)
            for f in schema.SEQUENCE_FIELDS:
                assert list(row[f.name]) == expected[f.name], (uid, f.name)
            assert [row[c] for c in schema.LENGTH_COLUMNS] == expected["lengths"], uid
            assert [row[c] for c in schema.AD_COLUMNS] == EXPECTED_ADS[aid]
    train_aid = {v: k for k, v in AID_CODE.items()}[train_aids.pop()]
    dropped = [(2, i) for i, r in enumerate(ROWS[2]) if r[0] == train_aid]  # a train campaign's stage 2
    assert sorted(seen) == sorted(set((s, i) for s in (1, 2) for i in range(len(ROWS[s]))) - set(dropped))
    for path in paths.values():
        data_files.load_columns(path, use_cache=False)  # passes the loader's checks


@pytest.mark.parametrize("replace, message", [
    ({"seeds": "aid,uid,label\n177,10,1\n177,11,2\n"}, r"train.csv line 3: label 2; expected 1 or -1"),
    ({"candidates": "aid,uid,label\n" + CANDIDATES}, r"test1_truth.csv line 1: column 'aid' holds 'aid'"),
    ({"candidates": "177,12,-1,4\n"}, r"test1_truth.csv: expected the columns aid,uid,label \(no header\)"),
    ({"seeds": SEEDS + "177,99,1\n"}, r"train.csv line 6: uid 99 has no line in .*userFeature.data"),
    ({"candidates": CANDIDATES + "5,10,1\n"}, r"test1_truth.csv line 3: aid 5 is not in .*adFeature.csv"),
    ({"ads": ADS.replace(",productType", "")}, r"adFeature.csv: missing column\(s\) \['productType'\]"),
    ({"users": USERS.replace("kw1 4|", "kw1 x|")}, r"userFeature.data line 2: field 'kw1' holds 'x'"),
    ({"users": USERS.replace("age 4|gender 1|", "age|")}, r"userFeature.data line 3: expected 'uid <id>\|"),
    ({"users": USERS + "uid 10|age 1\n"}, r"userFeature.data: uid 10 has more than one line"),
])
def test_bad_raw_files_are_named(tmp_path, replace, message):
    raw = write_raw(tmp_path / "raw", **replace)
    with pytest.raises(pr.RawDataError, match=message):
        pr.preprocess(raw, str(tmp_path / "out"))


def test_ids_beyond_the_schema_stop_the_run_unless_allowed(tmp_path, capsys):
    users = USERS.replace("|house 1\nuid 11", "|house 2\nuid 11")  # house: -1, 1, 2 > schema's 1
    raw = write_raw(tmp_path / "raw", users=users)
    out = str(tmp_path / "out")
    with pytest.raises(SystemExit, match=r"house: max id 2 > 1.*--allow-larger-ids"):
        pr.main([raw, "--out", out])
    assert not os.path.exists(out)
    pr.main([raw, "--out", out, "--allow-larger-ids", "--threshold", "1"])
    printed = re.search(r"-o hyper_parameters.max_idxs=(\S+)", capsys.readouterr().out).group(1)
    max_idxs = json.loads(printed)
    assert max_idxs[0][schema.STATIC_COLUMNS.index("house")] == 2
    data_files.load_columns(os.path.join(out, "train_data", schema.TRAIN_FILE), max_idxs, use_cache=False)


def run(script, *overrides):
    command = [sys.executable, os.path.join(ROOT, script), "-m", os.path.join(ROOT, "config.yaml"), "-o", *overrides]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def test_generated_raw_files_round_trip_to_training_and_inference(tmp_path, capsys):
    raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
    gd.main(["--preset", "tiny", "--seed", "5", "--raw", "--out", raw])
    d = gd.draw(gd.PRESETS["tiny"], seed=5)
    pr.main([raw, "--out", out, "--threshold", "3"])
    max_idxs = re.search(r"-o hyper_parameters.max_idxs=(\S+)", capsys.readouterr().out).group(1)

    paths = layout.layout_paths(out, "lookalike")
    loaded = {key: data_files.load_columns(path, json.loads(max_idxs), use_cache=False)
              for key, path in paths.items()}
    n_campaigns = len(d.is_test)
    train_aids = set(np.unique(loaded["train"].aid))
    test_aids = set(np.unique(np.concatenate([loaded[k].aid for k in paths if k != "train"])))
    assert len(train_aids) == n_campaigns // 2 and len(test_aids) == n_campaigns - n_campaigns // 2
    stage1_rows = len(d.stage2) - d.stage2.sum()
    test_stage1 = sum(len(loaded[k]) for k in ("test_hot_stage1", "test_cold_stage1"))
    assert len(loaded["train"]) + test_stage1 == stage1_rows
    for c in loaded.values():
        lengths = c.lengths[:, 0]
        assert ((c.sequence[:, schema.SEQUENCE_SLICES[0]] == json.loads(max_idxs)[1][0])
                == (np.arange(10) >= lengths[:, None])).all()  # padded after the length with "missing"

    models = str(tmp_path / "models")
    small = ["hyper_parameters.max_idxs=" + max_idxs, "hyper_parameters.embed_dim=4",
             "hyper_parameters.mlp_dims=[8,8]", "hyper_parameters.batch_size=16"]
    log = run("tools/trainer.py", "runner.train_data_dir=" + os.path.dirname(paths["train"]),
              "runner.model_save_path=" + models, "runner.epochs=1", *small)
    assert "epoch: 0 done" in log
    for key in ("test_hot_stage1", "test_cold_stage1"):
        log = run("infer.py", "runner.test_data_dir=" + os.path.dirname(paths[key]),
                  "runner.infer_load_path=" + models, "runner.infer_train_epoch=1", *small)
        assert re.search(r"pooled AUC: ([0-9.]+|undefined)", log), log[-2000:]
