"""Audience expansion: the users of a pool most like a campaign's seed users.

    python expand.py -m config_big.yaml --seeds SEEDS --pool POOL --out AUDIENCE.csv
        [--top N | --top-fraction F | --min-score S] [--export-dir DIR] [-o key=value ...]

SEEDS and POOL are data files of the module's schema (``.pkl`` or ``.npz``), one or
several campaigns (``aid``) each; ``uid`` is optional (absent, the DataFrame index is
the user id). A seed file's ``label`` is optional: absent, every row is a positive
seed; present, its 0-rows are known negatives. A pool file's labels are ignored.

For each campaign with both seeds and pool: start from the meta-trained checkpoint
(``runner.infer_load_path``, epoch ``runner.infer_end_epoch - 1``), fine-tune on its
seeds as infer.py does, score its pool (without the seed users) in chunks of
``runner.expand_chunk_rows`` rows, and choose its audience. The CSV lists one row per
chosen user, ``aid, uid, score, rank``, best first within each campaign; it is written
once every campaign is done, atomically. ``--export-dir DIR`` saves each campaign's
adapted model for Paddle Inference in ``DIR/<aid>/`` (readme.md, "Expanding an audience").

Positive-only seeds: the pool is unlabelled, so ``runner.expand_negatives_per_positive``
pool users per seed (never a seed user; drawn with ``runner.seed``) stand in as negatives
(PU learning). Some of them are in truth like the seeds, so the scores rank the pool
well but are not calibrated probabilities of conversion.
"""
import argparse
import logging
import math
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import utils  # noqa: E402,F401  (first: quiets Paddle's import warning)
from utils import cpu  # noqa: E402,F401  (before Paddle)
import paddle  # noqa: E402
from paddle.static import InputSpec  # noqa: E402
from tqdm import tqdm  # noqa: E402
from utils.config import ConfigError, load_config  # noqa: E402
from utils.save_load import CheckpointError, load_model  # noqa: E402
from utils.utils_single import load_dy_model_class, set_device  # noqa: E402
import infer  # noqa: E402
import maml  # noqa: E402
from metaheac import data_files, schema, settings  # noqa: E402
from metaheac.atomic_files import write_csv  # noqa: E402
from metaheac.data_files import DataError  # noqa: E402

logging.basicConfig(format="%(asctime)s - %(levelname)s - %(message)s", level=logging.INFO)
logger = logging.getLogger("expand")

# The exported model's inputs, in order: the network's four id tensors (net.py).
SERVING_INPUTS = [
    InputSpec([None, len(schema.STATIC_FIELDS)], "int64", "static_ids"),
    InputSpec([None, schema.SEQUENCE_TOTAL_WIDTH], "int64", "sequence_ids"),
    InputSpec([None, len(schema.SEQUENCE_FIELDS)], "int64", "sequence_lengths"),
    InputSpec([None, len(schema.AD_FIELDS)], "int64", "ad_ids"),
]
EXPORT_PREFIX = "inference"  # DIR/<aid>/inference.json and inference.pdiparams
AUDIENCE_COLUMNS = [schema.AID, schema.UID, "score", "rank"]


