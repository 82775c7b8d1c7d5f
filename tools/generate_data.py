"""Synthetic look-alike data with a planted, learnable structure.

    python tools/generate_data.py --preset sample                 # data/ (what ships)
    python tools/generate_data.py --preset full                   # datasets/Lookalike/, minutes
    python tools/generate_data.py --preset testbed --seed 1 --out DIR  # the hard case (tools/testbed.py)
    python tools/generate_data.py --preset tiny --raw --out DIR   # raw competition files

The generative story (all draws from one numpy Generator, so a seed fixes everything):

* Users: a taste ``theta`` = weights over ``n_topics`` latent topics (sparse Dirichlet).
  Each static field and each sequence token is drawn from a topic picked by ``theta``:
  a static value from that topic's categorical distribution, a token from that topic's
  preferred-token list (or, with probability ``token_noise``, any real token).
* Campaigns (aids): each belongs to an ad category; a category has a target vector over
  topics and a campaign adds its own variation to it. Ad fields follow the category.
* Labels: ``Bernoulli(sigmoid(bias_aid + affinity_scale * theta . target_aid + noise))``,
  with ``bias_aid`` solved so the campaign's positive rate is its drawn base rate.
* Campaign sizes are log-logistic (heavy tail). Test campaigns split their rows into
  stage 1 (seeds) and stage 2 (candidates) and are hot when they have more than
  ``hot_threshold`` (T) positives over both stages, cold otherwise, as the authors'
  ``data/process.py`` splits them. The testbed preset instead designs them: hot and cold
  campaigns of given seed-row ranges, each with the same number of candidates.
* Each test folder gets ``schema.ORACLE_FILE``: the pooled AUC and GAUC of its candidates
  ranked by the true click probabilities.

Every row is a fresh user and there are no per-row Python loops. Rows are drawn a chunk of
whole campaigns at a time and kept in the smallest integer types that hold each field, so
the full preset (about 10 million rows) stays within a few GB; a preset that fits one chunk
draws exactly what it drew before chunking existed (``data/`` is unchanged).
"""
import argparse
import dataclasses
import os
import time

import numpy as np
import pandas as pd

import utils  # noqa: E402  (puts the repo root, and so the metaheac package, on the path)

REPO_ROOT = utils.ROOT

from metaheac import metrics, schema  # noqa: E402
from metaheac.atomic_files import replacing, write_json  # noqa: E402
from metaheac.data_files import frame_of, write_frame  # noqa: E402
from metaheac.layout import (FRAME_KEYS, LAYOUTS, RAW_FILES, layout_paths, progress_printer,  # noqa: E402
                             split_masks, summary)


@dataclasses.dataclass(frozen=True)
class Spec:
    n_train: int  # meta-train campaigns
    n_test: int  # test campaigns, split into hot/cold after labels are drawn
    train_median_rows: float  # rows of a train campaign, log-logistic around this
    test_median_rows: float  # rows (stage 1 + stage 2) of a test campaign
    rows_shape: float  # log-logistic shape: smaller = heavier tail
    min_rows: int
    stage2_fraction: float  # stage-2 rows per stage-1 row of a test campaign
    hot_threshold: int  # T: a test campaign with <= T positive rows is cold
    positive_rate: float  # target overall positive rate
    rate_sigma: float = 0.4  # log-normal spread of per-campaign base rates
    n_categories: int = 5
    n_topics: int = 8
    topic_alpha: float = 0.1  # Dirichlet concentration of user tastes: small = focused users
    category_spread: float = 1.0  # std of category targets over topics
    campaign_spread: float = 0.5  # std of a campaign's deviation from its category
    affinity_scale: float = 6.0
    label_noise: float = 0.3  # std of the per-row logit noise
    token_noise: float = 0.2  # probability that a token ignores the user's taste
    # A designed test set (the testbed): ((hot campaigns, min, max seed rows), (cold ...)),
    # each campaign with `candidates` stage-2 rows; None: log-logistic sizes split by T.
    test_design: tuple = None
    candidates: int = 0
    unseen_test: int = 0  # test campaigns of ad categories that no training campaign has


