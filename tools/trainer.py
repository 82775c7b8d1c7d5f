"""Meta-train a model module the PaddleRec way.

    python tools/trainer.py -m config.yaml [-o key=value ...]

Reads the YAML config, imports ``DygraphModel`` and the reader from the config's
folder, trains ``runner.epochs`` epochs and saves ``<model_save_path>/<epoch>/rec.pdparams``
and ``rec.pdopt`` after each. The logged loss and AUC also go to
``<model_save_path>/training_curve.csv`` and, at the end, ``training_curve.png``.

Launched as several processes by ``python -m paddle.distributed.launch`` with
``runner.use_fleet: True``, it trains data parallel (utils/distributed.py): each
rank takes its ``task_count`` tasks of a meta-batch of ``task_count x world_size``,
the gradients are averaged before each Adam step, an epoch has ``1/world_size`` as
many meta-steps, and only rank 0 saves checkpoints and the curve.
"""
import argparse
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from utils import distributed  # noqa: E402  (first: utils quiets Paddle's import warning)
import paddle  # noqa: E402
from utils.config import ConfigError, load_config, settings  # noqa: E402
from utils.divergence import LossWatch, TrainingDiverged, check_parameters  # noqa: E402
from utils.save_load import CheckpointError, load_model, save_model  # noqa: E402
from utils.utils_single import create_data_loader, load_dy_model_class, set_device  # noqa: E402
from metaheac.data_files import DataError  # noqa: E402  (utils put the model folder on the path)
from metaheac.training_curve import TrainingCurve  # noqa: E402

logging.basicConfig(format="%(asctime)s - %(levelname)s - %(message)s", level=logging.INFO)
logger = logging.getLogger("trainer")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="PaddleRec trainer")
    parser.add_argument("-m", "--config_yaml", required=True, help="the model's config.yaml")
    parser.add_argument("-o", "--opt", nargs="*", default=[], help="overrides: key=value")
    return parser.parse_args(argv)


def main(args):
    config = load_config(args.config_yaml, args.opt)
    run = lambda key: settings.get(config, "runner." + key)  # noqa: E731
    paddle.seed(run("seed"))
    logger.info("config: %s", {k: v for k, v in sorted(config.items())})
    place = set_device(config)
    ranks = distributed.start(config)
    model_class = load_dy_model_class(config["config_abs_dir"])
    model = model_class.create_model(config)
    optimizer = model_class.create_optimizer(model, config)
    if run("model_init_path"):
        load_model(run("model_init_path"), model, optimizer=optimizer)
    ranks.sync_parameters(model)
    loader = create_data_loader(config, place, mode="train")
    if ranks.size > 1:
        _shard(loader.dataset, ranks, config)
    ranks.wait_for_all()  # the ranks may take unequal time to load the data
    print_interval = max(1, run("print_interval"))
    batches = getattr(loader.dataset, "batches_per_epoch", None)  # readers without len
    curve = TrainingCurve(run("model_save_path"), run("use_visual")) if ranks.main else None
    meta_step = 0
    losses = LossWatch()

    for epoch in range(run("last_epoch") + 1, run("epochs")):
        model.train()
        if hasattr(loader.dataset, "set_epoch"):  # so a resumed run draws the same tasks
            loader.dataset.set_epoch(epoch)
        metrics, metric_names = model_class.create_metrics()
        metrics = distributed.metrics_over_ranks(metrics, ranks)
        epoch_start = interval_start = time.time()
        reader_cost = batch_cost = 0.0
        samples = steps = 0
        interval_loss = 0.0
        reader_start = time.time()
        for step, batch in enumerate(loader()):
            reader_cost += time.time() - reader_start
            step_start = time.time()
            loss, metrics, to_print = train_step(model_class, model, optimizer, metrics, batch,
                                                 config, ranks)
            batch_cost += time.time() - step_start
            samples += _rows(batch) * ranks.size
            steps += 1
            meta_step += 1
            interval_loss += loss  # a tensor: no device sync until the log line
            losses.record(epoch, step, loss, getattr(loader.dataset, "last_tasks", None))
            if step % print_interval == 0 or step + 1 == batches:
                losses.check()
                elapsed = time.time() - interval_start
                values = _metric_values(metrics, metric_names)
                logger.info(
                    "epoch: %d, step: %d%s, %s, %s, avg_reader_cost: %.5f sec, "
                    "avg_batch_cost: %.5f sec, ips: %.1f samples/s",
                    epoch, step, "/%d" % batches if batches else "",
                    _metric_text(values), _print_text(to_print, ranks),
                    reader_cost / steps, (reader_cost + batch_cost) / steps,
                    samples / max(elapsed, 1e-9))
                if curve:
                    curve.record(epoch, step, meta_step, float(loss),
                                 float(interval_loss) / steps, values["AUC"])
                interval_start = time.time()
                reader_cost = batch_cost = 0.0
                samples = steps = 0
                interval_loss = 0.0
            reader_start = time.time()
        losses.check()
        check_parameters(model, epoch)  # every rank: they hold the same weights
        if ranks.main:
            logger.info("epoch: %d done, %s, epoch time: %.2f s", epoch,
                        _metric_text(_metric_values(metrics, metric_names)),
                        time.time() - epoch_start)
            save_model(model, optimizer, run("model_save_path"), epoch)
        ranks.wait_for_all()  # while rank 0 saves
    if curve:
        curve.close()


def train_step(model_class, model, optimizer, metrics, batch, config, ranks):
    """One meta-step; returns the loss as a detached tensor, averaged over the ranks."""
    loss, metrics, to_print = model_class.train_forward(model, metrics, batch, config)
    loss.backward()
    ranks.average_gradients(model.parameters())
    optimizer.step()
    optimizer.clear_grad()
    return ranks.mean(loss.detach()), metrics, to_print


def _shard(dataset, ranks, config):
    if not hasattr(dataset, "shard"):
        raise ConfigError("runner.train_reader_path = %s: its RecDataset has no "
                          "shard(rank, world_size), which runner.use_fleet needs"
                          % settings.get(config, "runner.train_reader_path"))
    dataset.shard(ranks.rank, ranks.size)


def _rows(batch):
    # Support and query rows over all tasks of the meta-batch.
    return sum(int(labels.size) for labels in (batch[1], batch[3]))


def _metric_values(metrics, names):
    return {n: m.accumulate() for n, m in zip(names, metrics)}


def _metric_text(values):
    return ", ".join("%s: %.6f" % item for item in values.items())


def _print_text(values, ranks):
    # Every rank logs the same steps, so each takes part in these means.
    return ", ".join("%s: %.6f" % (k, float(ranks.mean(v))) for k, v in (values or {}).items())


if __name__ == "__main__":
    try:
        main(parse_args())
    except (ConfigError, DataError, CheckpointError, FileNotFoundError, TrainingDiverged) as error:
        logger.error("%s", error)
        sys.exit(2)
