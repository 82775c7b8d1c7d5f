"""Where data files live: folder layouts, the split of campaigns into them, raw file names.

The generator (``tools/generate_data.py``) and the raw preprocessing
(``tools/preprocess_raw.py``) both write these layouts; the configs read them.
"""
import os
import sys

import numpy as np

from metaheac import schema

# The five files of a data set: the meta-training rows, and each test set's two stages.
FRAME_KEYS = ("train", "test_hot_stage1", "test_hot_stage2", "test_cold_stage1", "test_cold_stage2")


def _layout(train_dir, hot_dir, cold_dir):
    return {"train": train_dir + "/" + schema.TRAIN_FILE,
            "test_hot_stage1": hot_dir + "/" + schema.TEST_SEED_FILE,
            "test_hot_stage2": hot_dir + "/" + schema.TEST_CANDIDATE_FILE,
            "test_cold_stage1": cold_dir + "/" + schema.TEST_SEED_FILE,
            "test_cold_stage2": cold_dir + "/" + schema.TEST_CANDIDATE_FILE}


LAYOUTS = {
    # config.yaml's: hot test campaigns in test/, as upstream PaddleRec's sample data.
    "paddlerec": _layout("train", "test", "test_cold"),
    # config_big.yaml's (datasets/Lookalike/): PaddleRec's readme for the full data.
    "lookalike": _layout("train_data", "test_hot_data", "test_cold_data"),
}

# The raw files of the 2018 Tencent Look-alike competition, preliminary round.
RAW_FILES = {"ads": "adFeature.csv", "users": "userFeature.data",
             "seeds": "train.csv", "candidates": "test1_truth.csv"}


def layout_paths(out_dir, layout="paddlerec"):
    """{FRAME_KEYS item: path} of a folder layout (LAYOUTS)."""
    return {key: os.path.join(out_dir, *relative.split("/")) for key, relative in LAYOUTS[layout].items()}


def split_masks(is_test, is_hot, in_stage2):
    """{FRAME_KEYS item: row mask}, from per-row booleans: a test campaign's row, of a hot
    campaign, a stage-2 (candidate) row. Meta-training keeps the stage-1 rows of its
    campaigns; a training campaign's stage-2 rows, where there are any, go nowhere."""
    train = ~is_test & ~in_stage2
    hot, cold = is_test & is_hot, is_test & ~is_hot
    return {"train": train,
            "test_hot_stage1": hot & ~in_stage2, "test_hot_stage2": hot & in_stage2,
            "test_cold_stage1": cold & ~in_stage2, "test_cold_stage2": cold & in_stage2}


def summary(path, labels, aids):
    """The line printed for each file written: rows, campaigns, positive rate."""
    rate = labels.mean() if len(labels) else float("nan")
    return "%s: %d rows, %d campaigns, positive rate %.4f" % (path, len(labels), len(np.unique(aids)), rate)


def progress_printer(label):
    """A progress(done, total) callback that redraws '<label>: NN%' on stderr."""
    def progress(done, total):
        end = "\n" if done >= total else ""
        print("\r%s: %3d%%" % (label, 100 * done // max(total, 1)), end=end, file=sys.stderr, flush=True)
    return progress
