"""Straightforward formulations that the fast code is checked and timed against.

Written the plain way upstream PaddleRec writes them, on every parameter of the full
model: the tests compare ``maml.meta_step`` and ``infer.fine_tune`` with these
(``tests/test_maml.py``), and ``tools/bench.py`` times both ways.
"""
import numpy as np
import paddle
import paddle.nn.functional as F

from metaheac import schema


def random_inputs(rng, shape, max_idxs=schema.DEFAULT_MAX_IDXS):
    """Random (static, sequence, lengths, ad) int64 arrays of leading `shape`, ids
    within `max_idxs` (the three lists of ``hyper_parameters.max_idxs``)."""
    static_max, sequence_max, ad_max = max_idxs
    shape = tuple(shape)
    static = np.stack([rng.integers(0, m + 1, shape) for m in static_max], axis=-1)
    sequence = np.concatenate(
        [rng.integers(0, m + 1, shape + (f.width,))
         for f, m in zip(schema.SEQUENCE_FIELDS, sequence_max)], axis=-1)
    lengths = np.stack([rng.integers(0, f.width + 1, shape) for f in schema.SEQUENCE_FIELDS],
                       axis=-1)
    ad = np.stack([rng.integers(0, m + 1, shape) for m in ad_max], axis=-1)
    return [static, sequence, lengths, ad]


def full_table_meta_loss(model, sx, sy, qx, qy, lr):
    """Upstream's meta-step: per task, backward the support loss, fast = w - lr * w.grad
    on every parameter (full tables included), then the query loss with the fast
    weights; the mean over tasks. Inputs: tensors with a leading task axis."""
    params = dict(model.named_parameters())
    losses = []
    for t in range(sy.shape[0]):
        model.clear_gradients()
        support = F.binary_cross_entropy(model(*[x[t] for x in sx]), sy[t])
        support.backward()
        fast = {n: p - lr * p.grad.detach().clone() for n, p in params.items()}
        model.clear_gradients()
        query = model(*[x[t] for x in qx], weights=fast)
        losses.append(F.binary_cross_entropy(query, qy[t]))
    return paddle.stack(losses).mean()


def full_model_fine_tune(model, optimizer, seed_x, seed_y, epochs, batch_size):
    """Upstream's per-campaign fine-tuning: `epochs` passes over the seed rows in
    batches, each step of `optimizer` moving every parameter of `model` in place."""
    seed_x = [paddle.to_tensor(x) for x in seed_x]
    seed_y = paddle.to_tensor(seed_y)
    for _ in range(epochs):
        for start in range(0, len(seed_y), batch_size):
            rows = slice(start, start + batch_size)
            loss = F.binary_cross_entropy(model(*[x[rows] for x in seed_x]), seed_y[rows])
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