PRESETS = {
    "tiny": Spec(n_train=6, n_test=6, train_median_rows=30, test_median_rows=40, rows_shape=2.0, min_rows=20,
                 stage2_fraction=0.3, hot_threshold=6, positive_rate=0.15),
    "sample": Spec(n_train=24, n_test=16, train_median_rows=90, test_median_rows=160, rows_shape=2.0, min_rows=30,
                   stage2_fraction=0.3, hot_threshold=7, positive_rate=0.05),
    # The scale of the authors' preprocessed Tencent data: 173 campaigns, half of them for
    # meta-training with ~4.4 M rows; test campaigns as large again in stage 1, plus a quarter
    # of that in stage 2. "Seed users" of a campaign are its positive stage-1 rows (the authors
    # count label == 1 rows of train.csv); with ~5 % positives, a median of 30 k rows and shape
    # 1.5 put ~65 % of campaigns at <= 2,000 seeds, ~85 % at <= 4,000 and a few above 14,000,
    # close to the authors' seed-size plot. T = 4000 as in PaddleRec's readme.
    "full": Spec(n_train=86, n_test=87, train_median_rows=30_000, test_median_rows=37_500, rows_shape=1.5,
                 min_rows=2_000, stage2_fraction=0.25, hot_threshold=4000, positive_rate=0.05,
                 n_categories=40, n_topics=16),
    # Built like the hard real case: 24 training campaigns (~116 k rows), 8 hot test campaigns
    # of 4,000-8,000 seed rows and 8 cold of 150-600, 2,500 candidates each, 12 of the 16 of ad
    # categories unseen in training, noisy tokens and a weak taste signal, ~10 % positives.
    "testbed": Spec(n_train=24, n_test=16, train_median_rows=3_800, test_median_rows=0, rows_shape=2.0,
                    min_rows=1_000, stage2_fraction=0.0, hot_threshold=0, positive_rate=0.10,
                    n_categories=16, n_topics=12, token_noise=0.7, affinity_scale=2.5,
                    test_design=((8, 4_000, 8_000), (8, 150, 600)), candidates=2_500, unseen_test=12),
}
# Where each preset goes and in which folder layout, unless --out / --layout say otherwise.
DEFAULT_OUT = {"tiny": "datasets/tiny", "sample": "data", "full": "datasets/Lookalike",
               "testbed": "datasets/testbed"}
DEFAULT_LAYOUT = {"tiny": "paddlerec", "sample": "paddlerec", "full": "lookalike", "testbed": "paddlerec"}

# The id reserved for "missing" in each sequence field; real tokens are 0..max_id-1.
PAD_ID = {f.name: f.max_id for f in schema.SEQUENCE_FIELDS}
# Share of users with an empty list, per sequence field (others: uniform 1..width).
EMPTY_RATE = {"interest1": 0.05, "interest2": 0.2, "interest3": 0.7,
              "kw1": 0.1, "kw2": 0.1, "topic1": 0.1, "topic2": 0.2}
MAX_PREFERRED = 12  # preferred tokens per topic and field
STATIC_ALPHA = 0.1  # Dirichlet concentration of a topic's static-value distribution
MIN_LABELS = 2  # each test campaign needs this many positives and negatives (one per stage)
CHUNK_ROWS = 250_000  # rows drawn at once (whole campaigns): bounds the float temporaries


def _categorical(cdf, row, u):
    """Draw indices from the row-wise CDFs ``cdf[row]`` given uniforms ``u``, vectorised.

    Shifting row r of the table by r makes the flattened table one sorted array, so a
    single searchsorted serves every row without materialising ``cdf[row]``.
    """
    n_rows, width = cdf.shape
    flat = (cdf + np.arange(n_rows)[:, None]).ravel()
    idx = np.searchsorted(flat, row + u, side="right") - row * width
    return np.clip(idx, 0, width - 1)


def _distinct(rng, vocab, n):
    """n ids from range(vocab), distinct whenever the vocabulary allows it."""
    return rng.choice(vocab, size=n, replace=n > vocab)


def _campaign_sizes(n, median, spec, rng):
    """Heavy-tailed (log-logistic) sizes, one per quantile stratum in random order.

    Stratifying keeps the spread from small to large campaigns (hence the hot/cold
    balance) stable across seeds; the log-logistic has a closed-form quantile function.
    """
    q = (rng.permutation(n) + rng.random(n)) / (n + 1)
    sizes = median * (q / (1.0 - q)) ** (1.0 / spec.rows_shape)
    return np.maximum(spec.min_rows, np.round(sizes)).astype(np.int64)


