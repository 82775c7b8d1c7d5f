"""Adapt the meta-trained model to each test campaign and rank its candidates.

    python infer.py -m config.yaml [-o runner.test_data_dir=data/test_cold ...]

For each checkpoint epoch in ``[infer_start_epoch, infer_end_epoch)`` and each
campaign in ``runner.test_data_dir``: start from the meta-trained weights,
fine-tune ``infer_train_epoch`` epochs with Adam (``local_test_learning_rate``) on
the campaign's seed rows (stage 1) in batches of ``batch_size``, then score its
candidates (stage 2). Logs each campaign's AUC and, per epoch, the AUC pooled
over all candidates and the mean of the campaigns' AUCs.

Each campaign is fine-tuned on copies of only the embedding rows its rows use:
a fresh Adam never moves a row whose gradient has always been zero, so this
equals fine-tuning the full model, without copying or reloading the full tables.
"""
import argparse
import logging
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools"))

import numpy as np  # noqa: E402
import paddle  # noqa: E402

from utils.config import ConfigError, apply_overrides, load_yaml, settings  # noqa: E402
from utils.save_load import CheckpointError, load_model  # noqa: E402
from utils.utils_single import create_dataset, load_dy_model_class, set_device  # noqa: E402
import maml  # noqa: E402
from data_files import DataError  # noqa: E402

logging.basicConfig(format="%(asctime)s - %(levelname)s - %(message)s", level=logging.INFO)
logger = logging.getLogger("infer")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="MetaHeac per-campaign fine-tune and evaluation")
    parser.add_argument("-m", "--config_yaml", required=True, help="the model's config.yaml")
    parser.add_argument("-o", "--opt", nargs="*", default=[], help="overrides: key=value")
    return parser.parse_args(argv)


def adapt_and_score(model_class, net, config, seed_x, seed_y, candidate_x, candidate_y,
                    metrics, campaign_metrics):
    """Fine-tune a copy of `net` on one campaign's seed rows; score its candidates."""
    batch_size = settings.get(config, "hyper_parameters.batch_size")
    weights, (seed_x, candidate_x) = maml.localize(net, net.weights(), [seed_x, candidate_x])
    weights = maml.leaf_copies(weights)
    optimizer = model_class.create_optimizer(net, config, mode="infer",
                                             parameters=list(weights.values()))
    seed_y = paddle.to_tensor(seed_y, dtype="float32")
    for _ in range(settings.get(config, "runner.infer_train_epoch")):
        for start in range(0, len(seed_y), batch_size):
            rows = slice(start, start + batch_size)
            loss = model_class.infer_train_forward(
                net, ([x[rows] for x in seed_x], seed_y[rows]), config, weights=weights)
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
    scores = []
    candidate_y = paddle.to_tensor(candidate_y, dtype="float32")
    with paddle.no_grad():
        for start in range(0, len(candidate_y), batch_size):
            rows = slice(start, start + batch_size)
            metrics, campaign_metrics, batch_scores = model_class.infer_forward(
                net, metrics, campaign_metrics, ([x[rows] for x in candidate_x], candidate_y[rows]),
                config, weights=weights)
            scores.append(batch_scores)
    return np.concatenate(scores) if scores else np.zeros(0, np.float32)


def evaluate(model_class, net, dataset, config, epoch):
    """Adapt to and score every campaign; returns the summary of this epoch."""
    metrics, names = model_class.create_metrics()
    campaign_aucs = []
    for index, (aid, seed_x, seed_y, candidate_x, candidate_y, _) in enumerate(dataset):
        start = time.time()
        campaign_metrics, _ = model_class.create_metrics()
        adapt_and_score(model_class, net, config, seed_x, seed_y, candidate_x, candidate_y,
                        metrics, campaign_metrics)
        auc = campaign_metrics[0].accumulate()
        campaign_aucs.append(auc)
        logger.info("epoch: %d, campaign %d/%d, aid: %d, seed rows: %d, candidates: %d "
                    "(%d positive), AUC: %s, time: %.2f s",
                    epoch, index + 1, len(dataset), int(aid[0]), len(seed_y), len(candidate_y),
                    int(candidate_y.sum()), _auc_text(auc), time.time() - start)
    defined = [a for a in campaign_aucs if not math.isnan(a)]
    return {"epoch": epoch, "campaigns": len(campaign_aucs), "pooled_auc": metrics[0].accumulate(),
            "mean_campaign_auc": float(np.mean(defined)) if defined else float("nan"),
            "undefined": len(campaign_aucs) - len(defined)}


def _auc_text(auc):
    return "undefined (candidates of one class)" if math.isnan(auc) else "%.6f" % auc


def main(args):
    config = apply_overrides(load_yaml(args.config_yaml), args.opt)
    run = lambda key: settings.get(config, "runner." + key)  # noqa: E731
    paddle.seed(run("seed"))
    set_device(config)
    model_class = load_dy_model_class(config["config_abs_dir"])
    net = model_class.create_model(config)
    net.eval()
    dataset = create_dataset(config, mode="test")
    summaries = []
    for epoch in range(run("infer_start_epoch"), run("infer_end_epoch")):
        load_model(os.path.join(run("infer_load_path"), str(epoch)), net)
        start = time.time()
        summary = evaluate(model_class, net, dataset, config, epoch)
        logger.info("epoch: %d done, pooled AUC: %s, mean campaign AUC: %s over %d campaigns "
                    "(%d undefined), time: %.2f s", epoch, _auc_text(summary["pooled_auc"]),
                    _auc_text(summary["mean_campaign_auc"]), summary["campaigns"],
                    summary["undefined"], time.time() - start)
        summaries.append(summary)
    print_table(run("test_data_dir"), summaries)
    return summaries


def print_table(test_dir, summaries):
    print("\n| test data | epoch | campaigns | pooled AUC | mean campaign AUC |")
    print("|---|---|---|---|---|")
    for s in summaries:
        print("| %s | %d | %d | %.4f | %.4f |" % (test_dir, s["epoch"], s["campaigns"],
                                                  s["pooled_auc"], s["mean_campaign_auc"]))


if __name__ == "__main__":
    try:
        main(parse_args())
    except (ConfigError, DataError, CheckpointError, FileNotFoundError) as error:
        logger.error("%s", error)
        sys.exit(2)
