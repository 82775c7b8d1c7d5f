"""The task-local formulation against the straightforward full-table one (upstream's)."""
import contextlib

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

import maml
import net
from conftest import SMALL_MAX_IDXS, random_inputs
from dygraph_model import DygraphModel
from metaheac import fused_lookup
from metaheac.reference import full_model_fine_tune, full_table_meta_loss

LOCAL_LR = 0.05  # large, so that a wrong inner step would show


def make_net(seed=11):
    paddle.seed(seed)
    # one expert layer: the network upstream computes (it lists two, applies one)
    return net.MetaHeacNet(SMALL_MAX_IDXS, 5, [12], num_expert=3, num_output=2)


def tensors(arrays):
    return [paddle.to_tensor(a) for a in arrays]


def task_batch(rng, tasks=3, batch=16):
    sx, qx = random_inputs(rng, batch, leading=(tasks,)), random_inputs(rng, batch, leading=(tasks,))
    sy = (rng.random((tasks, batch)) < 0.4).astype("float32")
    qy = (rng.random((tasks, batch)) < 0.4).astype("float32")
    return sx, sy, qx, qy


@pytest.mark.parametrize("kernels", [True, False])
def test_meta_step_matches_full_table_reference(rng, kernels):
    """With the C++ kernels, and with Paddle's ops in their place (as off the CPU)."""
    ours, reference = make_net(), make_net()
    sx, sy, qx, qy = task_batch(rng)
    ref_loss = full_table_meta_loss(reference, tensors(sx), paddle.to_tensor(sy), tensors(qx),
                                    paddle.to_tensor(qy), LOCAL_LR)
    ref_loss.backward()
    with contextlib.nullcontext() if kernels else fused_lookup.disabled():
        loss, predictions = maml.meta_step(ours, tensors(sx), paddle.to_tensor(sy), tensors(qx),
                                           paddle.to_tensor(qy), LOCAL_LR)
        loss.backward()
    assert predictions.shape == [3, 16]
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-6)
    ref_params = dict(reference.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), ref_params[name].grad.numpy(),
                                   rtol=1e-4, atol=1e-7, err_msg=name)
    # One outer Adam step moves both models alike.
    for model in (ours, reference):
        paddle.optimizer.Adam(learning_rate=0.01, parameters=model.parameters()).step()
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.numpy(), ref_params[name].numpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=name)


@pytest.mark.parametrize("order", [0, 1, 2])
@pytest.mark.parametrize("tasks", [1, 3])
def test_every_gradient_is_contiguous_memory(rng, order, tasks):
    # Data-parallel runs all-reduce the gradients as flat memory (fused buckets): a
    # strided gradient, as a transposed view's backward gives, would be read out of order.
    model = make_net()
    sx, sy, qx, qy = task_batch(rng, tasks=tasks)
    loss, _ = maml.meta_step(model, tensors(sx), paddle.to_tensor(sy), tensors(qx),
                             paddle.to_tensor(qy), LOCAL_LR, order=order)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is None or p.grad.is_contiguous(), name


def test_inner_step_adapts_and_differs_from_no_adaptation(rng):
    model = make_net()
    sx, sy, qx, qy = task_batch(rng, tasks=2)
    adapted, _ = maml.meta_step(model, tensors(sx), paddle.to_tensor(sy), tensors(qx),
                                paddle.to_tensor(qy), LOCAL_LR)
    plain, _ = maml.meta_step(model, tensors(sx), paddle.to_tensor(sy), tensors(qx),
                              paddle.to_tensor(qy), 0.0)
    direct = np.mean([float(F.binary_cross_entropy(model(*tensors([x[t] for x in qx])),
                                                   paddle.to_tensor(qy[t]))) for t in range(2)])
    np.testing.assert_allclose(float(plain), direct, rtol=1e-6)
    assert abs(float(adapted) - float(plain)) > 1e-6


def test_meta_step_leaves_parameters_and_grads_untouched(rng):
    model = make_net()
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    sx, sy, qx, qy = task_batch(rng)
    maml.meta_step(model, tensors(sx), paddle.to_tensor(sy), tensors(qx), paddle.to_tensor(qy),
                   LOCAL_LR)
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p.numpy(), before[name])
        assert p.grad is None or not p.grad.numpy().any(), name


