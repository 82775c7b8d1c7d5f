"""The module works when driven the way upstream PaddleRec's tools/trainer.py drives it."""
import os

import numpy as np
import paddle
from paddle.io import DataLoader

from conftest import ROOT
from dygraph_model import DygraphModel
import reader_train


def test_upstream_trainer_loop_with_paddle_dataloader():
    # Upstream flattens the YAML and reads keys with config.get; absent keys take our defaults.
    config = {"hyper_parameters.batch_size": 8, "hyper_parameters.task_count": 2,
              "hyper_parameters.embed_dim": 4, "hyper_parameters.mlp_dims": [8],
              "runner.seed": 3}
    model_class = DygraphModel()
    model = model_class.create_model(config)
    optimizer = model_class.create_optimizer(model, config)
    train_dir = os.path.join(ROOT, "data", "train")
    dataset = reader_train.RecDataset([os.path.join(train_dir, f) for f in os.listdir(train_dir)],
                                      config=config)
    loader = DataLoader(dataset, batch_size=None, places=paddle.CPUPlace(), drop_last=True)
    metric_list, names = model_class.create_metrics()
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    for step, batch in enumerate(loader()):
        loss, metric_list, print_dict = model_class.train_forward(model, metric_list, batch, config)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        "{:.6f}".format(metric_list[0].accumulate())  # upstream formats every metric this way
        assert np.isfinite(print_dict["loss"].numpy())
        if step == 3:
            break
    assert names == ["AUC"]
    assert any(not np.array_equal(v.numpy(), before[k]) for k, v in model.state_dict().items())


def test_trainer_asks_the_model_for_rows_and_curve_metric_and_falls_back_without_hooks():
    import trainer
    support = paddle.zeros([2, 8])  # task_count x batch_size labels
    batch = [[paddle.zeros([2, 8, 7])], support, [paddle.zeros([2, 8, 7])], support]
    assert trainer._rows(DygraphModel(), batch) == 32  # support and query rows of all tasks
    assert trainer._curve_metric(DygraphModel(), ["AUC"]) == "AUC"

    class PlainModel:  # a PaddleRec model module without the optional hooks
        pass

    assert trainer._rows(PlainModel(), [paddle.zeros([16, 3]), paddle.zeros([16])]) == 16
    assert trainer._curve_metric(PlainModel(), ["auc", "loss"]) == "auc"
