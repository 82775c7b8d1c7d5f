import numpy as np
import paddle
import pytest

import net
from conftest import SMALL_MAX_IDXS, random_inputs
from utils.save_load import CheckpointError, load_model, save_model


def make(hidden=8, seed=0):
    paddle.seed(seed)
    return net.MetaHeacNet(SMALL_MAX_IDXS, 4, [hidden], 2, 2)


def test_save_then_load_gives_identical_predictions(tmp_path, rng):
    model = make(seed=1)
    optimizer = paddle.optimizer.Adam(parameters=model.parameters())
    x = [paddle.to_tensor(a) for a in random_inputs(rng, 9)]
    model(*x).mean().backward()
    optimizer.step()
    save_model(model, optimizer, str(tmp_path), 3)
    assert sorted(p.name for p in (tmp_path / "3").iterdir()) == ["rec.pdopt", "rec.pdparams"]
    restored = make(seed=2)
    assert not np.allclose(restored(*x).numpy(), model(*x).numpy())
    restored_opt = paddle.optimizer.Adam(parameters=restored.parameters())
    load_model(str(tmp_path / "3"), restored, optimizer=restored_opt)
    np.testing.assert_array_equal(restored(*x).numpy(), model(*x).numpy())
    assert any("moment1" in k for k in restored_opt.state_dict())


def test_shape_mismatch_names_the_parameter(tmp_path):
    save_model(make(hidden=8), None, str(tmp_path), 0)
    with pytest.raises(CheckpointError, match=r"expert_w0 has shape \[2, 56, 8\].*expects \[2, 56, 6\]"):
        load_model(str(tmp_path / "0"), make(hidden=6))


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_model(str(tmp_path / "7"), make())
