import numpy as np
import paddle
import pytest

import net
from metaheac import schema
from conftest import SMALL_MAX_IDXS, random_inputs
from numpy_forward import forward as reference_forward


def make_net(mlp_dims=(16, 8), seed=3):
    paddle.seed(seed)
    return net.MetaHeacNet(SMALL_MAX_IDXS, 6, list(mlp_dims), num_expert=3, num_output=4)


def numpy_params(model):
    return {k: v.numpy().astype(np.float64) for k, v in model.state_dict().items()}


def run(model, inputs, weights=None):
    return model(*[paddle.to_tensor(x) for x in inputs], weights=weights).numpy()


def test_forward_matches_numpy_reference(rng):
    model = make_net()
    inputs = random_inputs(rng, 40)
    inputs[2][:5] = 0  # some empty sequences
    expected = reference_forward(numpy_params(model), *inputs)
    np.testing.assert_allclose(run(model, inputs), expected, rtol=1e-5, atol=1e-6)


def test_padding_after_length_is_ignored(rng):
    model = make_net()
    inputs = random_inputs(rng, 30)
    scrambled = [x.copy() for x in inputs]
    for i, cols in enumerate(schema.SEQUENCE_SLICES):
        width = cols.stop - cols.start
        pad = np.arange(width)[None, :] >= inputs[2][:, i:i + 1]
        block = scrambled[1][:, cols]
        block[pad] = rng.integers(0, SMALL_MAX_IDXS[1][i] + 1, pad.sum())
        scrambled[1][:, cols] = block
    assert not np.array_equal(scrambled[1], inputs[1])
    np.testing.assert_array_equal(run(model, scrambled), run(model, inputs))


def test_pooling_matrix_averages_within_length_and_empty_pools_to_zero():
    lengths = np.array([[0, 2, 10, 1, 5, 3, 4], [10, 0, 0, 5, 0, 0, 0]])
    pool = net.pooling_matrix(paddle.to_tensor(lengths), "float32").numpy()
    embedded = np.random.default_rng(0).normal(size=(2, 50, 3))
    pooled = np.einsum("bfc,bce->bfe", pool, embedded)
    for b in range(2):
        for i, cols in enumerate(schema.SEQUENCE_SLICES):
            n = lengths[b, i]
            expected = embedded[b, cols][:n].mean(axis=0) if n else np.zeros(3)
            np.testing.assert_allclose(pooled[b, i], expected, rtol=1e-6, atol=1e-12)


def test_every_expert_layer_is_used(rng):
    # Upstream PaddleRec ran only the first Linear+ReLU of each expert.
    model = make_net(mlp_dims=(16, 8, 8))
    inputs = random_inputs(rng, 20)
    before = run(model, inputs)
    for depth in range(3):
        weights = model.weights()
        weights["expert_w%d" % depth] = weights["expert_w%d" % depth] * 1.5
        assert not np.allclose(run(model, inputs, weights), before), depth


def test_sequence_slices_follow_schema():
    assert [s.stop - s.start for s in schema.SEQUENCE_SLICES] == schema.SEQUENCE_WIDTHS
    assert schema.SEQUENCE_SLICES[-1].stop == schema.SEQUENCE_TOTAL_WIDTH == 50
    assert len(net.FIELD_COLUMNS) == len(make_net().table_names()) == 20
    widths = [c.stop - c.start for c in net.FIELD_COLUMNS]
    assert widths == [1] * 7 + schema.SEQUENCE_WIDTHS + [1] * 6 and sum(widths) == net.ID_COLUMNS


def test_fast_weights_leave_no_state(rng):
    model = make_net()
    inputs = random_inputs(rng, 10)
    before = run(model, inputs)
    weights = {k: v * 0.5 for k, v in model.weights().items()}
    assert not np.allclose(run(model, inputs, weights), before)
    np.testing.assert_array_equal(run(model, inputs), before)
    assert all(not hasattr(p, "fast") for p in model.parameters())


def test_wrong_max_idxs_layout_is_rejected():
    with pytest.raises(ValueError, match="max_idxs"):
        net.MetaHeacNet([[3] * 7, [3] * 7], 4, [8], 2, 2)
