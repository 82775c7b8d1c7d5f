"""MAML on task-local embedding tables: the meta-training step and per-campaign copies.

A task reads only a few hundred rows of each embedding table, yet a full-table
inner step would build a full-size fast copy of every table (the largest has
263,313 rows). ``localize`` gathers just the rows a task's batches use, from every
table, into one small table and remaps the ids to index it. Because the support
loss has zero gradient on every other row, the inner step on the small table gives
the same fast weights on every row a query reads. The outer gradient of the small
table is added into the full tables' gradients, row by row, when ``backward`` reaches
it: the same maths at a cost independent of the vocabulary size
(tests/test_maml.py checks it against the full-table formulation).

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

from metaheac import fused_lookup

from net import FIELD_COLUMNS, LOCAL_TABLE, packed_ids, split_ids, with_first_layer_laid_out


def local_index(batches, table_sizes):
    """The NumPy half of ``localize``: which rows of each table `batches` use.

    `batches` is a list of input lists (static, sequence, lengths, ad) of NumPy ids
    of any leading shape; `table_sizes` the tables' row counts, in table order.
    Returns one array per table of the rows used (ascending), and per batch its
    (static, sequence, ad) ids remapped to index those rows stacked in table order.
    It needs only the ids, so readers run it before the ids reach the device.
    """
    ids = [packed_ids(static, sequence, ad) for static, sequence, _, ad in batches]
    # Number the rows of all tables consecutively, so one np.unique finds them all.
    offsets = np.cumsum([0] + list(table_sizes))
    column_offset = np.zeros(ids[0].shape[-1], dtype=np.int64)
    for cols, offset in zip(FIELD_COLUMNS, offsets):
        column_offset[cols] = offset
    used, local_ids = np.unique(np.concatenate([(i + column_offset).ravel() for i in ids]),
                                return_inverse=True)
    bounds = np.searchsorted(used, offsets)
    rows = [used[lo:hi] - offset for lo, hi, offset in zip(bounds[:-1], bounds[1:], offsets)]
    remapped, start = [], 0
    for block in ids:
        remapped.append(split_ids(local_ids[start:start + block.size].reshape(block.shape)))
        start += block.size
    return rows, remapped


def plan_tasks(support_x, query_x, table_sizes):
    """``local_index`` for each task of a meta-batch (NumPy, leading task axis).

    Returns the support and query inputs with ids remapped task by task, and per
    task the rows of each table it uses: what ``meta_step`` takes as `task_rows`.
    """
    support_x, query_x = [[np.asarray(x) for x in xs] for xs in (support_x, query_x)]
    task_rows, remapped = [], []
    for task in range(len(support_x[0])):
        rows, ids = local_index([[x[task] for x in support_x], [x[task] for x in query_x]],
                                table_sizes)
        task_rows.append(rows)
        remapped.append(ids)
    inputs = []
    for part, original in enumerate((support_x, query_x)):
        static, sequence, ad = (np.stack([ids[part][k] for ids in remapped]) for k in range(3))
        inputs.append([static, sequence, original[2], ad])
    return inputs[0], inputs[1], task_rows


def gather_local(net, weights, rows, names=None):
    """`weights` with ``LOCAL_TABLE`` (the given rows of every table, stacked) in place
    of the embedding tables; `rows` holds one integer tensor of distinct rows per
    table, or per name of `names` (table names, which may repeat) when given.

    The local table is a leaf: ``backward`` adds its gradient into the gradients of
    the full tables it was gathered from (Paddle's gather would instead build a
    zero gradient of the full size for every table and task).
    """
    tables = net.table_names()
    names = tables if names is None else names
    # Row counts come from the shapes, which the host knows without a device sync.
    bounds = np.cumsum([0] + [r.shape[0] for r in rows])
    with paddle.no_grad():
        table = paddle.concat([paddle.gather(weights[name], r) for name, r in zip(names, rows)])
    table.stop_gradient = False
    full_tables = [weights[name] for name in names]
    table.register_hook(lambda grad: _add_rows(full_tables, rows, bounds, grad))
    local = {name: value for name, value in weights.items() if name not in tables}
    local[LOCAL_TABLE] = table
    return local


def localize(net, weights, batches):
    """Replace the tables in `weights` by one table of the rows that `batches` use.

    `batches` is a list of input lists (static, sequence, lengths, ad), NumPy, of
    any leading shape. Returns the weights with ``LOCAL_TABLE`` in place of the
    embedding tables, and the batches as tensors with ids remapped to index it.
    """
    arrays = [[np.asarray(x) for x in batch] for batch in batches]
    rows, remapped = local_index(arrays, net.table_sizes())
    local = gather_local(net, weights, [paddle.to_tensor(r) for r in rows])
    return local, [[paddle.to_tensor(x) for x in (static, sequence, batch[2], ad)]
                   for batch, (static, sequence, ad) in zip(arrays, remapped)]


def write_back(net, local_weights, batches):
    """Put task-local weights (``localize`` of `batches`, then trained) into `net` itself.

    The local table's rows go back to the rows of the full tables they were gathered
    from, the other weights replace the net's; `net` then scores any input as the local
    weights would, and is an ordinary network to save or export."""
    names = net.table_names()
    parameters = net.weights()
    rows, _ = local_index([[np.asarray(x) for x in batch] for batch in batches], net.table_sizes())
    bounds = np.cumsum([0] + [len(r) for r in rows])
    table = local_weights[LOCAL_TABLE]
    with paddle.no_grad():
        for name, table_rows, lo, hi in zip(names, rows, bounds[:-1], bounds[1:]):
            if hi > lo:
                parameters[name].scatter_(paddle.to_tensor(table_rows), table[lo:hi])
        for name, value in local_weights.items():
            if name != LOCAL_TABLE:
                parameters[name].set_value(value.detach())


def _add_rows(full_tables, rows, bounds, grad):
    """Add the local table's gradient `grad` into the full tables' gradients."""
    used = [k for k in range(len(rows)) if bounds[k + 1] > bounds[k]]  # tables with rows in it
    for k in used:
        if full_tables[k].grad is None:
            full_tables[k].grad = paddle.zeros_like(full_tables[k])
    if fused_lookup.add_rows([full_tables[k].grad for k in used], grad, [rows[k] for k in used]):
        return
    for k in used:
        # The rows are distinct (np.unique), so gather, add and an overwriting scatter
        # add them as index_add_ does, faster on the CPU.
        table_grad = full_tables[k].grad
        table_grad.scatter_(rows[k], table_grad.gather(rows[k]) + grad[bounds[k]:bounds[k + 1]])


def leaf_copies(weights):
    """Independent trainable copies, so an optimizer on them leaves `weights` alone."""
    copies = {}
    for name, value in weights.items():
        copy = value.detach().clone()
        copy.stop_gradient = False
        copies[name] = copy
    return copies


def _stepped(weights, adapted):
    """The names of `weights` an inner step moves: `adapted` (None: all), in dict order."""
    return [name for name in weights if adapted is None or name in adapted]


def _sgd(weights, stepped, loss, differentiated, local_lr, create_graph=False):
    """`weights` with each name of `stepped` moved by ``-local_lr`` times the gradient of
    `loss` with respect to `differentiated[name]`. The gradient is taken of
    ``-local_lr * loss``: one scale of a scalar instead of one of every gradient."""
    steps = paddle.grad(loss * -local_lr, [differentiated[name] for name in stepped],
                        create_graph=create_graph)
    fast = dict(weights)
    fast.update({name: weights[name] + step for name, step in zip(stepped, steps)})
    return fast


def first_order_step(net, weights, inputs, labels, local_lr, adapted=None):
    """One SGD step on a support batch; returns the fast weights.

    First order, as upstream PaddleRec: the support gradient is taken as a
    constant, so the outer gradient flows into `weights` only through
    ``fast = weights - local_lr * grad``. Only the weights named in `adapted`
    (None: all) move; the others are the shared ones.
    """
    stepped = _stepped(weights, adapted)
    frozen = {}
    for name, value in weights.items():
        frozen[name] = value.detach()
        frozen[name].stop_gradient = name not in stepped
    return _sgd(weights, stepped, bce(net(*inputs, weights=frozen), labels), frozen, local_lr)


def second_order_step(net, weights, inputs, labels, local_lr, adapted=None):
    """One SGD step whose support gradient stays differentiable (full MAML).

    Paddle has no gradient of the gradient for its embedding, softmax, mean and
    BCE ops. So the support pass indexes the tables with ``paddle.gather``, builds
    the gradients of softmax and mean from primitive ops (Paddle's "prim" mode) and
    writes the BCE out; each of these has a second derivative.
    """
    stepped = _stepped(weights, adapted)
    with _primitive_gradients():
        prediction = net(*inputs, weights=weights, lookup=_gather_rows)
        loss = -(labels * _log(prediction) + (1 - labels) * _log(1 - prediction)).mean()
        return _sgd(weights, stepped, loss, weights, local_lr, create_graph=True)


INNER_STEP = {1: first_order_step, 2: second_order_step}


def adapt(net, weights, inputs, labels, local_lr, order=1, steps=1, adapted=None):
    """A task's fast weights: `steps` inner SGD steps on one support batch, moving the
    weights named in `adapted` (None: all).

    Order 0, the baseline, does not adapt: the weights come back as they are,
    so the meta-loss is the plain loss of the shared model on the query batches.
    """
    if order == 0:
        return weights
    for _ in range(steps):
        weights = INNER_STEP[order](net, weights, inputs, labels, local_lr, adapted)
    return weights


# hyper_parameters.inner_params: which weights the inner steps move (None: all).
INNER_PARAMS = {"all": lambda net: None,
                "gates_critics": lambda net: set(net.gate_and_critic_names())}


def meta_step(net, support_x, support_y, query_x, query_y, local_lr, order=1, inner_steps=1,
              task_rows=None, batched=True, inner_params="all"):
    """The meta-loss of one batch of tasks.

    Inputs carry a leading task axis (T x B x ...). For each task: adapt on its
    support batch, then the loss of the adapted weights on its query batch.
    Returns the mean query loss (to be minimised by the outer optimizer) and the
    query predictions, T x B.

    `task_rows` and ids remapped to them come from ``plan_tasks``, which the train
    reader runs on the host, so that nothing here copies a tensor back to the host.
    Without `task_rows` the ids are the tables' own and are planned here.

    `inner_params` (``INNER_PARAMS``) chooses the weights the inner steps move:
    "all", or "gates_critics", where the tables and the experts stay shared.

    Order 0 with `batched` runs all tasks' queries as one batch (the tasks share the
    weights; the loss is the same mean). Orders 1 and 2 loop over the tasks: batching
    their per-task weights was slower on the CPU (readme.md, "Speed").
    """
    if task_rows is None:
        support_x, query_x, task_rows = plan_tasks(support_x, query_x, net.table_sizes())
        support_x, query_x = [[paddle.to_tensor(x) for x in xs] for xs in (support_x, query_x)]
        task_rows = [[paddle.to_tensor(r) for r in rows] for rows in task_rows]
    if order == 0 and batched:
        return _unadapted_tasks_as_one_batch(net, query_x, query_y, task_rows)
    adapted = INNER_PARAMS[inner_params](net)
    shared = with_first_layer_laid_out(net.weights())
    losses, predictions = [], []
    for task in range(support_y.shape[0]):
        # Each task its own local table: the inner step then updates only its rows.
        weights = gather_local(net, shared, task_rows[task])
        support, query = [[x[task] for x in xs] for xs in (support_x, query_x)]
        fast = adapt(net, weights, support, support_y[task], local_lr, order, inner_steps, adapted)
        prediction = net(*query, weights=fast)
        losses.append(bce(prediction, query_y[task]))
        predictions.append(prediction)
    return paddle.stack(losses).mean(), paddle.stack(predictions)


def _unadapted_tasks_as_one_batch(net, query_x, query_y, task_rows):
    """Order 0's meta-loss in one forward pass over the T x B query rows.

    One local table holds the tasks' rows task after task, and each task's ids shift
    to its part of it. The tasks have equal batches, so the mean over all rows is the
    mean of the tasks' mean losses."""
    tasks, batch = query_y.shape
    weights = gather_local(net, net.weights(), [r for rows in task_rows for r in rows],
                           net.table_names() * tasks)
    sizes = [sum(r.shape[0] for r in rows) for rows in task_rows]
    starts = np.cumsum([0] + sizes[:-1]).reshape(tasks, 1, 1)
    query = [x if column == 2 else x + paddle.to_tensor(starts, dtype=x.dtype)
             for column, x in enumerate(query_x)]
    prediction = net(*[x.reshape([tasks * batch] + x.shape[2:]) for x in query], weights=weights)
    return bce(prediction, query_y.reshape([-1])), prediction.reshape([tasks, batch])


def bce(prediction, labels):
    """``F.binary_cross_entropy``, except that a non-finite prediction makes the loss
    NaN rather than an error inside Paddle's input check, so that a diverging run is
    seen where the trainer looks at its loss. Finite predictions give the same loss
    and gradient, bit for bit (tests/test_divergence.py)."""
    # x * 0 + 1 is 1 for a finite x and NaN otherwise: each row's loss is weighted by 1,
    # or made NaN; the loss itself sees 0.5 in place of a non-finite prediction.
    weight = paddle.scale(prediction.detach(), scale=0.0, bias=1.0)
    safe = paddle.where(paddle.isfinite(prediction), prediction, paddle.full_like(prediction, 0.5))
    return F.binary_cross_entropy(safe, labels, weight=weight)


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
