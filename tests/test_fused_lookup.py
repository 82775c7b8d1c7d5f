"""The fused lookup kernel against NumPy, against Paddle's ops in the network, its
errors, and the fallback when it cannot be built."""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

import maml
import net
from metaheac import cpu_kernels, fused_adam, fused_lookup, schema
from conftest import random_inputs

WIDTHS = np.array(schema.SEQUENCE_WIDTHS)
STARTS = np.concatenate([[0], np.cumsum(WIDTHS)[:-1]])


def numpy_lookup(table, static, sequence, lengths, ad):
    """The user fields (static, then each sequence field's sum over its first `length`
    ids divided by the length, at least 1) and the ad fields."""
    pooled = np.zeros(lengths.shape + (table.shape[1],))
    for row in range(len(lengths)):
        for field, (start, width) in enumerate(zip(STARTS, WIDTHS)):
            used = sequence[row, start:start + min(lengths[row, field], width)]
            pooled[row, field] = table[used].sum(axis=0) / max(lengths[row, field], 1)
    return np.concatenate([table[static], pooled], axis=1), table[ad]


def numpy_table_grad(table, static, sequence, lengths, ad, grad_user, grad_ad):
    """The gradient of sum(user * grad_user) + sum(ad * grad_ad) by the table, each
    looked-up row's share added with np.add.at."""
    grad = np.zeros_like(table)
    n_static = static.shape[1]
    np.add.at(grad, static, grad_user[:, :n_static])
    np.add.at(grad, ad, grad_ad)
    for row in range(len(lengths)):
        for field, (start, width) in enumerate(zip(STARTS, WIDTHS)):
            used = sequence[row, start:start + min(lengths[row, field], width)]
            np.add.at(grad, used, grad_user[row, n_static + field] / max(lengths[row, field], 1))
    return grad


def local_inputs(rng, batch, rows):
    """Ids into a table of `rows` rows, repeats within a row included; some sequences
    empty, some full."""
    static, sequence, lengths, ad = (rng.integers(0, rows, (batch, width)) for width in
                                     (len(schema.STATIC_FIELDS), schema.SEQUENCE_TOTAL_WIDTH,
                                      len(schema.SEQUENCE_FIELDS), len(schema.AD_FIELDS)))
    lengths = rng.integers(0, WIDTHS + 1, lengths.shape)
    lengths[0] = 0
    lengths[1] = WIDTHS
    return static, sequence, lengths, ad


def test_the_kernel_is_built_here():
    # Anywhere with a C++ compiler (this project's CI machines) the fast path is the one tested.
    assert cpu_kernels.module() is not None


@pytest.mark.parametrize("threads", ["1", "3"])
def test_lookup_and_its_gradient_match_numpy(rng, monkeypatch, threads):
    # On 3 threads the forward splits 30 batch rows and the backward 9 table rows.
    monkeypatch.setenv("MKL_NUM_THREADS", threads)
    monkeypatch.setattr(fused_lookup, "THREADED_ROWS", 0)
    table = rng.normal(size=(9, 5)).astype("float32")
    inputs = local_inputs(rng, 30, 9)
    grad_user = rng.normal(size=(30, schema.USER_FIELDS, 5)).astype("float32")
    grad_ad = rng.normal(size=(30, len(schema.AD_FIELDS), 5)).astype("float32")
    table_t = paddle.to_tensor(table, stop_gradient=False)
    user, ad = fused_lookup.lookup(table_t, *[paddle.to_tensor(x) for x in inputs])
    grad, = paddle.grad([user, ad], [table_t], [paddle.to_tensor(grad_user), paddle.to_tensor(grad_ad)])
    expected_user, expected_ad = numpy_lookup(table.astype(np.float64), *inputs)
    np.testing.assert_allclose(user.numpy(), expected_user, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ad.numpy(), expected_ad.astype("float32"))
    np.testing.assert_allclose(
        grad.numpy(), numpy_table_grad(table.astype(np.float64), *inputs, grad_user, grad_ad),
        rtol=1e-5, atol=1e-5)


def test_a_length_above_the_width_divides_by_the_length_as_paddles_ops_do(rng):
    table = paddle.to_tensor(rng.normal(size=(7, 4)).astype("float32"))
    static, sequence, lengths, ad = local_inputs(rng, 3, 7)
    lengths[:] = WIDTHS + 2
    user, _ = fused_lookup.lookup(table, *[paddle.to_tensor(x) for x in (static, sequence, lengths, ad)])
    pooled = paddle.matmul(net.pooling_matrix(paddle.to_tensor(lengths), "float32"),
                           F.embedding(paddle.to_tensor(sequence), table))
    np.testing.assert_allclose(user.numpy()[:, len(schema.STATIC_FIELDS):], pooled.numpy(),
                               rtol=1e-6, atol=1e-6)


