"""Paddle's Adam, with its CPU update and gradient clearing as one kernel on every core.

The outer step of meta-training updates all 22 M parameters of the full network, the
embedding tables included (momentum moves rows whose gradient is zero), and Paddle's
multi-tensor Adam does that on one thread: on the CPU it was most of a small-batch
meta-step. ``Adam`` is ``paddle.optimizer.Adam``, with its arguments, its gradient
clipping and weight decay, its state and its checkpoint entries; only the last part of a
multi-tensor step, the update itself, runs ``fused_adam.cc`` over all parameters on
``cpu_kernels.threads()`` threads (the formula of Paddle's CPU kernel, in its order;
results agree to float rounding, tests/test_fused_adam.py). ``clear_grad`` zeroes the
gradients the same way. Paddle's own update runs instead off the CPU, for other dtypes,
with ``use_multi_tensor=False``, AMSGrad, lazy mode, mixed precision, parameter groups,
a loss scaler's skipped steps, and where the kernels cannot be built.
"""
import paddle

from metaheac import cpu_kernels

# Below this many elements an update runs on one thread: starting threads would cost more.
THREADED_ELEMENTS = 1 << 18


class Adam(paddle.optimizer.Adam):
    def _append_optimize_multi_tensor_op(self, target_block, parameters_and_grads,
                                         param_group_idx):
        # Paddle's step has clipped and decayed the gradients and made the accumulators.
        pairs = self._fused_pairs(parameters_and_grads)
        if pairs is None:
            return super()._append_optimize_multi_tensor_op(target_block, parameters_and_grads,
                                                            param_group_idx)
        params = [p for p, _ in pairs]
        accumulators = [[self._get_accumulator_master(name, p) for p in params]
                        for name in (self._moment1_acc_str, self._moment2_acc_str,
                                     self._beta1_pow_acc_str, self._beta2_pow_acc_str)]
        # Detached views share the parameters' memory: Paddle lets a kernel write in place
        # only into tensors outside autograd. A gradient may be strided (a transposed
        # view's, in fine-tuning's copies): the kernel reads it made contiguous.
        cpu_kernels.module().metaheac_fused_adam(
            [p.detach() for p in params],
            [g if g.is_contiguous() else g.contiguous() for _, g in pairs], *accumulators,
            [self._create_param_lr(pair) for pair in pairs],
            float(self._beta1), float(self._beta2), float(self._epsilon), _threads_for(params))
        return None

    def clear_grad(self, set_to_zero=True):
        params = self._zeroable_parameters() if set_to_zero else None
        if params is None:
            return super().clear_grad(set_to_zero)
        # The kernel indexes raw memory: a strided gradient is zeroed by Paddle. Detached
        # views share the gradients' memory (see above).
        for p in params:
            if not p.grad.is_contiguous():
                p.clear_gradient(True)
        grads = [p.grad.detach() for p in params if p.grad.is_contiguous()]
        cpu_kernels.module().metaheac_fill_zeros(grads, _threads_for(grads))

    def _fused_pairs(self, parameters_and_grads):
        """The (parameter, gradient) pairs to update, if the kernel computes this update."""
        if not (isinstance(parameters_and_grads, list) and paddle.in_dynamic_mode()
                and all(isinstance(v, (int, float))
                        for v in (self._beta1, self._beta2, self._epsilon))
                and not (self._multi_precision or self._amsgrad or self._lazy_mode)
                and self._get_auxiliary_var("found_inf") is None
                and cpu_kernels.module() is not None):
            return None
        pairs = [(p, g) for p, g in parameters_and_grads if g is not None and not p.stop_gradient]
        if not all(cpu_kernels.dense_float32_on_cpu(p) and p.is_contiguous()
                   and cpu_kernels.dense_float32_on_cpu(g) for p, g in pairs):
            return None
        return pairs

    def _zeroable_parameters(self):
        """The parameters with a gradient, if the kernel can clear them all."""
        if (cpu_kernels.module() is None or not self._parameter_list
                or isinstance(self._parameter_list[0], dict)):
            return None
        params = [p for p in self._parameter_list if not p.stop_gradient and p.grad is not None]
        return params if all(cpu_kernels.dense_float32_on_cpu(p.grad) for p in params) else None


def _threads_for(tensors):
    return cpu_kernels.threads() if sum(int(t.size) for t in tensors) >= THREADED_ELEMENTS else 1