def test_localize_remaps_ids_to_gathered_rows(rng):
    model = make_net()
    batches = [random_inputs(rng, 7), random_inputs(rng, 5)]
    local, remapped = maml.localize(model, model.weights(), batches)
    assert not set(model.table_names()) & set(local)
    table = local[net.LOCAL_TABLE].numpy()
    for original, mapped in zip(batches, remapped):
        ids = net.packed_ids(*[original[i] for i in (0, 1, 3)])
        local_ids = net.packed_ids(*[mapped[i].numpy() for i in (0, 1, 3)])
        for name, cols in zip(model.table_names(), net.FIELD_COLUMNS):
            full = model.weights()[name].numpy()[ids[:, cols]]
            np.testing.assert_array_equal(table[local_ids[:, cols]], full, err_msg=name)
        np.testing.assert_array_equal(mapped[2].numpy(), original[2])
    distinct = sum(len(np.unique(np.concatenate([net.packed_ids(*[b[i] for i in (0, 1, 3)])[:, cols]
                                                 for b in batches], axis=None)))
                   for cols in net.FIELD_COLUMNS)
    assert table.shape[0] == distinct


def test_local_table_gradient_lands_on_the_rows_it_was_gathered_from(rng):
    model = make_net()
    batch = random_inputs(rng, 6)
    local, (mapped,) = maml.localize(model, model.weights(), [batch])
    probe = paddle.to_tensor(rng.normal(size=local[net.LOCAL_TABLE].shape).astype("float32"))
    (local[net.LOCAL_TABLE] * probe).sum().backward()
    ids = net.packed_ids(*[batch[i] for i in (0, 1, 3)])
    local_ids = net.packed_ids(*[mapped[i].numpy() for i in (0, 1, 3)])
    for name, cols in zip(model.table_names(), net.FIELD_COLUMNS):
        expected = np.zeros(model.weights()[name].shape, np.float32)
        rows, first = np.unique(ids[:, cols], return_index=True)
        expected[rows] = probe.numpy()[local_ids[:, cols].ravel()[first]]
        np.testing.assert_array_equal(model.weights()[name].grad.numpy(), expected, err_msg=name)


def full_model_finetune_scores(model, config, seed_x, seed_y, candidate_x, epochs, batch):
    """Fine-tune every parameter of a copy of the model, as upstream's infer does."""
    copy = make_net()
    copy.set_state_dict(model.state_dict())
    optimizer = DygraphModel().create_optimizer(copy, config, mode="infer")
    full_model_fine_tune(copy, optimizer, seed_x, seed_y, epochs, batch)
    with paddle.no_grad():
        return copy(*tensors(candidate_x)).numpy()


def test_campaign_finetune_matches_full_model_finetune(rng):
    import infer
    model = make_net()
    config = {"hyper_parameters.batch_size": 8, "runner.infer_train_epoch": 3,
              "hyper_parameters.optimizer.local_test_learning_rate": 0.05}
    seed_x, candidate_x = random_inputs(rng, 21), random_inputs(rng, 13)
    seed_y = (rng.random(21) < 0.5).astype("float32")
    candidate_y = (rng.random(13) < 0.5).astype("float32")
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    expected = full_model_finetune_scores(model, config, seed_x, seed_y, candidate_x, 3, 8)
    model_class = DygraphModel()
    metrics, _ = model_class.create_metrics()
    local, _ = model_class.create_metrics()
    scores, done = infer.adapt_and_score(model_class, model, config, seed_x, seed_y, candidate_x,
                                         candidate_y, metrics, local)
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    assert done == {"finetune": "fixed", "finetune_steps": 9, "validation_auc": done["validation_auc"]}
    assert np.isnan(done["validation_auc"])  # 3 epochs of ceil(21 / 8) steps, nothing held out
    no_tuning = model(*tensors(candidate_x)).numpy()
    assert np.abs(scores - no_tuning).max() > 1e-4
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), before[name])


# --- hyper_parameters.meta_order and inner_steps -----------------------------------