def test_an_id_outside_the_table_is_an_error_naming_it(rng):
    table = paddle.to_tensor(rng.normal(size=(6, 4)).astype("float32"))
    static, sequence, lengths, ad = local_inputs(rng, 4, 6)
    sequence[2, 3] = 6
    with pytest.raises(Exception, match="a sequence id is 6, outside the local table's 6 rows"):
        fused_lookup.lookup(table, *[paddle.to_tensor(x) for x in (static, sequence, lengths, ad)])


def test_the_network_on_a_local_table_agrees_with_paddles_ops(rng):
    """Prediction and every gradient of one task's loss, fused and with F.embedding."""
    paddle.seed(2)
    model = net.MetaHeacNet([[40] * 7, [60] * 7, [30] * 6], 8, [16], num_expert=3, num_output=4)
    inputs = random_inputs(rng, 50, [[40] * 7, [60] * 7, [30] * 6])
    inputs[2][:4] = 0
    labels = paddle.to_tensor(rng.integers(0, 2, 50).astype("float32"))
    results = []
    for lookup in (None, F.embedding):
        local, (batch,) = maml.localize(model, model.weights(), [inputs])
        loss = maml.bce(model(*batch, weights=local, lookup=lookup), labels)
        names = sorted(local)
        results.append([loss] + list(paddle.grad(loss, [local[n] for n in names])))
    for fused, paddles in zip(*results):
        np.testing.assert_allclose(fused.numpy(), paddles.numpy(), rtol=1e-5, atol=1e-7)


def test_without_a_compiler_the_network_and_the_optimizer_keep_paddles_ops(
        rng, tmp_path, monkeypatch):
    broken = tmp_path / "fused_lookup.cc"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(cpu_kernels, "SOURCES", [str(broken)])
    monkeypatch.setenv("PADDLE_EXTENSION_DIR", str(tmp_path / "build"))
    with pytest.warns(UserWarning, match="C\\+\\+ kernels .*fused_lookup.cc.* could not be built: "
                                         ".*slower ops"):
        assert cpu_kernels.module() is None
    table = paddle.to_tensor(rng.normal(size=(9, 5)).astype("float32"))
    assert not fused_lookup.applies(table, [paddle.to_tensor(x) for x in local_inputs(rng, 3, 9)])
    param = paddle.create_parameter([4], "float32")
    start = param.numpy()
    optimizer = fused_adam.Adam(learning_rate=0.1, parameters=[param], use_multi_tensor=True)
    param.grad = paddle.to_tensor(np.ones(4, "float32"))
    optimizer.step()  # Paddle's update: Adam's first step moves each weight by the rate
    optimizer.clear_grad()
    np.testing.assert_allclose(param.numpy(), start - 0.1, rtol=1e-5)
    assert not param.grad.numpy().any()


def test_add_rows_adds_each_tables_block_at_its_rows(rng):
    """The backward of gathering a local table, against np.add.at; a table may stand in
    the list twice (order 0's tasks share the tables) and a block may be empty."""
    grads = [rng.normal(size=(rows, 3)).astype("float32") for rows in (10, 4)]
    rows = [np.array([7, 0, 3]), np.array([], dtype=np.int64), np.array([1, 2]),
            np.array([3, 9])]
    owner = [0, 1, 1, 0]
    local = rng.normal(size=(7, 3)).astype("float32")
    expected = [g.astype(np.float64) for g in grads]
    start = 0
    for table, r in zip(owner, rows):
        np.add.at(expected[table], r, local[start:start + len(r)])
        start += len(r)
    tensors = [paddle.to_tensor(g) for g in grads]
    assert fused_lookup.add_rows([tensors[k] for k in owner], paddle.to_tensor(local),
                                 [paddle.to_tensor(r) for r in rows])
    for got, want in zip(tensors, expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-6)


def test_add_rows_names_a_row_outside_its_table(rng):
    grad = paddle.zeros([4, 2])
    with pytest.raises(Exception, match="a row id is 4, outside a full table's 4 rows"):
        fused_lookup.add_rows([grad], paddle.ones([2, 2]), [paddle.to_tensor(np.array([1, 4]))])
