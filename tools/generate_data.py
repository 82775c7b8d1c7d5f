"""Synthetic look-alike data with a planted, learnable structure.

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
  ``hot_threshold`` positives in total, cold otherwise.

Every row is a fresh user; there are no per-row Python loops, so the same code scales
to millions of rows.
"""
import argparse
import dataclasses
import os
import sys
import tempfile
import time

import numpy as np
import pandas as pd

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import schema  # noqa: E402


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


PRESETS = {
    "tiny": Spec(n_train=6, n_test=6, train_median_rows=30, test_median_rows=40, rows_shape=2.0, min_rows=20,
                 stage2_fraction=0.3, hot_threshold=6, positive_rate=0.15),
    "sample": Spec(n_train=24, n_test=16, train_median_rows=90, test_median_rows=160, rows_shape=2.0, min_rows=30,
                   stage2_fraction=0.3, hot_threshold=7, positive_rate=0.05),
}

FRAME_KEYS = ("train", "test_hot_stage1", "test_hot_stage2", "test_cold_stage1", "test_cold_stage2")

# The id reserved for "missing" in each sequence field; real tokens are 0..max_id-1.
PAD_ID = {f.name: f.max_id for f in schema.SEQUENCE_FIELDS}
# Share of users with an empty list, per sequence field (others: uniform 1..width).
EMPTY_RATE = {"interest1": 0.05, "interest2": 0.2, "interest3": 0.7,
              "kw1": 0.1, "kw2": 0.1, "topic1": 0.1, "topic2": 0.2}
MAX_PREFERRED = 12  # preferred tokens per topic and field
STATIC_ALPHA = 0.1  # Dirichlet concentration of a topic's static-value distribution
MIN_LABELS = 2  # each test campaign needs this many positives and negatives (one per stage)


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
    target = cat_target[category] + rng.normal(0.0, spec.campaign_spread, size=(n_camp, k))
    # Mean-one log-normal multiplier, so campaign base rates average to positive_rate.
    spread = rng.lognormal(-spec.rate_sigma ** 2 / 2, spec.rate_sigma, size=n_camp)
    rate = np.clip(spec.positive_rate * spread, 0.002, 0.5)
    is_test = np.zeros(n_camp, dtype=bool)
    is_test[rng.choice(n_camp, size=spec.n_test, replace=False)] = True
    sizes = np.empty(n_camp, dtype=np.int64)
    sizes[~is_test] = _campaign_sizes(spec.n_train, spec.train_median_rows, spec, rng)
    sizes[is_test] = _campaign_sizes(spec.n_test, spec.test_median_rows, spec, rng)

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
                sizes=sizes, is_test=is_test, ad=ad)


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


def _stage2_mask(camp, label, sizes, fraction, rng):
    """Random stage split per campaign; stage 2 gets ~fraction x stage-1 rows.

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
    n2 = np.maximum(2, np.round(sizes * fraction / (1.0 + fraction))).astype(np.int64)
    mask = np.empty(len(camp), dtype=bool)
    mask[order] = rank < n2[camp[order]]
    return mask


def _frame(cols, row_ids, sel):
    """DataFrame of the selected rows in schema order, sorted by row id."""
    sel = sel[np.argsort(row_ids[sel], kind="stable")]
    data = {}
    for name in schema.ALL_COLUMNS:
        values = cols[name][sel]
        if values.ndim == 2:  # sequence field: one 1-D int64 array per cell
            values = np.fromiter(iter(values), dtype=object, count=len(values))
        data[name] = values
    return pd.DataFrame(data, index=pd.Index(row_ids[sel]))


def generate(spec, seed):
    """Draw a data set; returns {FRAME_KEYS item: DataFrame}."""
    rng = np.random.default_rng(seed)
    world = _make_world(spec, rng)
    sizes, is_test = world["sizes"], world["is_test"]
    camp = np.repeat(np.arange(len(sizes)), sizes)
    n = len(camp)

    theta, cols = _draw_users(n, spec, world, rng)
    logit = (spec.affinity_scale * np.einsum("ij,ij->i", theta, world["target"][camp])
             + rng.normal(0.0, spec.label_noise, size=n))
    logit += _calibrated_bias(logit, camp, world["rate"])[camp]
    cols[schema.LABEL] = _draw_labels(_sigmoid(logit), camp, is_test, rng)
    cols[schema.AID] = camp.astype(np.int64)
    for name, per_campaign in world["ad"].items():
        cols[name] = per_campaign.astype(np.int64)[camp]

    stage2 = _stage2_mask(camp, cols[schema.LABEL], sizes, spec.stage2_fraction, rng)
    positives = np.bincount(camp, weights=cols[schema.LABEL], minlength=len(sizes))
    hot = (positives > spec.hot_threshold)[camp]
    row_ids = rng.permutation(n).astype(np.int64)  # rows of all files interleave, like source row numbers
    test = is_test[camp]
    masks = {
        "train": ~test,
        "test_hot_stage1": test & hot & ~stage2,
        "test_hot_stage2": test & hot & stage2,
        "test_cold_stage1": test & ~hot & ~stage2,
        "test_cold_stage2": test & ~hot & stage2,
    }
    return {key: _frame(cols, row_ids, np.flatnonzero(masks[key])) for key in FRAME_KEYS}


def layout_paths(out_dir):
    """Where write_paddlerec_layout puts each frame: hot test campaigns in test/, as upstream."""
    return {
        "train": os.path.join(out_dir, "train", schema.TRAIN_FILE),
        "test_hot_stage1": os.path.join(out_dir, "test", schema.TEST_SEED_FILE),
        "test_hot_stage2": os.path.join(out_dir, "test", schema.TEST_CANDIDATE_FILE),
        "test_cold_stage1": os.path.join(out_dir, "test_cold", schema.TEST_SEED_FILE),
        "test_cold_stage2": os.path.join(out_dir, "test_cold", schema.TEST_CANDIDATE_FILE),
    }


def write_paddlerec_layout(frames, out_dir):
    """Pickle each frame to its layout path atomically; returns {key: path}."""
    paths = layout_paths(out_dir)
    for key, path in paths.items():
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".pkl.tmp", dir=directory)
        os.close(fd)
        try:
            frames[key].to_pickle(tmp, compression=None)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="sample")
    parser.add_argument("--seed", type=int, default=2021)
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "data"))
    args = parser.parse_args(argv)

    start = time.time()
    frames = generate(PRESETS[args.preset], args.seed)
    paths = write_paddlerec_layout(frames, args.out)
    for key, path in paths.items():
        df = frames[key]
        rate = df[schema.LABEL].mean() if len(df) else float("nan")
        print(f"{path}: {len(df)} rows, {df[schema.AID].nunique()} campaigns, positive rate {rate:.4f}")
    print(f"elapsed {time.time() - start:.2f}s")


if __name__ == "__main__":
    main()
