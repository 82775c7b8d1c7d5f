"""MAML on task-local embedding tables: the meta-training step and per-campaign copies.

A task reads only a few hundred rows of each embedding table, yet a full-table
inner step would build a full-size fast copy of every table (the largest has
263,313 rows). ``localize`` gathers just the rows the given batches use into small
tables and remaps the ids to index them. Because the support loss has zero
gradient on every other row, the inner step on the small tables gives the same
fast weights on every row a query reads, and the outer gradient flows back to the
full tables through the gather: the same maths at a cost independent of the
vocabulary size (tests/test_maml.py checks it against the full-table formulation).

``hyper_parameters.meta_order`` chooses how the outer gradient treats the inner
steps: 1 (upstream PaddleRec) takes each support gradient as a constant; 2
differentiates through it, as the authors' code does with ``create_graph=True``; 0
is the baseline without adaptation (see ``adapt``).
"""
import contextlib

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle.framework import core

from net import TABLE_INPUTS


def localize(net, weights, batches):
    """Swap each table in `weights` for the rows that `batches` use.

    `batches` is a list of input lists (static, sequence, lengths, ad) of any
    leading shape. Returns the weights with task-local tables (gathered, so
    gradients reach the full tables) and the batches with ids remapped.
    """
    arrays = [[np.asarray(x) for x in batch] for batch in batches]
    remapped = [[a.copy() for a in batch] for batch in arrays]
    local = dict(weights)
    for name, (which, cols) in zip(net.table_names(), TABLE_INPUTS):
        blocks = [batch[which][..., cols] for batch in arrays]
        used, local_ids = np.unique(np.concatenate([b.ravel() for b in blocks]),
                                    return_inverse=True)
        local[name] = paddle.gather(weights[name], paddle.to_tensor(used))
        bounds = np.cumsum([0] + [b.size for b in blocks])
        for batch, block, start in zip(remapped, blocks, bounds):
            batch[which][..., cols] = local_ids[start:start + block.size].reshape(block.shape)
    return local, [[paddle.to_tensor(a) for a in batch] for batch in remapped]


def leaf_copies(weights):
    """Independent trainable copies, so an optimizer on them leaves `weights` alone."""
    copies = {}
    for name, value in weights.items():
        copy = value.detach().clone()
        copy.stop_gradient = False
        copies[name] = copy
    return copies


def first_order_step(net, weights, inputs, labels, local_lr):
    """One SGD step on a support batch; returns the fast weights.

    First order, as upstream PaddleRec: the support gradient is taken as a
    constant, so the outer gradient flows into `weights` only through
    ``fast = weights - local_lr * grad``.
    """
    frozen = {}
    for name, value in weights.items():
        frozen[name] = value.detach()
        frozen[name].stop_gradient = False
    loss = F.binary_cross_entropy(net(*inputs, weights=frozen), labels)
    grads = paddle.grad(loss, list(frozen.values()))
    return {name: weights[name] - local_lr * grad for name, grad in zip(frozen, grads)}


def second_order_step(net, weights, inputs, labels, local_lr):
    """One SGD step whose support gradient stays differentiable (full MAML).

    Paddle has no gradient of the gradient for its embedding, softmax, mean and
    BCE ops. So the support pass indexes the tables with ``paddle.gather``, builds
    the gradients of softmax and mean from primitive ops (Paddle's "prim" mode) and
    writes the BCE out; each of these has a second derivative.
    """
    with _primitive_gradients():
        prediction = net(*inputs, weights=weights, lookup=_gather_rows)
        loss = -(labels * _log(prediction) + (1 - labels) * _log(1 - prediction)).mean()
        grads = paddle.grad(loss, list(weights.values()), create_graph=True)
    return {name: value - local_lr * grad for (name, value), grad in zip(weights.items(), grads)}


INNER_STEP = {1: first_order_step, 2: second_order_step}


def adapt(net, weights, inputs, labels, local_lr, order=1, steps=1):
    """A task's fast weights: `steps` inner SGD steps on one support batch.

    Order 0, the baseline, does not adapt: the weights come back as they are,
    so the meta-loss is the plain loss of the shared model on the query batches.
    """
    if order == 0:
        return weights
    for _ in range(steps):
        weights = INNER_STEP[order](net, weights, inputs, labels, local_lr)
    return weights


def meta_step(net, support_x, support_y, query_x, query_y, local_lr, order=1, inner_steps=1):
    """The meta-loss of one batch of tasks.

    Inputs carry a leading task axis (T x B x ...). For each task: adapt on its
    support batch, then the loss of the adapted weights on its query batch.
    Returns the mean query loss (to be minimised by the outer optimizer) and the
    query predictions, T x B.
    """
    weights, (support_x, query_x) = localize(net, net.weights(), [support_x, query_x])
    losses, predictions = [], []
    for task in range(support_y.shape[0]):
        fast = adapt(net, weights, [x[task] for x in support_x], support_y[task], local_lr,
                     order, inner_steps)
        prediction = net(*[x[task] for x in query_x], weights=fast)
        losses.append(F.binary_cross_entropy(prediction, query_y[task]))
        predictions.append(prediction)
    return paddle.stack(losses).mean(), paddle.stack(predictions)


def _log(p):
    # Floored at -100 like F.binary_cross_entropy, so a saturated score stays finite.
    return paddle.clip(paddle.log(p), min=-100.0)


def _gather_rows(ids, table):
    # An embedding lookup built from gather, which has a second derivative.
    return paddle.gather(table, ids.flatten()).reshape(list(ids.shape) + [table.shape[1]])


@contextlib.contextmanager
def _primitive_gradients():
    enabled = core._is_eager_prim_enabled()
    core.set_prim_eager_enabled(True)
    try:
        yield
    finally:
        core.set_prim_eager_enabled(enabled)
