"""Adapt the meta-trained model to each test campaign, rank its candidates, report.

    python infer.py -m config.yaml [-o runner.test_data_dirs=[data/test,data/test_cold] ...]

For each checkpoint epoch in ``[infer_start_epoch, infer_end_epoch)``, each test
folder (``runner.test_data_dirs``, or the one ``runner.test_data_dir``) and each
campaign in it: score its candidates (stage 2) with the meta-trained weights, then
start from those weights, fine-tune ``infer_train_epoch`` epochs with Adam
(``local_test_learning_rate``) on the campaign's seed rows (stage 1) in batches of
``batch_size``, and score the candidates again. Logs each campaign and each test
folder, prints a table, and writes the report of ``metaheac/report.py`` to
``<runner.infer_output_dir>/<epoch>`` (default ``<infer_load_path>/infer/<epoch>``).

With ``runner.use_fleet: True`` under ``python -m paddle.distributed.launch`` the
campaigns are shared among the ranks: readme.md, "Several processes, GPUs or machines".

Each campaign is fine-tuned on copies of only the embedding rows its rows use:
a fresh Adam never moves a row whose gradient has always been zero, so this
equals fine-tuning the full model, without copying or reloading the full tables.
"""
import argparse
import itertools
import logging
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from utils import distributed  # noqa: E402  (first: utils quiets Paddle's import warning)
import paddle  # noqa: E402
from utils.config import ConfigError, load_config  # noqa: E402
from utils.save_load import CheckpointError, load_model  # noqa: E402
from utils.utils_single import create_dataset, load_dy_model_class, set_device  # noqa: E402
import maml  # noqa: E402
from metaheac import early_stopping  # noqa: E402
from metaheac import metrics  # noqa: E402
from metaheac import settings  # noqa: E402
from metaheac import report  # noqa: E402
from metaheac.data_files import DataError  # noqa: E402

logging.basicConfig(format="%(asctime)s - %(levelname)s - %(message)s", level=logging.INFO)
logger = logging.getLogger("infer")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="MetaHeac per-campaign fine-tune and evaluation")
    parser.add_argument("-m", "--config_yaml", required=True, help="the model's config.yaml")
    parser.add_argument("-o", "--opt", nargs="*", default=[], help="overrides: key=value")
    return parser.parse_args(argv)


def fine_tuning_batch_size(config):
    """Rows per fine-tuning step: runner.infer_batch_size, or else hyper_parameters.batch_size."""
    return (settings.get(config, "runner.infer_batch_size")
            or settings.get(config, "hyper_parameters.batch_size"))


def fine_tune(model_class, net, config, seed_x, seed_y, later_inputs=(), aid=0, progress=None):
    """Adapt a copy of `net` to one campaign's seed rows; `net` itself is left as it is.

    Returns the adapted weights, `later_inputs` (input lists to score with them)
    remapped onto their task-local table, which holds the rows of the seeds and of
    those, and a dict saying how it was fine-tuned (the campaign's report columns).
    ``progress(rows)``, if given, is called after each step with the rows it trained on.
    """
    local, (seed_x, *later_inputs) = maml.localize(net, net.weights(), [seed_x, *later_inputs])
    start = lambda: maml.leaf_copies(local)  # noqa: E731  (fresh copies of the meta-trained rows)
    if settings.get(config, "runner.infer_finetune") == "auto":
        holdout = early_stopping.stratified_holdout(
            seed_y, settings.get(config, "runner.infer_holdout_fraction"),
            settings.get(config, "runner.seed"), aid)
        positives = int(seed_y[holdout].sum())
        needed = settings.get(config, "runner.infer_min_holdout_positives")
        if positives >= needed:
            weights, done = _auto_fine_tune(model_class, net, config, start, seed_x, seed_y,
                                            holdout, progress)
            return weights, later_inputs, done
        fallback = ("fixed (fallback: %d held-out positives, below infer_min_holdout_positives %d)"
                    % (positives, needed))
    else:
        fallback = "fixed"
    weights = start()
    steps = _fit(model_class, net, config, weights, seed_x, seed_y,
                 _epoch_steps(config, len(seed_y)), progress=progress)
    return weights, later_inputs, {"finetune": fallback, "finetune_steps": steps,
                                   "validation_auc": float("nan")}


