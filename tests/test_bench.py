"""Smoke test of tools/bench.py: its tiny mode runs and prints every figure (no timing asserted)."""
import os
import re
import subprocess
import sys

import pandas as pd

from conftest import ROOT, frame, write_frame


def test_tiny_bench_runs_and_prints_its_figures(rng, tmp_path):
    frames = [frame(rng, rows=60, aids=4) for _ in range(2)]
    data = pd.concat(frames, ignore_index=True)
    write_frame(data, str(tmp_path / "train_data" / "train_stage1.pkl"))
    for stage, rows in (("test_stage1.pkl", 40), ("test_stage2.pkl", 20)):
        write_frame(frame(rng, rows=rows, aids=2), str(tmp_path / "test_hot_data" / stage))
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "bench.py"), "--tiny",
         "--profile", "--data", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    number = r"[0-9]+(\.[0-9]+)?"
    assert re.search(r"matrix product: .* %s GFLOP/s" % number, text), text
    for batch in (8, 16):  # the tiny mode's batch sizes: both formulations, ratio, split, GFLOP/s
        assert re.search(r"\| %d \| %s \| %s \| %sx \| %s / %s / %s \| %s \| %s \| %s %% \|"
                         % ((batch,) + (number,) * 9), text), text
        assert "full-table at batch %d: forward / backward / optimizer" % batch in text
    assert re.search(r"epoch of the full preset .* = %s min \(ours\), %s min \(full-table\)"
                     % (number, number), text), text
    assert re.search(r"\| 64 seeds, 16 candidates \| %s \| %s \| %sx \|" % ((number,) * 3),
                     text), text
    assert text.count("peak RSS") >= 3
    assert "Top operators of our meta-step at batch 16" in text
    assert re.search(r"\| Global_MatmulGradNode \| 80 \| %s \|" % number, text), text
    # --data: first and cached load, and meta-steps through the real reader.
    assert re.search(r"\| first \(no cache.* \| %s \| 120 \| " % number, text), text
    assert re.search(r"\| cached \| %s \| 120 \| " % number, text), text
    assert re.search(r"2 meta-steps at batch 16 through the real reader .* median %s s/step"
                     % number, text), text
    assert "measured epoch estimate" in text
    assert re.search(r"Inference on the real hot test campaign .*\n\n.*\n.*\n\| [0-9]+ seeds, "
                     r"[0-9]+ candidates \| %s \| %s \| %sx \|" % ((number,) * 3), text), text
    # The data folder is left as it was: the first load ran on links in a scratch folder.
    assert sorted(os.listdir(tmp_path / "train_data")) == ["train_stage1.pkl"]
    assert sorted(os.listdir(tmp_path / "test_hot_data")) == [".columns_cache", "test_stage1.pkl",
                                                               "test_stage2.pkl"]
