"""Stop meta-training whose loss or weights stop being finite, naming where it happened.

Reading a loss on the host costs a device sync on a GPU, so each meta-step's loss
stays on the device until the trainer looks anyway (at a log line) and before
every save; the first non-finite loss since the last look is then found exactly.
A non-finite score makes the loss NaN rather than an error inside Paddle (maml.bce).
"""
import numpy as np
import paddle

ADVICE = ("lower hyper_parameters.optimizer.global_learning_rate or hyper_parameters.local_lr; "
          "the checkpoints saved so far are kept")


class TrainingDiverged(RuntimeError):
    """The loss or the weights went non-finite; the message names the epoch and step."""


class LossWatch:
    """The losses of the meta-steps since the last check, still on the device."""

    def __init__(self):
        self._steps = []  # (epoch, step, loss on the device, aids of the meta-batch's tasks)

    def record(self, epoch, step, loss, campaigns):
        self._steps.append((epoch, step, loss, campaigns))

    def check(self):
        """Raise TrainingDiverged at the first non-finite loss recorded since the last check."""
        if not self._steps:
            return
        steps, self._steps = self._steps, []
        finite = paddle.isfinite(paddle.stack([loss.reshape([]) for _, _, loss, _ in steps]))
        finite = finite.numpy()
        if not finite.all():
            epoch, step, loss, campaigns = steps[int(np.argmin(finite))]
            raise TrainingDiverged(
                "epoch %d, step %d: the loss is %s on the meta-batch of campaigns (aids) %s; "
                "training stopped before saving this epoch: %s"
                % (epoch, step, loss.item(), "unknown" if campaigns is None else campaigns,
                   ADVICE))


def check_parameters(model, epoch):
    """Raise TrainingDiverged if a weight of `model` is not finite (before it is saved)."""
    names, values = zip(*model.named_parameters())
    finite = paddle.stack([paddle.isfinite(value).all() for value in values]).numpy()
    if not finite.all():
        raise TrainingDiverged("epoch %d: parameter(s) %s are not finite; training stopped "
                               "before saving: %s"
                               % (epoch, [n for n, ok in zip(names, finite) if not ok][:5], ADVICE))