def _make_world(spec, rng):
    """Topic tables for users and the campaigns with their targets, rates and ad fields."""
    k = spec.n_topics
    static_cdf = {f.name: np.cumsum(rng.dirichlet(np.full(f.vocab_size, STATIC_ALPHA), size=k), axis=1)
                  for f in schema.STATIC_FIELDS}
    preferred = {}
    for f in schema.SEQUENCE_FIELDS:
        n_real = f.max_id  # max_id itself is the padding id
        p = min(MAX_PREFERRED, max(3, n_real // 4))
        preferred[f.name] = np.stack([rng.choice(n_real, size=p, replace=False) for _ in range(k)])

    n_camp = spec.n_train + spec.n_test
    cat_target = rng.normal(0.0, spec.category_spread, size=(spec.n_categories, k))
    category = rng.integers(spec.n_categories, size=n_camp)
    deviation = rng.normal(0.0, spec.campaign_spread, size=(n_camp, k))
    # Mean-one log-normal multiplier, so campaign base rates average to positive_rate.
    spread = rng.lognormal(-spec.rate_sigma ** 2 / 2, spec.rate_sigma, size=n_camp)
    rate = np.clip(spec.positive_rate * spread, 0.002, 0.5)
    is_test = np.zeros(n_camp, dtype=bool)
    is_test[rng.choice(n_camp, size=spec.n_test, replace=False)] = True
    sizes = np.empty(n_camp, dtype=np.int64)
    sizes[~is_test] = _campaign_sizes(spec.n_train, spec.train_median_rows, spec, rng)
    hot = None
    if spec.test_design:
        sizes[is_test], hot_tests = _designed_test_sizes(spec, rng)
        hot = np.zeros(n_camp, dtype=bool)
        hot[np.flatnonzero(is_test)[hot_tests]] = True
        if spec.unseen_test:
            category = _unseen_categories(spec, is_test, rng)
    else:
        sizes[is_test] = _campaign_sizes(spec.n_test, spec.test_median_rows, spec, rng)
    target = cat_target[category] + deviation

    vocab = {f.name: f.vocab_size for f in schema.AD_FIELDS}
    # Each category owns a pool of 2 advertisers and 3 products; campaigns pick from their pool.
    cat_advertisers = _distinct(rng, vocab["advertiserId"], 2 * spec.n_categories).reshape(-1, 2)
    cat_products = _distinct(rng, vocab["productId"], 3 * spec.n_categories).reshape(-1, 3)
    ad = {
        "advertiserId": cat_advertisers[category, rng.integers(2, size=n_camp)],
        "campaignId": _distinct(rng, vocab["campaignId"], n_camp),
        "creativeSize": rng.integers(vocab["creativeSize"], size=n_camp),
        "adCategoryId": _distinct(rng, vocab["adCategoryId"], spec.n_categories)[category],
        "productId": cat_products[category, rng.integers(3, size=n_camp)],
        "productType": rng.integers(vocab["productType"], size=spec.n_categories)[category],
    }
    assert set(ad) == set(schema.AD_COLUMNS)
    return dict(static_cdf=static_cdf, preferred=preferred, target=target, rate=rate,
                sizes=sizes, is_test=is_test, hot=hot, ad=ad)


def _designed_test_sizes(spec, rng):
    """Rows (seeds + candidates) of the test campaigns of `spec.test_design`, and which are hot."""
    (n_hot, hot_lo, hot_hi), (n_cold, cold_lo, cold_hi) = spec.test_design
    if n_hot + n_cold != spec.n_test:
        raise ValueError("test_design has %d campaigns, n_test is %d" % (n_hot + n_cold, spec.n_test))
    seeds = np.r_[rng.integers(hot_lo, hot_hi + 1, n_hot), rng.integers(cold_lo, cold_hi + 1, n_cold)]
    hot = np.r_[np.ones(n_hot, bool), np.zeros(n_cold, bool)]
    order = rng.permutation(spec.n_test)  # hot and cold interleave in aid order
    return seeds[order] + spec.candidates, hot[order]


def _unseen_categories(spec, is_test, rng):
    """Categories: training campaigns and n_test - unseen_test test campaigns draw from one
    half of them; the other unseen_test test campaigns from the other half, which training
    never sees. (A test campaign of the first half may still draw a category that no
    training campaign happened to draw.)"""
    seen = spec.n_categories // 2
    category = rng.integers(seen, size=len(is_test))
    unseen = np.flatnonzero(is_test)[rng.permutation(spec.n_test)[:spec.unseen_test]]
    category[unseen] = rng.integers(seen, spec.n_categories, size=len(unseen))
    return category


def _draw_users(n, spec, world, rng):
    """Tastes, static fields, sequence matrices and lengths for n fresh users."""
    theta = rng.dirichlet(np.full(spec.n_topics, spec.topic_alpha), size=n)
    theta_cdf = np.cumsum(theta, axis=1)
    row = np.arange(n)
    cols = {}
    for f in schema.STATIC_FIELDS:
        topic = _categorical(theta_cdf, row, rng.random(n))
        cols[f.name] = _categorical(world["static_cdf"][f.name], topic, rng.random(n))
    for f in schema.SEQUENCE_FIELDS:
        topic = _categorical(theta_cdf, row[:, None], rng.random((n, f.width)))
        pref = world["preferred"][f.name]
        tokens = pref[topic, rng.integers(pref.shape[1], size=(n, f.width))]
        noisy = rng.random((n, f.width)) < spec.token_noise
        tokens[noisy] = rng.integers(f.max_id, size=int(noisy.sum()))
        length = np.where(rng.random(n) < EMPTY_RATE[f.name], 0, rng.integers(1, f.width + 1, size=n))
        tokens[np.arange(f.width) >= length[:, None]] = PAD_ID[f.name]
        cols[f.name] = tokens.astype(np.int64)
        cols[f.length_column] = length.astype(np.int64)
    return theta, cols


def _calibrated_bias(logit, camp, rate, n_iter=60):
    """Per-campaign bias b with mean(sigmoid(b + logit)) over the campaign's rows = rate (bisection)."""
    size = np.bincount(camp, minlength=len(rate))
    lo, hi = np.full(len(rate), -30.0), np.full(len(rate), 30.0)
    for _ in range(n_iter):
        mid = (lo + hi) / 2
        mean = np.bincount(camp, weights=_sigmoid(mid[camp] + logit), minlength=len(rate)) / size
        lo, hi = np.where(mean < rate, mid, lo), np.where(mean < rate, hi, mid)
    return (lo + hi) / 2


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _draw_labels(p, camp, is_test, rng):
    """Bernoulli labels, conditioned on every test campaign having MIN_LABELS of each class.

    Only the failing test campaigns are redrawn (rejection sampling), so all other rows keep
    their first draw.
    """
    n_camp = len(is_test)
    label = rng.random(len(p)) < p
    for _ in range(1000):
        pos = np.bincount(camp, weights=label, minlength=n_camp)
        neg = np.bincount(camp, minlength=n_camp) - pos
        bad = is_test & ((pos < MIN_LABELS) | (neg < MIN_LABELS))
        if not bad.any():
            return label.astype(np.int64)
        redo = bad[camp]
        label[redo] = rng.random(int(redo.sum())) < p[redo]
    raise ValueError("test campaigns too small or too skewed to hold both classes in both stages")


def _stage2_mask(camp, label, sizes, n2, rng):
    """Random stage split per campaign; stage 2 gets n2 of its rows.

    The lowest-keyed positive and negative of a campaign are forced into stage 2 and the
    next ones into stage 1, so both stages hold both classes.
    """
    key = rng.random(len(camp))
    order = np.lexsort((key, label, camp))
    group = camp[order] * 2 + label[order]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    rank_in_class = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    key[order[rank_in_class == 0]] = -1.0
    key[order[rank_in_class == 1]] = 2.0
    order = np.lexsort((key, camp))
    first = np.r_[0, np.cumsum(sizes)[:-1]]
    rank = np.arange(len(order)) - first[camp[order]]
    mask = np.empty(len(camp), dtype=bool)
    mask[order] = rank < n2[camp[order]]
    return mask


@dataclasses.dataclass
class Draw:
    """One generated data set. Rows are in campaign order; ``row_id`` says where they go."""
    columns: dict  # schema column -> per-row values, in the smallest dtype that holds the field
    stage2: np.ndarray  # per row: a stage-2 candidate rather than a stage-1 seed row
    row_id: np.ndarray  # per row: its id in the output files, a permutation so files interleave
    is_test: np.ndarray  # per campaign
    hot: np.ndarray  # per campaign: more than T positives over both stages (or as designed)
    probability: np.ndarray  # per row: the true click probability its label was drawn from
    ad: dict  # ad field -> per-campaign value


def _storage_dtypes(n_campaigns):
    """The smallest integer type that holds each column's values."""
    dtypes = {schema.LABEL: np.uint8, schema.AID: np.min_scalar_type(n_campaigns - 1)}
    for f in schema.STATIC_FIELDS + schema.SEQUENCE_FIELDS + schema.AD_FIELDS:
        dtypes[f.name] = np.min_scalar_type(f.max_id)
    for f in schema.SEQUENCE_FIELDS:
        dtypes[f.length_column] = np.min_scalar_type(f.width)
    return dtypes


def _campaign_chunks(sizes, chunk_rows):
    """Consecutive (first, stop) campaign ranges of about chunk_rows rows (at least one campaign)."""
    bounds, rows = [0], 0
    for campaign, size in enumerate(sizes):
        if rows and rows + size > chunk_rows:
            bounds.append(campaign)
            rows = 0
        rows += size
    bounds.append(len(sizes))
    return list(zip(bounds[:-1], bounds[1:]))


def _draw_campaigns(spec, world, first, stop, rng):
    """Users, labels, ad fields and the stage split of campaigns first..stop-1."""
    sizes = world["sizes"][first:stop]
    camp = np.repeat(np.arange(len(sizes)), sizes)  # campaign index within the chunk
    n = len(camp)
    theta, cols = _draw_users(n, spec, world, rng)
    logit = (spec.affinity_scale * np.einsum("ij,ij->i", theta, world["target"][first:stop][camp])
             + rng.normal(0.0, spec.label_noise, size=n))
    logit += _calibrated_bias(logit, camp, world["rate"][first:stop])[camp]
    probability = _sigmoid(logit)
    cols[schema.LABEL] = _draw_labels(probability, camp, world["is_test"][first:stop], rng)
    cols[schema.AID] = camp + first
    for name, per_campaign in world["ad"].items():
        cols[name] = per_campaign[first:stop][camp]
    if spec.test_design:
        n2 = np.full(len(sizes), spec.candidates, dtype=np.int64)
    else:
        n2 = np.maximum(2, np.round(sizes * spec.stage2_fraction / (1.0 + spec.stage2_fraction)))
    stage2 = _stage2_mask(camp, cols[schema.LABEL], sizes, n2.astype(np.int64), rng)
    return cols, stage2, probability


def draw(spec, seed, chunk_rows=CHUNK_ROWS, progress=None):
    """Draw a data set, a chunk of campaigns at a time; ``progress(done, total)`` per chunk."""
    rng = np.random.default_rng(seed)
    world = _make_world(spec, rng)
    sizes = world["sizes"]
    n = int(sizes.sum())
    widths = {f.name: f.width for f in schema.SEQUENCE_FIELDS}
    columns = {name: np.empty((n, widths[name]) if name in widths else n, dtype)
               for name, dtype in _storage_dtypes(len(sizes)).items()}
    stage2 = np.empty(n, dtype=bool)
    probability = np.empty(n, dtype=np.float32)
    starts = np.r_[0, np.cumsum(sizes)]
    for first, stop in _campaign_chunks(sizes, chunk_rows):
        rows = slice(starts[first], starts[stop])
        cols, stage2[rows], probability[rows] = _draw_campaigns(spec, world, first, stop, rng)
        for name, values in cols.items():
            columns[name][rows] = values
        if progress:
            progress(starts[stop], n)
    positives = np.bincount(columns[schema.AID], weights=columns[schema.LABEL], minlength=len(sizes))
    row_id = rng.permutation(n).astype(np.int64)
    hot = positives > spec.hot_threshold if world["hot"] is None else world["hot"]
    return Draw(columns=columns, stage2=stage2, row_id=row_id, is_test=world["is_test"],
                hot=hot, ad=world["ad"], probability=probability)


def oracles(d, rows):
    """{test set FRAME_KEYS item: ORACLE_FILE content}: how well the true click probabilities
    rank each test set's candidates, pooled and per campaign (GAUC, as metrics.summarize)."""
    found = {}
    for key in ("test_hot_stage2", "test_cold_stage2"):
        labels, truth = d.columns[schema.LABEL][rows[key]], d.probability[rows[key]]
        aids = d.columns[schema.AID][rows[key]]
        per_campaign = [metrics.auc(labels[aids == a], truth[aids == a]) for a in np.unique(aids)]
        scored = [a for a in per_campaign if not np.isnan(a)]
        found[key] = {"pooled_auc": metrics.auc(labels, truth),
                      "gauc": float(np.mean(scored)) if scored else float("nan"),
                      "campaigns": len(per_campaign), "candidate_rows": int(len(labels))}
    return found


def split_rows(d):
    """{FRAME_KEYS item: positions of its rows, sorted by row id}."""
    camp = d.columns[schema.AID]
    test = d.is_test[camp]
    # A training campaign keeps all its rows: its stage split only matters for test campaigns.
    masks = split_masks(test, d.hot[camp], test & d.stage2)
    return {key: _by_row_id(np.flatnonzero(masks[key]), d.row_id) for key in FRAME_KEYS}


def _by_row_id(positions, row_id):
    return positions[np.argsort(row_id[positions], kind="stable")]


def _take(d, positions):
    """The columns of the rows at `positions`, with their uid: every row is its own user,
    uid = row id + 1 as in the raw files (derived, so adding it changed no drawn row)."""
    columns = {name: d.columns[name][positions] for name in schema.ALL_COLUMNS}
    columns[schema.UID] = d.row_id[positions] + 1
    return columns


def generate(spec, seed):
    """Draw a data set; returns {FRAME_KEYS item: DataFrame}."""
    d = draw(spec, seed)
    return {key: frame_of(_take(d, rows), d.row_id[rows]) for key, rows in split_rows(d).items()}


def write_paddlerec_layout(frames, out_dir):
    """Pickle each frame of ``generate`` to its paddlerec layout path; returns {key: path}."""
    paths = layout_paths(out_dir)
    for key, path in paths.items():
        with replacing(path) as temporary:
            frames[key].to_pickle(temporary, compression=None)
    return paths


RAW_AD_COLUMNS = ["aid", "advertiserId", "campaignId", "creativeId", "creativeSize",
                  "adCategoryId", "productId", "productType"]
USER_LINES_BATCH = 100_000


def write_raw(d, out_dir, progress=None):
    """Write a draw as the four raw competition files in out_dir; returns {RAW_FILES key: path}.

    Campaign c is aid c + 1 and every row is its own user, uid = row id + 1. Each campaign's
    stage-1 rows go to train.csv (with a header) and its stage-2 rows to test1_truth.csv (without),
    labels 1 / -1, in row-id order: tools/preprocess_raw.py splits the campaigns itself, as the
    authors' script does. A user's line leaves out its empty sequence fields, as the real file does.
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = {key: os.path.join(out_dir, name) for key, name in RAW_FILES.items()}
    aids = np.arange(1, len(d.is_test) + 1)
    ads = pd.DataFrame({"aid": aids, "creativeId": aids, **d.ad})
    ads[RAW_AD_COLUMNS].to_csv(paths["ads"], index=False)

    by_row_id = np.empty_like(d.row_id)
    by_row_id[d.row_id] = np.arange(len(d.row_id))
    for key, in_stage2 in (("seeds", False), ("candidates", True)):
        rows = by_row_id[d.stage2[by_row_id] == in_stage2]
        labelled = pd.DataFrame({"aid": d.columns[schema.AID][rows] + 1, "uid": d.row_id[rows] + 1,
                                 "label": np.where(d.columns[schema.LABEL][rows] == 1, 1, -1)})
        labelled.to_csv(paths[key], index=False, header=key == "seeds")

    with open(paths["users"], "w") as file:
        for start in range(0, len(by_row_id), USER_LINES_BATCH):
            rows = by_row_id[start:start + USER_LINES_BATCH]
            file.writelines(_user_lines(d.columns, rows, first_uid=start + 1))
            if progress:
                progress(start + len(rows), len(by_row_id))
    return paths


def _user_lines(columns, rows, first_uid):
    """userFeature.data lines ('uid 7|age 3|interest1 12 40|...') of the given rows, uid counting up."""
    static = [(name, columns[name][rows].tolist()) for name in schema.STATIC_COLUMNS]
    sequences = [(f.name, columns[f.name][rows].tolist(), columns[f.length_column][rows].tolist())
                 for f in schema.SEQUENCE_FIELDS]
    lines = []
    for i in range(len(rows)):
        parts = ["uid %d" % (first_uid + i)]
        parts.extend("%s %d" % (name, values[i]) for name, values in static)
        parts.extend("%s %s" % (name, " ".join(map(str, tokens[i][:lengths[i]])))
                     for name, tokens, lengths in sequences if lengths[i])
        lines.append("|".join(parts) + "\n")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="sample")
    parser.add_argument("--seed", type=int, default=2021)
    parser.add_argument("--out", help="output folder; default: %s, or datasets/raw/<preset> with --raw"
                        % ", ".join("%s for %s" % (out, p) for p, out in DEFAULT_OUT.items()))
    parser.add_argument("--threshold", type=int, metavar="T",
                        help="a test campaign with more than T positive rows (both stages) is hot; "
                             "default: the preset's (%s)"
                             % ", ".join("%s %d" % (p, s.hot_threshold) for p, s in PRESETS.items()))
    parser.add_argument("--layout", choices=sorted(LAYOUTS),
                        help="folder layout; default: %s"
                        % ", ".join("%s for %s" % (lay, p) for p, lay in DEFAULT_LAYOUT.items()))
    parser.add_argument("--raw", action="store_true",
                        help="write the raw competition files (input of tools/preprocess_raw.py) instead")
    args = parser.parse_args(argv)
    if args.raw and (args.threshold is not None or args.layout):
        parser.error("--threshold and --layout apply to the pickles; "
                     "with --raw, give them to tools/preprocess_raw.py")
    spec = PRESETS[args.preset]
    if args.threshold is not None and spec.test_design:
        parser.error("--threshold: the %s preset's hot and cold campaigns are designed, not split by T"
                     % args.preset)
    if args.threshold is not None:
        spec = dataclasses.replace(spec, hot_threshold=args.threshold)
    default_out = "datasets/raw/" + args.preset if args.raw else DEFAULT_OUT[args.preset]
    out = args.out or os.path.join(REPO_ROOT, *default_out.split("/"))

    start = time.time()
    d = draw(spec, args.seed, progress=progress_printer("drawing %s" % args.preset))
    if args.raw:
        paths = write_raw(d, out, progress_printer("writing " + RAW_FILES["users"]))
        for path in paths.values():
            print("%s: %.1f MB" % (path, os.path.getsize(path) / 1e6))
        print("%d rows in %d campaigns, %d stage 2" % (len(d.stage2), len(d.is_test), d.stage2.sum()))
    else:
        paths = layout_paths(out, args.layout or DEFAULT_LAYOUT[args.preset])
        split = split_rows(d)
        for key, rows in split.items():
            write_frame(paths[key], _take(d, rows), d.row_id[rows],
                        progress_printer("writing " + os.path.relpath(paths[key], out)))
            print(summary(paths[key], d.columns[schema.LABEL][rows], d.columns[schema.AID][rows]))
        for key, oracle in oracles(d, split).items():
            path = os.path.join(os.path.dirname(paths[key]), schema.ORACLE_FILE)
            write_json(oracle, path)
            print("%s: the true probabilities' pooled AUC %.4f, GAUC %.4f"
                  % (path, oracle["pooled_auc"], oracle["gauc"]))
        test_hot = d.hot[d.is_test]
        split_by = "as designed" if spec.test_design else "T = %d positive rows" % spec.hot_threshold
        print("test campaigns: %d hot, %d cold (%s)" % (test_hot.sum(), (~test_hot).sum(), split_by))
    print("elapsed %.1fs" % (time.time() - start))


if __name__ == "__main__":
    main()