def full_table_fast_weights(model, inputs, labels, lr, steps, moves=lambda name: True):
    """`steps` plain SGD steps on every parameter (full tables) for which `moves(name)`,
    each support gradient taken as a constant: the first-order fast weights, written
    without maml."""
    fast = dict(model.named_parameters())
    for _ in range(steps):
        at = {n: w.detach() for n, w in fast.items()}
        for w in at.values():
            w.stop_gradient = False
        loss = F.binary_cross_entropy(model(*tensors(inputs), weights=at), paddle.to_tensor(labels))
        grads = dict(zip(at, paddle.grad(loss, list(at.values()))))
        fast = {n: fast[n] - lr * grads[n] if moves(n) else fast[n] for n in fast}
    return fast


# The gates' and critics' parameters, spelled out rather than taken from net.py.
GATES_AND_CRITICS = {"expert_gate_hidden.weight", "expert_gate_hidden.bias",
                     "expert_gate_out.weight", "expert_gate_out.bias",
                     "critic_gate_hidden.weight", "critic_gate_hidden.bias",
                     "critic_gate_out.weight", "critic_gate_out.bias", "critic_w", "critic_b"}


@pytest.mark.parametrize("inner_params, moves", [
    ("all", lambda name: True), ("gates_critics", GATES_AND_CRITICS.__contains__)])
def test_more_inner_steps_match_full_table_steps(rng, inner_params, moves):
    ours, reference = make_net(), make_net()
    sx, sy, qx, qy = task_batch(rng, tasks=2)
    fast = [full_table_fast_weights(reference, [x[t] for x in sx], sy[t], LOCAL_LR, 3, moves)
            for t in range(2)]
    losses = [F.binary_cross_entropy(reference(*tensors([x[t] for x in qx]), weights=fast[t]),
                                     paddle.to_tensor(qy[t])) for t in range(2)]
    paddle.stack(losses).mean().backward()
    loss, _ = maml.meta_step(ours, tensors(sx), paddle.to_tensor(sy), tensors(qx),
                             paddle.to_tensor(qy), LOCAL_LR, order=1, inner_steps=3,
                             inner_params=inner_params)
    loss.backward()
    np.testing.assert_allclose(float(loss), float(paddle.stack(losses).mean()), rtol=1e-6)
    ref_params = dict(reference.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), ref_params[name].grad.numpy(),
                                   rtol=1e-4, atol=1e-7, err_msg=name)


def test_order_zero_is_the_unadapted_query_loss_and_its_gradient(rng):
    ours, reference = make_net(), make_net()
    sx, sy, qx, qy = task_batch(rng, tasks=2)
    loss, _ = maml.meta_step(ours, tensors(sx), paddle.to_tensor(sy), tensors(qx),
                             paddle.to_tensor(qy), LOCAL_LR, order=0)
    loss.backward()
    plain = paddle.stack([F.binary_cross_entropy(reference(*tensors([x[t] for x in qx])),
                                                 paddle.to_tensor(qy[t])) for t in range(2)]).mean()
    plain.backward()
    np.testing.assert_allclose(float(loss), float(plain), rtol=1e-6)
    ref_params = dict(reference.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), ref_params[name].grad.numpy(),
                                   rtol=1e-5, atol=1e-8, err_msg=name)


def test_order_zero_tasks_in_one_batch_equal_the_task_loop(rng):
    batched, looped = make_net(), make_net()
    sx, sy, qx, qy = task_batch(rng, tasks=3)
    results = []
    for model, as_one_batch in ((batched, True), (looped, False)):
        loss, predictions = maml.meta_step(model, tensors(sx), paddle.to_tensor(sy), tensors(qx),
                                           paddle.to_tensor(qy), LOCAL_LR, order=0,
                                           batched=as_one_batch)
        loss.backward()
        results.append((float(loss), predictions.numpy()))
    assert results[0][1].shape == (3, 16)
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-6)
    loop_params = dict(looped.named_parameters())
    for name, p in batched.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), loop_params[name].grad.numpy(),
                                   rtol=1e-5, atol=1e-8, err_msg=name)