def _epoch_steps(config, rows):
    """Steps of the fixed schedule: infer_train_epoch passes over `rows` rows."""
    return settings.get(config, "runner.infer_train_epoch") * -(-rows // fine_tuning_batch_size(config))


def _batches(config, rows):
    """Row slices of successive fine-tuning steps: passes over `rows` rows in order, repeated."""
    batch_size = fine_tuning_batch_size(config)
    while True:
        for first in range(0, rows, batch_size):
            yield slice(first, first + batch_size)


def _fit(model_class, net, config, weights, seed_x, seed_y, steps, after_step=None,
         progress=None):
    """`steps` Adam steps on the seed rows; `after_step(step)` after each, True to stop;
    `progress(rows)` after each. Returns the steps taken."""
    optimizer = model_class.create_optimizer(net, config, mode="infer",
                                             parameters=list(weights.values()))
    seed_y = paddle.to_tensor(seed_y)
    taken = 0
    for rows in itertools.islice(_batches(config, len(seed_y)), steps):
        loss = model_class.infer_train_forward(
            net, ([x[rows] for x in seed_x], seed_y[rows]), config, weights=weights)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        taken += 1
        if progress:
            progress(seed_y[rows].shape[0])
        if after_step and after_step(taken):
            break
    return taken


def _auto_fine_tune(model_class, net, config, start, seed_x, seed_y, holdout, progress=None):
    """Fine-tune on the seed rows outside `holdout`, stopping early on the held-out score;
    then the best weights, or (runner.infer_auto_refit) a refit on all seed rows for the
    best number of steps."""
    run = lambda key: settings.get(config, "runner." + key)  # noqa: E731
    fit, check = (paddle.to_tensor(np.flatnonzero(rows)) for rows in (~holdout, holdout))
    fit_x, fit_y = [paddle.gather(x, fit) for x in seed_x], seed_y[~holdout]
    check_x, check_y = [paddle.gather(x, check) for x in seed_x], seed_y[holdout]
    # Validate about once per held-out rows' worth of training rows: a check then costs
    # at most one forward pass of a batch per step.
    interval = max(1, -(-len(check_y) // fine_tuning_batch_size(config)))
    stopper = early_stopping.EarlyStopping(run("infer_patience"), run("infer_auto_metric"))
    weights = start()
    best = {"weights": weights, "auc": float("nan")}

    def validate(step):
        scores = score_adapted(model_class, net, config, weights, check_x, check_y)
        auc = metrics.auc(check_y, scores)
        value = auc if run("infer_auto_metric") == "auc" else metrics.log_loss_of(check_y, scores)
        if stopper.update(step, value):
            best["auc"] = auc
            if not run("infer_auto_refit"):
                best["weights"] = {k: w.detach().clone() for k, w in weights.items()}
        return stopper.stop

    def after_step(step):
        return step % interval == 0 and validate(step)

    if not validate(0):
        last = _fit(model_class, net, config, weights, fit_x, fit_y, run("infer_max_steps"),
                    after_step, progress)
        if last % interval:  # the last steps before infer_max_steps
            validate(last)
    steps = stopper.best_step or 0
    if run("infer_auto_refit"):
        best["weights"] = start()
        _fit(model_class, net, config, best["weights"], seed_x, seed_y, steps, progress=progress)
    return best["weights"], {"finetune": "auto" + (" refit" if run("infer_auto_refit") else ""),
                             "finetune_steps": steps, "validation_auc": best["auc"]}


def score_adapted(model_class, net, config, weights, candidate_x, candidate_y,
                  metric_list=None, campaign_metric_list=None):
    """Scores of candidates under adapted `weights`, in batches; they also feed the
    metric lists given (pooled over campaigns, this campaign's)."""
    batch_size = settings.get(config, "hyper_parameters.batch_size")
    scores = []
    candidate_y = paddle.to_tensor(candidate_y)
    with paddle.no_grad():
        for start in range(0, len(candidate_y), batch_size):
            rows = slice(start, start + batch_size)
            metric_list, campaign_metric_list, batch_scores = model_class.infer_forward(
                net, metric_list, campaign_metric_list,
                ([x[rows] for x in candidate_x], candidate_y[rows]), config, weights=weights)
            scores.append(batch_scores)
    return np.concatenate(scores) if scores else np.zeros(0, np.float32)


def adapt_and_score(model_class, net, config, seed_x, seed_y, candidate_x, candidate_y,
                    metric_list=None, campaign_metric_list=None, aid=0):
    """Fine-tune a copy of `net` on one campaign's seed rows; score its candidates.
    Returns the scores and how it was fine-tuned (fine_tune's dict)."""
    weights, (candidate_x,), done = fine_tune(model_class, net, config, seed_x, seed_y,
                                              [candidate_x], aid)
    return score_adapted(model_class, net, config, weights, candidate_x, candidate_y,
                         metric_list, campaign_metric_list), done


def score(net, inputs, batch_size):
    """Scores of the network's own weights (before any fine-tuning), in batches."""
    inputs = [paddle.to_tensor(x) for x in inputs]
    with paddle.no_grad():
        return np.concatenate([net(*[x[start:start + batch_size] for x in inputs]).numpy()
                               for start in range(0, len(inputs[0]), batch_size)])


def evaluate(model_class, net, dataset, config, epoch, test_set, ranks=distributed.Ranks()):
    """Score, adapt to and score again every campaign of one test folder.

    Each campaign goes to the rank with the fewest rows to process so far; rank 0
    returns the folder's TestSetResult, the other ranks None.
    """
    batch_size = settings.get(config, "hyper_parameters.batch_size")
    epochs = settings.get(config, "runner.infer_train_epoch")
    loads = np.zeros(ranks.size)
    mine = []
    # Every rank reads every campaign (the reader shuffles seed rows from one stream),
    # so all ranks see the same sizes and agree on the owners.
    for index, (aid, seed_x, seed_y, candidate_x, candidate_y, ids) in enumerate(dataset):
        owner = int(np.argmin(loads))  # the first of the least loaded
        # Fine-tuning passes over the seed rows, plus about one for the two scorings.
        loads[owner] += epochs * len(seed_y) + len(candidate_y)
        if owner != ranks.rank:
            continue
        start = time.time()
        aid = int(aid[0])
        before = score(net, candidate_x, batch_size)
        after, done = adapt_and_score(model_class, net, config, seed_x, seed_y, candidate_x,
                                      candidate_y, aid=aid)
        failed = divergence(after)
        row = {"aid": aid, "seed_rows": len(seed_y),
               **metrics.campaign_metrics(candidate_y, after, before, failed), **done}
        mine.append((index, row, ids, candidate_y, after))
        if failed:
            logger.warning("epoch: %d, %s, campaign %d/%d, aid: %d: failed, %s; reported with "
                           "NaN AUC, the other campaigns go on", epoch, test_set, index + 1,
                           len(dataset), aid, failed)
            continue
        logger.info("epoch: %d, %s, campaign %d/%d, aid: %d, seed rows: %d, candidates: %d "
                    "(%d positive), AUC: %s (before fine-tuning: %s), fine-tuning: %s, %d steps, "
                    "validation AUC: %s, time: %.2f s",
                    epoch, test_set, index + 1, len(dataset), aid, row["seed_rows"],
                    row["candidate_rows"], row["positives"], _auc_text(row["auc"]),
                    _auc_text(row["auc_before"]), done["finetune"], done["finetune_steps"],
                    _auc_text(done["validation_auc"], "none"), time.time() - start)
    scored = sorted((c for part in ranks.gather(mine) for c in part), key=lambda c: c[0])
    if not ranks.main:
        return None
    pooled, _ = model_class.create_metrics()
    campaigns, predictions = [], []
    for _, row, ids, labels, scores in scored:
        if not row.get("failed"):
            pooled[0].update(scores, labels)
        campaigns.append(row)
        predictions.append(pd.DataFrame({"test_set": test_set, "aid": row["aid"],
                                         **ids, "label": labels.astype(int),
                                         "score": scores}))
    return report.TestSetResult(test_set, epoch, campaigns, pd.concat(predictions),
                                pooled[0].accumulate(), getattr(dataset, "skipped", {}))


def divergence(scores):
    """Why the scores after fine-tuning are unusable, or None if they are all finite."""
    bad = int(np.sum(~np.isfinite(scores)))
    if bad:
        return ("fine-tuning diverged: %d of %d candidate scores are not finite (lower "
                "hyper_parameters.optimizer.local_test_learning_rate)" % (bad, len(scores)))
    return None


def _auc_text(auc, undefined="undefined (candidates of one class)"):
    return undefined if np.isnan(auc) else "%.6f" % auc


def test_data_dirs(config):
    """The test folders: runner.test_data_dirs, or else the one runner.test_data_dir."""
    dirs = settings.get(config, "runner.test_data_dirs")
    return dirs or [settings.get(config, "runner.test_data_dir")]


def output_dir(config, epoch):
    base = settings.get(config, "runner.infer_output_dir")
    if base is None:
        base = os.path.join(settings.get(config, "runner.infer_load_path"), "infer")
    return os.path.join(str(base), str(epoch))


def main(args):
    config = load_config(args.config_yaml, args.opt)
    run = lambda key: settings.get(config, "runner." + key)  # noqa: E731
    paddle.seed(run("seed"))
    set_device(config)
    ranks = distributed.start(config)
    model_class = load_dy_model_class(config["config_abs_dir"])
    net = model_class.create_model(config)
    net.eval()
    datasets = {d: create_dataset(dict(config, **{"runner.test_data_dir": d}), mode="test")
                for d in test_data_dirs(config)}
    for test_set, dataset in datasets.items():
        if len(dataset) == 0:
            raise DataError("%s: no campaign has both seed rows and candidates" % test_set)
    results = []
    for epoch in range(run("infer_start_epoch"), run("infer_end_epoch")):
        checkpoint = os.path.join(run("infer_load_path"), str(epoch))
        load_model(checkpoint, net)
        epoch_results = []
        for test_set, dataset in datasets.items():
            start = time.time()
            result = evaluate(model_class, net, dataset, config, epoch, test_set, ranks)
            if not ranks.main:
                continue
            result.oracle = report.read_oracle(os.path.join(config["config_abs_dir"], test_set))
            s = result.summary
            logger.info("epoch: %d done, %s: pooled AUC: %s, GAUC: %s over %d campaigns, "
                        "one-class campaigns (not in GAUC): %s, failed: %s, time: %.2f s",
                        epoch, test_set, _auc_text(s["pooled_auc"]), _auc_text(s["gauc"]),
                        s["campaigns"], s["one_class_campaigns"] or "none",
                        s["failed_campaigns"] or "none", time.time() - start)
            epoch_results.append(result)
        if ranks.main:
            directory = output_dir(config, epoch)
            report.write(directory, config, checkpoint, epoch_results)
            logger.info("epoch: %d report written to %s", epoch, directory)
        results.extend(epoch_results)
    if ranks.main:
        print("\n" + report.table(results))
    return results


if __name__ == "__main__":
    try:
        main(parse_args())
    except (ConfigError, DataError, CheckpointError, FileNotFoundError) as error:
        logger.error("%s", error)
        sys.exit(2)
