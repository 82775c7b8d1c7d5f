"""tools/bench.py in tiny mode: the figures it returns are there and consistent (no time
asserted)."""
import json
import math
import os
import subprocess
import sys

import pandas as pd

from conftest import ROOT, frame, write_frame
from metaheac import settings


def positive(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def assert_step_times(times):
    assert all(positive(times[k]) for k in ("forward", "backward", "optimizer", "total")), times
    assert times["total"] >= max(times["forward"], times["backward"], times["optimizer"])


def assert_campaign(c, seeds, candidates):
    assert (c["seeds"], c["candidates"]) == (seeds, candidates)
    assert all(positive(t) for t in c["ours"] + c["full_model"]) and c["full_model"]
    assert math.isclose(c["speedup"], c["full_model_median"] / c["ours_median"])
    assert positive(c["rss_ours_mib"]) and c["rss_mib"] >= c["rss_ours_mib"]


def test_tiny_bench_returns_consistent_figures(rng, tmp_path):
    frames = [frame(rng, rows=60, aids=4) for _ in range(2)]
    write_frame(pd.concat(frames, ignore_index=True),
                str(tmp_path / "train_data" / "train_stage1.pkl"))
    for stage, rows in (("test_stage1.pkl", 40), ("test_stage2.pkl", 20)):
        write_frame(frame(rng, rows=rows, aids=2), str(tmp_path / "test_hot_data" / stage))
    figures = str(tmp_path / "bench.json")
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "bench.py"), "--tiny", "--profile",
         "--data", str(tmp_path), "--json", figures],
        capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    with open(figures) as f:
        report = json.load(f)

    # The default network of metaheac/settings.py.
    for key, value in report["network"].items():
        assert value == settings.DEFAULTS["hyper_parameters." + key], key
    assert positive(report["matmul_gflops"]) and positive(report["parameters"])

    meta = report["meta_steps"]
    assert [row["batch"] for row in meta["rows"]] == [8, 16]  # the tiny mode's batch sizes
    for row in meta["rows"]:
        assert_step_times(row["ours"])
        assert_step_times(row["full_table"])
        assert math.isclose(row["speedup"], row["full_table"]["total"] / row["ours"]["total"])
        assert math.isclose(row["gflops"], row["gflop"] / row["ours"]["total"])
        floor = row["gflop"] / report["matmul_gflops"] + row["ours"]["optimizer"]
        assert math.isclose(row["ceiling"], row["full_table"]["total"] / floor)
        assert positive(row["products"]) and positive(row["lookups"]) and positive(row["unfused"])
        kernels = row["products"] + row["lookups"] + row["ours"]["optimizer"]
        assert math.isclose(row["kernel_ceiling"], row["full_table"]["total"] / kernels)
    assert [row["batch"] for row in meta["task_batching"]] == [8, 16]
    for row in meta["task_batching"]:
        assert all(positive(row[k]) for k in ("order0_loop", "order0_batched",
                                                "product_batched_ms", "product_loop_ms")), row
    assert meta["rows"][1]["gflop"] == 2 * meta["rows"][0]["gflop"]  # linear in the batch
    epoch = meta["full_preset_epoch"]
    assert (epoch["batch"], epoch["steps"]) == (16, math.ceil(4_400_000 / 16))
    assert math.isclose(epoch["minutes"], epoch["steps"] * meta["rows"][1]["ours"]["total"] / 60)
    assert 0 < meta["rss_ours_mib"] <= meta["rss_mib"]

    assert report["profile_batch"] == 16
    matmul_grad = next(o for o in report["profile"] if o["operator"] == "Global_MatmulGradNode")
    # 5 tasks x (support + query pass) x (one product per expert layer + 7 others: the mean
    # over the fields, two per gate, the gate's mixture of the experts, the critics; the
    # fused lookup kernel pools the sequence fields)
    depth = len(settings.DEFAULTS["hyper_parameters.mlp_dims"])
    assert matmul_grad["calls_per_step"] == 5 * 2 * (depth + 7) and positive(matmul_grad["ms_per_step"])

    assert_campaign(report["inference"]["campaign"], 64, 16)

    # --data: the first and the cached load, meta-steps through the real reader, a campaign.
    data = report["data"]
    for load in (data["first_load"], data["cached_load"]):
        assert (load["rows"], load["campaigns"]) == (120, 4) and positive(load["seconds"])
    train = data["train"]
    assert (train["rows"], train["steps"], train["batch"]) == (120, 2, 16)
    assert all(positive(train[k]) for k in ("step", "reader", "compute", "load", "maxrss_mib"))
    assert data["measured_epoch"]["steps"] == math.ceil(120 / 16)
    hot = data["hot_campaign"]
    assert hot["campaigns"] == 2 and hot["aid"] in (0, 1)
    assert_campaign(hot, hot["seeds"], hot["candidates"])
    assert 0 < hot["seeds"] < 40 and 0 < hot["candidates"] < 20

    # The renderer prints what was returned.
    assert "| 8 | %.4f | %.4f | %.1fx |" % (meta["rows"][0]["full_table"]["total"],
                                            meta["rows"][0]["ours"]["total"],
                                            meta["rows"][0]["speedup"]) in out.stdout
    # The data folder is left as it was: the first load ran on links in a scratch folder.
    assert sorted(os.listdir(tmp_path / "train_data")) == ["train_stage1.pkl"]
    assert sorted(os.listdir(tmp_path / "test_hot_data")) == [".columns_cache", "test_stage1.pkl",
                                                               "test_stage2.pkl"]


def test_a_data_folder_without_train_data_is_a_one_line_error(tmp_path):
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "bench.py"), "--tiny", "--data",
         str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip() == ("error: --data %s: no train_data/ folder in it (the layout of "
                                  "tools/generate_data.py --preset full)" % tmp_path)


def test_product_shapes_are_the_counted_products():
    """The shapes the bench times alone are the products meta_step_flops counts (all but
    the pooling and the mean over the fields, which it leaves out), one per profiled call."""
    import numpy as np
    import bench
    for mlp_dims in ([64], [64, 32]):
        sizes = dict(embed_dim=16, mlp_dims=mlp_dims, num_expert=8, num_output=5)
        shapes = bench.product_shapes(batch=32, **sizes)
        assert len(shapes) == len(mlp_dims) + 8
        # The fused lookup kernel pools without a product.
        assert bench.product_shapes(batch=32, pooling=False, **sizes) == shapes[1:]
        counted = [(left, right) for left, right, left_grad in shapes if left_grad]
        assert len(counted) == len(shapes) - 2
        # The FLOPs of one forward pass: batch dimensions times 2 m k n.
        forward = sum(2 * np.prod(np.broadcast_shapes(tuple(l[:-2]), tuple(r[:-2])))
                      * l[-2] * l[-1] * r[-1] for l, r in counted)
        assert forward * 6 * 5 == bench.meta_step_flops(task_count=5, batch=32, **sizes)
