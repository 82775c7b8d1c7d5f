"""The task-local embedding lookup as one C++ kernel on the CPU (fused_lookup.cc).

A forward pass on a task-local table looks up 63 ids per row. With Paddle's ops that
is three embedding lookups, a batched product pooling the sequence fields and a
concatenation: on the CPU they and their gradients take two to four times as long as
this kernel, which gathers, pools and scatters the rows in one pass (tools/bench.py
prints the step with each). It computes the same sums in another order, so results agree to
float rounding (tests/test_fused_lookup.py). ``add_rows`` is the backward of gathering
that local table from the full ones (``maml.gather_local``), in one call per task.
``metaheac/cpu_kernels.py`` builds both; where they cannot be built, and off the CPU, the
network keeps Paddle's ops.
"""
import contextlib

import paddle

from metaheac import cpu_kernels, schema

_disabled = []  # non-empty inside ``disabled()``
# From this many rows a lookup and its gradient are split over the threads (forward by
# batch rows, backward by table rows); below it starting threads would cost more.
THREADED_ROWS = 256


def applies(table, inputs):
    """Whether the kernel computes this lookup: in eager mode, of a float32 table on the
    CPU, with ``lookup``'s `inputs` as B x width int64 tensors."""
    return (not _disabled and paddle.in_dynamic_mode() and table.place.is_cpu_place()
            and table.dtype == paddle.float32
            and all(x.dtype == paddle.int64 and x.ndim == 2 for x in inputs)
            and cpu_kernels.module() is not None)


def lookup(table, static_ids, sequence_ids, sequence_lengths, ad_ids):
    """The user fields, B x 14 x E (static, then the sequence fields' means over their
    lengths), and the ad fields, B x 6 x E, of ids that index `table`."""
    threads = cpu_kernels.threads() if static_ids.shape[0] >= THREADED_ROWS else 1
    return cpu_kernels.module().metaheac_fused_lookup(
        table, static_ids, sequence_ids, sequence_lengths, ad_ids, list(schema.SEQUENCE_WIDTHS),
        threads)


def add_rows(table_grads, local_grad, rows):
    """Add the blocks of `local_grad` (one per table, in order) into `table_grads` at
    `rows`, in place, if the kernel can (eager, float32 on the CPU, contiguous): the
    backward of ``maml.gather_local`` as one kernel, not three Paddle ops per table.
    Returns whether it did."""
    tensors = list(table_grads) + [local_grad]
    if not (not _disabled and paddle.in_dynamic_mode()
            and all(cpu_kernels.dense_float32_on_cpu(t) and t.is_contiguous() for t in tensors)
            and all(r.place.is_cpu_place() and r.dtype == paddle.int64 for r in rows)
            and cpu_kernels.module() is not None):
        return False
    # Detached views share the gradients' memory (Paddle writes in place only outside
    # autograd).
    cpu_kernels.module().metaheac_add_rows([g.detach() for g in table_grads], local_grad, rows)
    return True


@contextlib.contextmanager
def disabled():
    """Paddle's ops in place of the lookup and ``add_rows`` within the block, to compare."""
    _disabled.append(True)
    try:
        yield
    finally:
        _disabled.pop()
