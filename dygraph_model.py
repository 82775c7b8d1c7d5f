"""The PaddleRec ``DygraphModel`` for MetaHeac: what a PaddleRec trainer drives.

PaddleRec's ``tools/trainer.py`` (upstream's or ours) imports this class from the
config's folder, builds ``RecDataset(file_list, config=config)`` from
``runner.train_reader_path``, and for every batch calls ``train_forward``, then
``loss.backward()`` and the optimizer step. Labels arrive as float32: the readers
cast them once, when a data file is loaded (``metaheac.data_files.load_columns``).
"""
import paddle

import maml
from metaheac import fused_adam, meta_options
import net
from metaheac import settings
from metaheac.metrics import ExactAuc


class DygraphModel:
    curve_metric = "AUC"  # create_metrics' one metric, which tools/trainer.py's curve records

    def create_model(self, config):
        settings.validate(config)  # a bad value stops the run before any work, whoever drives it
        hp = lambda key: settings.get(config, "hyper_parameters." + key)  # noqa: E731
        return net.MetaHeacNet(hp("max_idxs"), hp("embed_dim"), hp("mlp_dims"),
                               hp("num_expert"), hp("num_output"))

    def create_feeds(self, batch_data, config):
        """A train batch: support inputs, support labels, query inputs, query labels,
        and the table rows of each task (or None).

        Inputs are the lists (static, sequence, lengths, ad) with a leading task
        axis, their ids remapped task by task onto those rows (reader_train.py);
        labels are ``task_count x batch_size``.
        """
        support_x, support_y, query_x, query_y, *planned = batch_data
        # Upstream's reader yields the first four, with the tables' own ids: they are
        # then planned in the step, at the cost of a copy to the host.
        task_rows = planned[0] if planned else None
        return support_x, support_y, query_x, query_y, task_rows

    def create_loss(self, pred, label):
        return maml.bce(pred, label)

    def create_optimizer(self, dy_model, config, mode="train", parameters=None):
        """Adam for meta-training (mode "train"), or for fine-tuning one campaign."""
        key = ("global_learning_rate" if mode == "train" else "local_test_learning_rate")
        lr = settings.get(config, "hyper_parameters.optimizer." + key)
        params = dy_model.parameters() if parameters is None else parameters
        # Paddle's Adam, whose CPU step runs as one kernel on every core (fused_adam.py);
        # elsewhere multi-tensor: one kernel for all parameters, not one per parameter.
        return fused_adam.Adam(learning_rate=lr, parameters=params, use_multi_tensor=True)

    def create_metrics(self):
        return [ExactAuc()], [self.curve_metric]

    def batch_rows(self, batch):
        """Support and query rows over all tasks of a train batch (tools/trainer.py's ips)."""
        _, support_y, _, query_y = batch[:4]
        return int(support_y.size) + int(query_y.size)

    def train_forward(self, dy_model, metric_list, batch, config):
        """One meta-step's loss: per task inner steps on support, loss on query."""
        support_x, support_y, query_x, query_y, task_rows = self.create_feeds(batch, config)
        local_lr = settings.get(config, "hyper_parameters.local_lr")
        options = meta_options.read(config)
        loss, predictions = maml.meta_step(
            _unwrap(dy_model), support_x, support_y, query_x, query_y, local_lr,
            options.order, options.inner_steps, task_rows, inner_params=options.inner_params)
        # The metric keeps the tensors; it reads them on the host only when asked.
        metric_list[0].update(predictions.detach(), query_y)
        return loss, metric_list, {"loss": loss}

    def infer_train_forward(self, dy_model, batch, config, weights=None):
        """The loss of one fine-tuning batch (inputs, labels)."""
        inputs, labels = batch
        return self.create_loss(dy_model(*inputs, weights=weights), labels)

    def infer_forward(self, dy_model, metric_list, metric_list_local, batch, config,
                      weights=None):
        """Score a batch of candidates; feeds the global and the per-campaign metrics, if given."""
        inputs, labels = batch
        scores = dy_model(*inputs, weights=weights).numpy()
        for metrics in (metric_list, metric_list_local):
            if metrics:
                metrics[0].update(scores, labels.numpy())
        return metric_list, metric_list_local, scores


def _unwrap(dy_model):
    # paddle.DataParallel keeps the network in `_layers`.
    return getattr(dy_model, "_layers", dy_model)
