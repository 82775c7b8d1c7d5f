"""The hot path stays on the device: the ids are planned on the host, ahead of the step."""
import numpy as np
import paddle
import pytest

import maml
import net
import reader_train
from conftest import (SMALL_MAX_IDXS, campaign_frame, random_inputs, tables_own_ids,
                      train_config, write_frame)
from dygraph_model import DygraphModel
from metaheac.reference import full_table_meta_loss

LOCAL_LR = 0.05  # large, so that a wrong inner step would show


def make_net(max_idxs=SMALL_MAX_IDXS):
    paddle.seed(3)
    return net.MetaHeacNet(max_idxs, 5, [12, 8], num_expert=3, num_output=2)


def tensors(arrays):
    return [paddle.to_tensor(a) for a in arrays]


def planned(support_x, query_x, table_sizes):
    support_x, query_x, task_rows = maml.plan_tasks(support_x, query_x, table_sizes)
    return tensors(support_x), tensors(query_x), [tensors(rows) for rows in task_rows]


def test_a_reader_batch_trains_as_its_tables_own_ids_do(tmp_path, rng):
    # The trainer's path (reader plans, the model steps) against the plain formulation
    # fed the rows the reader drew.
    config = dict(train_config(batch_size=6, task_count=2), **{
        "hyper_parameters.embed_dim": 5, "hyper_parameters.mlp_dims": [12, 8],
        "hyper_parameters.num_expert": 3, "hyper_parameters.num_output": 2,
        "hyper_parameters.local_lr": LOCAL_LR})
    path = write_frame(campaign_frame(rng, {1: 9, 2: 14}), str(tmp_path / "train_stage1.pkl"))
    batch = next(iter(reader_train.RecDataset([path], config)))
    model_class = DygraphModel()
    paddle.seed(3)
    ours = model_class.create_model(config)
    reference = model_class.create_model(config)
    reference.set_state_dict(ours.state_dict())
    metrics, _ = model_class.create_metrics()
    loss, metrics, _ = model_class.train_forward(ours, metrics, _as_tensors(batch), config)
    support_x, query_x = tables_own_ids(batch)
    expected = full_table_meta_loss(reference, tensors(support_x), paddle.to_tensor(batch[1]),
                                    tensors(query_x), paddle.to_tensor(batch[3]), LOCAL_LR)
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-6)


def _as_tensors(sample):
    # What the trainer's loader does to a reader's batch.
    if isinstance(sample, np.ndarray):
        return paddle.to_tensor(sample)
    return [_as_tensors(part) for part in sample]


@pytest.fixture
def no_host_copies(monkeypatch):
    """Make every way of reading a tensor on the host raise."""
    def refuse(*args, **kwargs):
        raise AssertionError("a tensor was copied to the host")

    def patch():
        for name in ("numpy", "item", "tolist", "__array__"):
            monkeypatch.setattr(paddle.Tensor, name, refuse)
    return patch


def test_a_meta_step_and_fine_tuning_copy_no_tensor_to_the_host(rng, no_host_copies):
    import infer
    model = make_net()
    model_class = DygraphModel()
    optimizer = model_class.create_optimizer(model, {})
    sx, qx = (random_inputs(rng, 16, leading=(2,)) for _ in range(2))
    sy, qy = (paddle.to_tensor((rng.random((2, 16)) < 0.4).astype("float32")) for _ in range(2))
    support, query, task_rows = planned(sx, qx, model.table_sizes())
    seed_x = random_inputs(rng, 30)
    seed_y = (rng.random(30) < 0.4).astype("float32")
    config = {"hyper_parameters.batch_size": 8, "runner.infer_train_epoch": 2}
    no_host_copies()
    for order in (0, 1, 2):
        loss, predictions = maml.meta_step(model, support, sy, query, qy, LOCAL_LR, order=order,
                                           task_rows=task_rows)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
    infer.fine_tune(model_class, model, config, seed_x, seed_y, [random_inputs(rng, 5)])
    with pytest.raises(AssertionError, match="copied to the host"):
        loss.numpy()  # the patch is in force
