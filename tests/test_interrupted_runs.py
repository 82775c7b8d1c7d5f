"""A save killed half-way keeps the previous checkpoint; runs repeat bit for bit."""
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import paddle

import net
from conftest import ROOT, SMALL_MAX_IDXS
from utils.save_load import load_model

KILLED_DURING_SAVE = textwrap.dedent("""
    import os
    from utils.save_load import save_model  # run in tools/: utils puts the repo root on the path
    import paddle, net
    paddle.seed(1)
    model = net.MetaHeacNet({max_idxs!r}, 4, [8], 2, 2)
    save_model(model, None, {out!r}, 0)
    for p in model.parameters():
        p.set_value(p.numpy() + 1.0)
    real_save = paddle.save

    def dies_half_way(obj, path):
        real_save(obj, path)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        os._exit(9)  # as if killed while writing

    paddle.save = dies_half_way
    save_model(model, None, {out!r}, 0)
""")


def test_a_kill_during_save_leaves_the_last_checkpoint_loadable(tmp_path):
    out = str(tmp_path / "models")
    script = KILLED_DURING_SAVE.format(max_idxs=SMALL_MAX_IDXS, out=out)
    assert subprocess.run([sys.executable, "-c", script], cwd=os.path.join(ROOT, "tools"),
                          timeout=120).returncode == 9
    paddle.seed(1)
    expected = net.MetaHeacNet(SMALL_MAX_IDXS, 4, [8], 2, 2)
    restored = net.MetaHeacNet(SMALL_MAX_IDXS, 4, [8], 2, 2)
    for p in restored.parameters():
        p.set_value(np.zeros(p.shape, "float32"))
    load_model(os.path.join(out, "0"), restored)
    for (name, a), b in zip(expected.state_dict().items(), restored.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)


def train_log(model_dir, *overrides):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "trainer.py"), "-m",
         os.path.join(ROOT, "config.yaml"), "-o", "runner.model_save_path=%s" % model_dir,
         "runner.print_interval=1", *overrides],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return re.findall(r"step: \d+/\d+, AUC: \S+ loss: \S+", result.stdout + result.stderr)


def test_same_seed_same_data_same_config_repeat_bit_for_bit(tmp_path):
    first, second = train_log(tmp_path / "a"), train_log(tmp_path / "b")
    assert len(first) == 85 and first == second
    for name in ("rec.pdparams", "rec.pdopt"):
        a = (tmp_path / "a" / "0" / name).read_bytes()
        assert a == (tmp_path / "b" / "0" / name).read_bytes(), name


def test_resuming_from_a_checkpoint_continues_the_run_exactly(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train_log(straight, "runner.epochs=2")
    train_log(resumed, "runner.epochs=1")
    train_log(resumed, "runner.epochs=2", "runner.last_epoch=0",
              "runner.model_init_path=%s" % (resumed / "0"))
    for name in ("rec.pdparams", "rec.pdopt"):
        assert (straight / "1" / name).read_bytes() == (resumed / "1" / name).read_bytes(), name
