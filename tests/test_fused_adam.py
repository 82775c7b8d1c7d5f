"""The fused Adam step against Adam in NumPy and against Paddle's own Adam; the settings
it leaves to Paddle; its clearing of the gradients."""
import numpy as np
import paddle
import pytest

import maml
import net
from conftest import SMALL_MAX_IDXS, random_inputs
from metaheac import cpu_kernels, fused_adam

BETA1, BETA2, EPSILON = 0.9, 0.999, 1e-8


def parameters(rng, shapes):
    params = []
    for shape in shapes:
        p = paddle.create_parameter(list(shape), "float32")
        p.set_value(rng.normal(size=shape).astype("float32"))
        params.append(p)
    return params


def numpy_adam(values, grads_per_step, learning_rates):
    """Adam with Paddle's bias correction (on the step size and on epsilon), in float64:
    the parameters after each step. A None gradient leaves its parameter and moments be."""
    values = [v.astype(np.float64) for v in values]
    m1 = [np.zeros_like(v) for v in values]
    m2 = [np.zeros_like(v) for v in values]
    steps = [0] * len(values)
    history = []
    for grads, lr in zip(grads_per_step, learning_rates):
        for k, g in enumerate(grads):
            if g is None:
                continue
            steps[k] += 1
            m1[k] = BETA1 * m1[k] + (1 - BETA1) * g
            m2[k] = BETA2 * m2[k] + (1 - BETA2) * g * g
            lr_t = lr * np.sqrt(1 - BETA2 ** steps[k]) / (1 - BETA1 ** steps[k])
            eps_t = EPSILON * np.sqrt(1 - BETA2 ** steps[k])
            values[k] = values[k] - lr_t * m1[k] / (np.sqrt(m2[k]) + eps_t)
        history.append([v.copy() for v in values])
    return history


@pytest.fixture
def kernel_updates(monkeypatch):
    """A list that gets one entry per update the kernel computes."""
    calls, module = [], cpu_kernels.module()

    class Counting:
        def __getattr__(self, name):
            return getattr(module, name)

        def metaheac_fused_adam(self, *args):
            calls.append(len(args[0]))
            return module.metaheac_fused_adam(*args)

    monkeypatch.setattr(cpu_kernels, "module", Counting)
    return calls


def step_with(optimizer, params, grads):
    for p, g in zip(params, grads):
        if g is not None:
            p.grad = paddle.to_tensor(g)
    optimizer.step()
    optimizer.clear_grad(set_to_zero=False)


@pytest.mark.parametrize("threads", ["1", "3"])
def test_steps_are_adam_in_numpy(rng, monkeypatch, threads, kernel_updates):
    # Sizes that split unevenly over the threads, one far below a cache line, and a
    # parameter whose gradient is missing on one step (Adam skips it there).
    monkeypatch.setenv("MKL_NUM_THREADS", threads)
    monkeypatch.setattr(fused_adam, "THREADED_ELEMENTS", 0)
    shapes = [(301, 7), (5,), (1000, 3)]
    params = parameters(rng, shapes)
    start = [p.numpy() for p in params]
    scheduler = paddle.optimizer.lr.StepDecay(0.01, step_size=2, gamma=0.5)
    optimizer = fused_adam.Adam(learning_rate=scheduler, parameters=params, use_multi_tensor=True)
    grads_per_step, rates = [], []
    for step in range(5):
        grads = [rng.normal(size=s).astype("float32") for s in shapes]
        grads[0][:100] = 0.0  # rows without a gradient still move by their momentum
        if step == 2:
            grads[1] = None
        grads_per_step.append(grads)
        rates.append(scheduler.get_lr())
        step_with(optimizer, params, grads)
        scheduler.step()
        for p, expected in zip(params, numpy_adam(start, grads_per_step, rates)[-1]):
            np.testing.assert_allclose(p.numpy(), expected, rtol=1e-6, atol=1e-7)
    assert kernel_updates == [3, 3, 2, 3, 3]  # the kernel's update, not Paddle's


def test_steps_and_checkpoint_state_match_paddles_adam(rng, kernel_updates):
    shapes = [(400, 16), (16,), (3, 5, 7)]
    values = [rng.normal(size=s).astype("float32") for s in shapes]
    ours_params, paddles_params = parameters(rng, shapes), parameters(rng, shapes)
    for p, q, v in zip(ours_params, paddles_params, values):
        p.set_value(v)
        q.set_value(v)
    ours = fused_adam.Adam(learning_rate=0.003, parameters=ours_params, use_multi_tensor=True)
    paddles = paddle.optimizer.Adam(learning_rate=0.003, parameters=paddles_params,
                                    use_multi_tensor=True)
    for _ in range(4):
        grads = [rng.normal(size=s).astype("float32") for s in shapes]
        step_with(ours, ours_params, grads)
        for q, g in zip(paddles_params, grads):
            q.grad = paddle.to_tensor(g)
        paddles.step()
        paddles.clear_grad()
    assert len(kernel_updates) == 4
    for p, q in zip(ours_params, paddles_params):
        # Paddle's CPU kernel rounds a few elements in ten thousand 1-4 units in the last
        # place apart.
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-6, atol=1e-8)
    ours_state, paddles_state = ours.state_dict(), paddles.state_dict()
    renamed = {q.name: p.name for p, q in zip(ours_params, paddles_params)}
    assert len(ours_state) == len(paddles_state)
    for key, value in paddles_state.items():
        if key == "LR_Scheduler":
            continue
        parameter = next(q for q in renamed if key.startswith(q + "_"))
        accumulator = key[len(parameter) + 1:]
        np.testing.assert_allclose(ours_state["%s_%s" % (renamed[parameter], accumulator)].numpy(),
                                   value.numpy(), rtol=1e-6, atol=1e-12, err_msg=key)


