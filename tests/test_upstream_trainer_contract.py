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
