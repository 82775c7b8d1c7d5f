"""Meta-train a model module the PaddleRec way.

    python tools/trainer.py -m config.yaml [-o key=value ...]

Reads the YAML config, imports ``DygraphModel`` and the reader from the config's
folder, trains ``runner.epochs`` epochs and saves ``<model_save_path>/<epoch>/rec.pdparams``
and ``rec.pdopt`` after each. The logged loss and metrics also go to
``<model_save_path>/training_curve.csv`` and, at the end, ``training_curve.png``.

What is model-specific it asks the ``DygraphModel``: the rows of a batch
(``batch_rows``, for the samples/s it logs) and the metric the curve records
(``curve_metric``); a model without them gets the leading size of the batch's first
tensor and its first metric.

With ``runner.use_fleet: True`` under ``python -m paddle.distributed.launch`` it trains
data parallel: readme.md, "Several processes, GPUs or machines".
"""
import argparse
import logging
import sys
import time

from utils import distributed  # first: sets the CPU up before Paddle is imported
import paddle
from utils.config import ConfigError, load_config
from utils.divergence import LossWatch, TrainingDiverged, check_parameters
from utils.save_load import CheckpointError, load_model, save_model
from utils.utils_single import create_data_loader, load_dy_model_class, set_device
from metaheac import settings  # utils put the repo root on the path
from metaheac.data_files import DataError
from metaheac.training_curve import TrainingCurve

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
    set_device(config)
    ranks = distributed.start(config)
    model_class = load_dy_model_class(config["config_abs_dir"])
    model = model_class.create_model(config)
    optimizer = model_class.create_optimizer(model, config)
    if run("model_init_path"):
        load_model(run("model_init_path"), model, optimizer=optimizer)
    ranks.sync_parameters(model)
    loader = create_data_loader(config, mode="train")
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
            samples += _rows(model_class, batch) * ranks.size
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
                    curve.record(epoch, step, meta_step, float(loss), float(interval_loss) / steps,
                                 values[_curve_metric(model_class, metric_names)])
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


def _rows(model_class, batch):
    """Rows of a batch, for ips: the model's ``batch_rows(batch)``, else the leading size
    of the batch's first tensor (one row per sample, as most PaddleRec readers yield)."""
    if hasattr(model_class, "batch_rows"):
        return model_class.batch_rows(batch)
    first = batch
    while isinstance(first, (list, tuple)):
        first = first[0]
    return int(first.shape[0])


def _curve_metric(model_class, metric_names):
    """The metric the training curve records: the model's ``curve_metric``, else its first."""
    return getattr(model_class, "curve_metric", metric_names[0])


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