def test_a_checkpoint_of_ours_continues_alike_in_ours_and_in_paddles_adam(rng):
    """rec.pdopt files mix: the state ours writes continues in Paddle's Adam as in ours."""
    shapes = [(50, 4), (4,)]
    params = parameters(rng, shapes)
    grads = [[rng.normal(size=s).astype("float32") for s in shapes] for _ in range(3)]
    # Each optimizer names its accumulators afresh, as the process that resumes would.
    with paddle.utils.unique_name.guard():
        ours = fused_adam.Adam(learning_rate=0.01, parameters=params, use_multi_tensor=True)
        step_with(ours, params, grads[0])
    state = {k: v.clone() for k, v in ours.state_dict().items()}
    values = [p.numpy() for p in params]

    def continue_with(optimizer_class):
        for p, v in zip(params, values):
            p.set_value(v)
        with paddle.utils.unique_name.guard():
            optimizer = optimizer_class(learning_rate=0.01, parameters=params,
                                        use_multi_tensor=True)
            optimizer.set_state_dict({k: v.clone() for k, v in state.items()})
            for g in grads[1:]:
                for p, gi in zip(params, g):
                    p.grad = paddle.to_tensor(gi)
                optimizer.step()
                optimizer.clear_grad()
        return [p.numpy() for p in params]

    for a, b in zip(continue_with(fused_adam.Adam), continue_with(paddle.optimizer.Adam)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)


def test_clear_grad_zeroes_every_gradient_and_can_release_them(rng):
    params = parameters(rng, [(600, 500), (3,)])
    optimizer = fused_adam.Adam(parameters=params, use_multi_tensor=True)
    for p in params:
        p.grad = paddle.to_tensor(rng.normal(size=p.shape).astype("float32"))
    optimizer.clear_grad()
    for p in params:
        assert p.grad is not None and not p.grad.numpy().any()
    optimizer.clear_grad(set_to_zero=False)
    assert all(p.grad is None for p in params)


@pytest.mark.parametrize("setting", [
    {"weight_decay": 0.01},
    {"grad_clip": paddle.nn.ClipGradByGlobalNorm(0.1)},
    {"amsgrad": True},
    {"lazy_mode": True},
    {"use_multi_tensor": False},
])
def test_weight_decay_and_clipping_are_paddles_and_other_settings_paddles_update(
        rng, setting, kernel_updates):
    """Paddle decays and clips the gradients before the kernel's update; settings the kernel
    does not compute take Paddle's own update, bit for bit."""
    shapes = [(20, 3), (3,)]
    values = [rng.normal(size=s).astype("float32") for s in shapes]
    results = []
    for optimizer_class in (fused_adam.Adam, paddle.optimizer.Adam):
        params = parameters(rng, shapes)
        for p, v in zip(params, values):
            p.set_value(v)
        optimizer = optimizer_class(learning_rate=0.1, parameters=params,
                                    **{"use_multi_tensor": True, **setting})
        for step in range(3):
            step_rng = np.random.default_rng(step)  # the same gradients for both optimizers
            for p, s in zip(params, shapes):
                p.grad = paddle.to_tensor(step_rng.normal(size=s).astype("float32"))
            optimizer.step()
        results.append([p.numpy() for p in params])
    uses_kernel = set(setting) <= {"weight_decay", "grad_clip"}
    assert kernel_updates == ([len(shapes)] * 3 if uses_kernel else [])
    for ours, paddles in zip(*results):
        if uses_kernel:
            np.testing.assert_allclose(ours, paddles, rtol=1e-6, atol=1e-7)
        else:
            np.testing.assert_array_equal(ours, paddles)


def test_clear_grad_zeroes_fine_tunings_strided_gradient(rng):
    """A campaign's copy of the experts' first layer gets its gradient through a transposed
    view, strided: the kernel, which indexes raw memory, leaves it to Paddle to zero."""
    model = net.MetaHeacNet(SMALL_MAX_IDXS, 5, [12], num_expert=3, num_output=2)
    local, (inputs,) = maml.localize(model, model.weights(), [random_inputs(rng, 20)])
    weights = maml.leaf_copies(local)
    optimizer = fused_adam.Adam(learning_rate=0.01, parameters=list(weights.values()),
                                use_multi_tensor=True)
    labels = paddle.to_tensor((rng.random(20) < 0.4).astype("float32"))
    maml.bce(model(*inputs, weights=weights), labels).backward()
    assert not weights["expert_w0"].grad.is_contiguous()
    optimizer.clear_grad()
    assert all(not w.grad.numpy().any() for w in weights.values())
