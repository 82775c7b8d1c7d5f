"""The evaluation report of one checkpoint: files, figures and the printed table.

``write`` puts into one folder, each file written atomically:
- ``metrics.json``: per test set its summary (``metrics.summarize``; with the oracle's pooled
  AUC and GAUC and the share of their lift reached when the folder has ``schema.ORACLE_FILE``), skipped and
  one-class campaigns and campaign rows; plus the checkpoint and the effective config;
- ``per_campaign.csv``: one row per campaign and test set;
- ``predictions.csv``: test_set, aid, row_id (the index of the source DataFrame), uid
  (where the data file has one),
  label and score (after fine-tuning) of every candidate: the expanded audience;
- ``auc_vs_seed_size.png``, ``auc_by_test_set.png``, ``auc_before_after.png``.
"""
import json
import os
from dataclasses import dataclass, field

import pandas as pd

from metaheac import atomic_files
from metaheac import metrics
from metaheac import plots
from metaheac import schema
from metaheac import settings

FIGURES = {"auc_vs_seed_size.png": plots.auc_vs_seed_size,
           "auc_by_test_set.png": plots.auc_by_test_set,
           "auc_before_after.png": plots.auc_before_after}


@dataclass
class TestSetResult:
    """One test folder evaluated with one checkpoint."""
    name: str                 # the folder as configured, e.g. data/test_cold
    epoch: int
    campaigns: list           # one dict per campaign, in aid order
    predictions: pd.DataFrame
    pooled_auc: float
    skipped: dict = field(default_factory=dict)  # reason -> aids the reader left out
    oracle: dict = None       # the folder's ORACLE_FILE, when the generator wrote one

    @property
    def summary(self):
        summary = metrics.summarize(self.campaigns, self.pooled_auc)
        if self.oracle:
            for key in ("pooled_auc", "gauc"):
                summary["oracle_" + key] = self.oracle[key]
                summary["oracle_lift_reached_" + key] = metrics.lift_reached(summary[key],
                                                                             self.oracle[key])
        return summary


def read_oracle(folder):
    """The ORACLE_FILE of a test folder (the true probabilities' pooled AUC and GAUC), or None."""
    path = os.path.join(folder, schema.ORACLE_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write(directory, config, checkpoint, results):
    """Write the report of `results` (TestSetResults of one checkpoint) to `directory`."""
    effective = {key: settings.get(config, key) for key in settings.DEFAULTS}
    atomic_files.write_json({
        "checkpoint": os.path.abspath(checkpoint),
        "epoch": results[0].epoch,
        "top_percent": metrics.TOP_PERCENT,
        "test_sets": [{"name": r.name, "summary": r.summary, "skipped_campaigns": r.skipped,
                       "campaigns": r.campaigns} for r in results],
        "config": dict(effective, config_abs_dir=config.get("config_abs_dir")),
    }, os.path.join(directory, "metrics.json"))
    campaigns = campaign_table(results)
    atomic_files.write_csv(campaigns, os.path.join(directory, "per_campaign.csv"))
    atomic_files.write_csv(pd.concat([r.predictions for r in results], ignore_index=True),
                           os.path.join(directory, "predictions.csv"))
    for name, draw in FIGURES.items():
        atomic_files.save_figure(draw(campaigns), os.path.join(directory, name))


def campaign_table(results):
    return pd.DataFrame([dict(test_set=r.name, **c) for r in results for c in r.campaigns])


def table(results):
    """A Markdown table of the summaries, one row per test set and checkpoint; with the
    oracle's pooled AUC and GAUC and the share of their lift over 0.5 reached, when the
    test folders have an ORACLE_FILE."""
    keys = ["pooled_auc", "gauc", "gauc_row_weighted", "gauc_before",
            "mean_" + metrics.PRECISION, "mean_" + metrics.RECALL]
    header = ("| test data | epoch | campaigns (one-class) | pooled AUC | GAUC | GAUC row-weighted "
              "| GAUC before fine-tuning | precision@%d%% | recall@%d%% |"
              % (metrics.TOP_PERCENT, metrics.TOP_PERCENT))
    if any(r.oracle for r in results):
        keys += ["oracle_pooled_auc", "oracle_gauc", "oracle_lift_reached_pooled_auc",
                 "oracle_lift_reached_gauc"]
        header += " oracle pooled AUC | oracle GAUC | oracle lift reached (pooled) | (GAUC) |"
    lines = [header, "|---" * (len(keys) + 3) + "|"]
    for r in results:
        s = r.summary
        lines.append("| %s | %d | %d (%d) | %s |" % (
            r.name, r.epoch, s["campaigns"], len(s["one_class_campaigns"]),
            " | ".join("%.4f" % s.get(key, float("nan")) for key in keys)))
    return "\n".join(lines)
