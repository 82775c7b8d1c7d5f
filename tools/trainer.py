"""Meta-train a model module the PaddleRec way.

    python tools/trainer.py -m config.yaml [-o key=value ...]

Reads the YAML config, imports ``DygraphModel`` and the reader from the config's
folder, trains ``runner.epochs`` epochs and saves ``<model_save_path>/<epoch>/rec.pdparams``
and ``rec.pdopt`` after each. The logged loss and AUC also go to
``<model_save_path>/training_curve.csv`` and, at the end, ``training_curve.png``.
"""
import argparse
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import paddle  # noqa: E402

from utils.config import ConfigError, apply_overrides, load_yaml, settings  # noqa: E402
from utils.save_load import CheckpointError, load_model, save_model  # noqa: E402
from utils.utils_single import create_data_loader, load_dy_model_class, set_device  # noqa: E402
from data_files import DataError  # noqa: E402  (utils put the model folder on the path)
from training_curve import TrainingCurve  # noqa: E402

logging.basicConfig(format="%(asctime)s - %(levelname)s - %(message)s", level=logging.INFO)
logger = logging.getLogger("trainer")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="PaddleRec trainer")
    parser.add_argument("-m", "--config_yaml", required=True, help="the model's config.yaml")
    parser.add_argument("-o", "--opt", nargs="*", default=[], help="overrides: key=value")
    return parser.parse_args(argv)


def load_config(args):
    config = load_yaml(args.config_yaml)
    return apply_overrides(config, args.opt)


def main(args):
    config = load_config(args)
    run = lambda key: settings.get(config, "runner." + key)  # noqa: E731
    paddle.seed(run("seed"))
    logger.info("config: %s", {k: v for k, v in sorted(config.items())})
    place = set_device(config)
    model_class = load_dy_model_class(config["config_abs_dir"])
    model = model_class.create_model(config)
    optimizer = model_class.create_optimizer(model, config)
    if run("model_init_path"):
        load_model(run("model_init_path"), model, optimizer=optimizer)
    loader = create_data_loader(config, place, mode="train")
    print_interval = max(1, run("print_interval"))
    batches = getattr(loader.dataset, "batches_per_epoch", None)  # readers without len
    curve = TrainingCurve(run("model_save_path"), run("use_visual"))
    meta_step = 0

    for epoch in range(run("last_epoch") + 1, run("epochs")):
        model.train()
        if hasattr(loader.dataset, "set_epoch"):  # so a resumed run draws the same tasks
            loader.dataset.set_epoch(epoch)
        metrics, metric_names = model_class.create_metrics()
        epoch_start = interval_start = time.time()
        reader_cost = batch_cost = 0.0
        samples = steps = 0
        interval_loss = 0.0
        reader_start = time.time()
        for step, batch in enumerate(loader()):
            reader_cost += time.time() - reader_start
            step_start = time.time()
            loss, metrics, to_print = model_class.train_forward(model, metrics, batch, config)
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            batch_cost += time.time() - step_start
            samples += _rows(batch)
            steps += 1
            meta_step += 1
            interval_loss += loss.detach()  # a tensor: no device sync until the log line
            if step % print_interval == 0 or step + 1 == batches:
                elapsed = time.time() - interval_start
                values = _metric_values(metrics, metric_names)
                logger.info(
                    "epoch: %d, step: %d%s, %s, %s, avg_reader_cost: %.5f sec, "
                    "avg_batch_cost: %.5f sec, ips: %.1f samples/s",
                    epoch, step, "/%d" % batches if batches else "",
                    _metric_text(values), _print_text(to_print),
                    reader_cost / steps, (reader_cost + batch_cost) / steps,
                    samples / max(elapsed, 1e-9))
                curve.record(epoch, step, meta_step, float(loss), float(interval_loss) / steps,
                             values["AUC"])
                interval_start = time.time()
                reader_cost = batch_cost = 0.0
                samples = steps = 0
                interval_loss = 0.0
            reader_start = time.time()
        logger.info("epoch: %d done, %s, epoch time: %.2f s", epoch,
                    _metric_text(_metric_values(metrics, metric_names)), time.time() - epoch_start)
        save_model(model, optimizer, run("model_save_path"), epoch)
    curve.close()


def _rows(batch):
    # Support and query rows over all tasks of the meta-batch.
    return sum(int(labels.size) for labels in (batch[1], batch[3]))


def _metric_values(metrics, names):
    return {n: m.accumulate() for n, m in zip(names, metrics)}


def _metric_text(values):
    return ", ".join("%s: %.6f" % item for item in values.items())


def _print_text(values):
    return ", ".join("%s: %.6f" % (k, float(v)) for k, v in (values or {}).items())


if __name__ == "__main__":
    try:
        main(parse_args())
    except (ConfigError, DataError, CheckpointError, FileNotFoundError) as error:
        logger.error("%s", error)
        sys.exit(2)