@pytest.fixture
def float64():
    # Central differences need double precision: in float32 their round-off
    # (~1e-7 / eps) would swamp the second-order term being checked.
    previous = paddle.get_default_dtype()
    paddle.set_default_dtype("float64")
    yield
    paddle.set_default_dtype(previous)


def test_the_gates_and_critics_are_named_as_the_network_names_them():
    assert set(make_net().gate_and_critic_names()) == GATES_AND_CRITICS


@pytest.mark.parametrize("inner_steps, inner_params", [(1, "all"), (2, "all"), (2, "gates_critics")])
def test_order_two_gradient_is_the_derivative_of_the_adapted_query_loss(rng, float64, inner_steps,
                                                                        inner_params):
    """The order-2 meta-gradient against central differences of the meta-loss (the
    query loss after the inner steps) along random directions; order 1 misses."""
    lr = 0.5  # large, so that the second-order term is far above the tolerance
    model = make_net()
    sx, sy, qx, qy = task_batch(rng, tasks=2, batch=8)
    batch = [tensors(sx), paddle.to_tensor(sy, dtype="float64"), tensors(qx),
             paddle.to_tensor(qy, dtype="float64")]
    params = dict(model.named_parameters())
    start = {n: p.numpy().copy() for n, p in params.items()}

    def meta_loss(order, at=start):
        for n, p in params.items():
            p.set_value(at[n])
        return maml.meta_step(model, *batch, lr, order=order, inner_steps=inner_steps,
                              inner_params=inner_params)[0]

    def gradient(order):
        model.clear_gradients()
        meta_loss(order).backward()
        return {n: p.grad.numpy().copy() for n, p in params.items()}

    second, first = gradient(2), gradient(1)
    eps = 1e-5
    for _ in range(3):
        direction = {n: rng.standard_normal(v.shape) for n, v in start.items()}
        step = lambda sign: {n: start[n] + sign * eps * direction[n] for n in start}  # noqa: E731
        numeric = (float(meta_loss(2, step(1))) - float(meta_loss(2, step(-1)))) / (2 * eps)
        along = lambda g: sum(float((g[n] * direction[n]).sum()) for n in g)  # noqa: E731
        np.testing.assert_allclose(along(second), numeric, rtol=1e-6)
        assert abs(along(first) - numeric) > 1e-3 * abs(numeric)


def test_multi_tensor_adam_is_per_parameter_adam(rng):
    """DygraphModel's Adam updates all parameters in one kernel; steps and checkpoint
    state must match Paddle's default Adam, one kernel per parameter."""
    ours, reference = make_net(), make_net()
    config = {"hyper_parameters.optimizer.global_learning_rate": 0.01}
    ours_opt = DygraphModel().create_optimizer(ours, config)
    ref_opt = paddle.optimizer.Adam(learning_rate=0.01, parameters=reference.parameters())
    ref_params = dict(reference.named_parameters())
    for _ in range(4):
        sx, sy, qx, qy = task_batch(rng)
        loss, _ = maml.meta_step(ours, tensors(sx), paddle.to_tensor(sy), tensors(qx),
                                 paddle.to_tensor(qy), LOCAL_LR)
        loss.backward()
        # Both optimizers step on the same gradients: a second backward could differ in
        # the last bit (summation order), which Adam's first steps would magnify.
        for name, p in ours.named_parameters():
            ref_params[name].grad = p.grad.clone()
        for optimizer in (ours_opt, ref_opt):
            optimizer.step()
            optimizer.clear_grad()
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.numpy(), ref_params[name].numpy(), rtol=1e-5, atol=1e-7,
                                   err_msg=name)
    ours_state, ref_state = ours_opt.state_dict(), ref_opt.state_dict()
    assert len(ours_state) == len(ref_state)
    for name, p in ours.named_parameters():  # the same rec.pdopt entries, so checkpoints mix
        for accumulator in ("moment1_0", "moment2_0", "beta1_pow_acc_0", "beta2_pow_acc_0"):
            np.testing.assert_allclose(
                ours_state["%s_%s" % (p.name, accumulator)].numpy(),
                ref_state["%s_%s" % (ref_params[name].name, accumulator)].numpy(),
                rtol=1e-4, atol=1e-8, err_msg=name)