class UsageError(ValueError):
    """A command-line flag with a value it does not take; the message names the flag."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--config_yaml", required=True, help="the model's config.yaml")
    parser.add_argument("-o", "--opt", nargs="*", default=[], help="overrides: key=value")
    parser.add_argument("--seeds", required=True, help="seed users (.pkl or .npz)")
    parser.add_argument("--pool", required=True, help="users that may be reached (.pkl or .npz)")
    parser.add_argument("--out", required=True, help="the audience CSV to write")
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--top", type=int, metavar="N", help="the N best-scored pool users")
    size.add_argument("--top-fraction", type=float, metavar="F",
                      help="the best ceil(F x pool size) pool users, 0 < F <= 1")
    size.add_argument("--min-score", type=float, metavar="S",
                      help="every pool user scored at least S, 0 <= S <= 1")
    parser.add_argument("--export-dir", metavar="DIR",
                        help="save each campaign's adapted model for serving in DIR/<aid>/")
    return parser.parse_args(argv)


def check_flags(args):
    if args.top is not None and args.top < 1:
        raise UsageError("--top must be at least 1, got %d" % args.top)
    if args.top_fraction is not None and not 0 < args.top_fraction <= 1:
        raise UsageError("--top-fraction must lie in (0, 1], got %g" % args.top_fraction)
    if args.min_score is not None and not 0 <= args.min_score <= 1:
        raise UsageError("--min-score must lie in [0, 1], got %g" % args.min_score)
    if not args.out.endswith(".csv"):
        raise UsageError("--out must name a .csv file, got %s" % args.out)


def audience_size(args, pool_size, aid):
    """How many of the best-scored users to keep (all of them for --min-score)."""
    if args.top is not None:
        if args.top > pool_size:
            logger.warning("--top %d exceeds the pool of campaign aid %d (%d users besides its "
                           "seeds): its audience is the whole pool", args.top, aid, pool_size)
        return min(args.top, pool_size)
    if args.top_fraction is not None:
        return math.ceil(args.top_fraction * pool_size)
    return pool_size


class Pool:
    """The pool file, read in row chunks; holds only ids and aids in memory."""

    def __init__(self, path, config):
        self.path = path
        self.reader = data_files.open_rows(path, require_label=False)
        self.uid = self.reader.user_ids()
        self.max_idxs = settings.get(config, "hyper_parameters.max_idxs")
        self.chunk_rows = settings.get(config, "runner.expand_chunk_rows")
        if len(self.reader) == 0:
            raise DataError("%s: the pool is empty" % path)
        data_files.check_unique_uids(self.reader.aid, self.uid, path)

    def check(self):
        """Every id within the model's tables, a chunk at a time, before any work."""
        for start in range(0, len(self.reader), self.chunk_rows):
            chunk = self.reader.take(np.arange(start, min(start + self.chunk_rows, len(self.reader))))
            chunk.label = None  # a pool's labels are ignored
            data_files.check_values(chunk, self.max_idxs, self.path)

    def features(self, rows):
        return self.reader.take(rows).features(slice(None))

    def score(self, net, rows, batch_size, desc):
        """Scores of `net` on the pool rows `rows`, a chunk at a time."""
        scores = np.empty(len(rows), np.float32)
        with tqdm(total=len(rows), desc=desc, unit="rows", file=sys.stderr,
                  disable=None) as bar:
            for start in range(0, len(rows), self.chunk_rows):
                chunk = rows[start:start + self.chunk_rows]
                scores[start:start + len(chunk)] = infer.score(net, self.features(chunk),
                                                               batch_size)
                bar.update(len(chunk))
        return scores


def training_rows(seeds, seed_rows, pool, pool_rows, config, aid):
    """Fine-tuning inputs and labels of one campaign, shuffled; and how many negatives
    were drawn from the pool (0 for labelled seeds)."""
    rng = np.random.default_rng([settings.get(config, "runner.seed"), aid])
    seed_x = seeds.features(seed_rows)
    if seeds.label is not None:
        labels = seeds.label[seed_rows]
        if not (labels == 1).any():
            raise DataError("campaign aid %d: its seeds have no positive row (label 1)" % aid)
        drawn = 0
    else:
        # Positive-only seeds: pool users as negatives (PU learning, see the docstring).
        drawn = min(len(pool_rows), settings.get(config, "runner.expand_negatives_per_positive")
                    * len(seed_rows))
        negatives = np.sort(rng.choice(pool_rows, size=drawn, replace=False))
        seed_x = [np.concatenate([s, p]) for s, p in zip(seed_x, pool.features(negatives))]
        labels = np.r_[np.ones(len(seed_rows), np.float32), np.zeros(drawn, np.float32)]
    order = rng.permutation(len(labels))
    return [x[order] for x in seed_x], labels[order], drawn


def adapt(model_class, net, adapted, config, train_x, train_y, aid):
    """Fine-tune from `net` (the meta-trained weights) and write the result into `adapted`.

    The one call of infer.fine_tune: the fine-tuning schedule is infer.py's
    (runner.infer_finetune). Returns how it fine-tuned (infer.fine_tune's dict)."""
    fixed = settings.get(config, "runner.infer_finetune") == "fixed"
    # The auto schedule stops when the held-out rows say so: no total to show then.
    total = settings.get(config, "runner.infer_train_epoch") * len(train_y) if fixed else None
    with tqdm(total=total, desc="aid %d fine-tuning" % aid, unit="rows",
              file=sys.stderr, disable=None) as bar:
        weights, _, done = infer.fine_tune(model_class, net, config, train_x, train_y,
                                           aid=aid, progress=bar.update)
    adapted.set_state_dict(net.state_dict())
    maml.write_back(adapted, weights, [train_x])
    return done


def export(adapted, export_dir, aid):
    """Save the adapted net for Paddle Inference in export_dir/<aid>/, whole or not at all."""
    final = os.path.join(export_dir, str(aid))
    staging = "%s.tmp-%d" % (final, os.getpid())
    try:
        paddle.jit.save(adapted, os.path.join(staging, EXPORT_PREFIX), input_spec=SERVING_INPUTS)
        if os.path.isdir(final):
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def choose(args, aid, uids, scores):
    """The audience of one campaign, best first: aid, uid, score, rank."""
    order = np.argsort(-scores, kind="stable")
    keep = order[:audience_size(args, len(scores), aid)]
    if args.min_score is not None:
        keep = keep[scores[keep] >= args.min_score]
    return pd.DataFrame({schema.AID: aid, schema.UID: uids[keep], "score": scores[keep],
                         "rank": np.arange(1, len(keep) + 1)}, columns=AUDIENCE_COLUMNS)


def campaigns(seeds, pool, seeds_path, pool_path):
    """{aid: (seed rows, pool rows without the seed users)} of the campaigns in both files."""
    seed_aids, seed_rows = seeds.campaigns()
    pool_aids, pool_rows = data_files.campaign_rows(pool.reader.aid)
    for aids, here, missing in ((np.setdiff1d(seed_aids, pool_aids), seeds_path, pool_path),
                                (np.setdiff1d(pool_aids, seed_aids), pool_path, seeds_path)):
        if len(aids):
            logger.warning("skipping campaign(s) aid %s: rows in %s, none in %s",
                           aids.tolist(), here, missing)
    by_aid = dict(zip(pool_aids.tolist(), pool_rows))
    chosen = {}
    seed_uids = seeds.user_ids()
    for aid, rows in zip(seed_aids.tolist(), seed_rows):
        if aid in by_aid:
            reachable = by_aid[aid][~np.isin(pool.uid[by_aid[aid]], seed_uids[rows])]
            chosen[aid] = (rows, reachable)
    if not chosen:
        raise DataError("%s and %s: no campaign (aid) has both seeds and pool users"
                        % (seeds_path, pool_path))
    return chosen


def main(args):
    check_flags(args)
    config = load_config(args.config_yaml, args.opt)
    run = lambda key: settings.get(config, "runner." + key)  # noqa: E731
    paddle.seed(run("seed"))
    set_device(config)
    model_class = load_dy_model_class(config["config_abs_dir"])
    net = model_class.create_model(config)
    checkpoint = os.path.join(run("infer_load_path"), str(run("infer_end_epoch") - 1))
    load_model(checkpoint, net)
    net.eval()
    adapted = model_class.create_model(config)
    adapted.eval()

    seeds = data_files.load_columns(args.seeds, settings.get(config, "hyper_parameters.max_idxs"),
                                    require_label=False)
    data_files.check_unique_uids(seeds.aid, seeds.user_ids(), args.seeds)
    pool = Pool(args.pool, config)
    pool.check()
    todo = campaigns(seeds, pool, args.seeds, args.pool)
    if seeds.label is None:
        logger.info("%s has no label column: every row is a positive seed, and %d pool users "
                    "per seed are drawn as negatives. This treats the pool as unlabelled "
                    "(PU learning): some drawn users are in truth like the seeds, so scores "
                    "rank the pool but are not conversion probabilities",
                    args.seeds, run("expand_negatives_per_positive"))

    batch_size = settings.get(config, "hyper_parameters.batch_size")
    audiences = []
    for aid, (seed_rows, pool_rows) in todo.items():
        start = time.time()
        train_x, train_y, drawn = training_rows(seeds, seed_rows, pool, pool_rows, config, aid)
        done = adapt(model_class, net, adapted, config, train_x, train_y, aid)
        tuned = time.time()
        scores = pool.score(adapted, pool_rows, batch_size, "aid %d scoring" % aid)
        scoring = time.time() - tuned
        failed = infer.divergence(scores)
        if failed:
            logger.warning("campaign aid %d: %s; no audience written for it", aid, failed)
            continue
        audience = choose(args, aid, pool.uid[pool_rows], scores)
        audiences.append(audience)
        where = ", model exported to %s" % export(adapted, args.export_dir, aid) \
            if args.export_dir else ""
        positives = int((train_y == 1).sum())
        logger.info("aid %d: seeds %d (%d positive, %d negative%s), fine-tuning: %s, %d steps, "
                    "pool %d, audience %d, score cut-off %s, time %.2f s (scoring %.2f s)%s",
                    aid, len(seed_rows), positives, len(train_y) - positives,
                    ", drawn from the pool" if drawn else "", done["finetune"],
                    done["finetune_steps"], len(pool_rows), len(audience),
                    "%.6f" % audience.score.iloc[-1] if len(audience) else "none",
                    time.time() - start, scoring, where)
    if not audiences:
        raise DataError("no campaign gave an audience; nothing written to %s" % args.out)
    write_csv(pd.concat(audiences, ignore_index=True), args.out)
    logger.info("audience of %d campaign(s) written to %s", len(audiences), args.out)


def cli(argv=None):
    """Run the command line; bad input is one logged line and status 2."""
    try:
        main(parse_args(argv))
    except (ConfigError, DataError, CheckpointError, UsageError) as error:
        logger.error("%s", error)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
