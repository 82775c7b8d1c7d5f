"""The evaluation report of one checkpoint: files, figures and the printed table.

``write`` puts into one folder, each file written atomically:
- ``metrics.json``: per test set its summary (``metrics.summarize``), skipped and
  one-class campaigns and campaign rows; plus the checkpoint and the effective config;
- ``per_campaign.csv``: one row per campaign and test set;
- ``predictions.csv``: test_set, aid, row_id (the index of the source DataFrame), uid
  (where the data file has one),
  label and score (after fine-tuning) of every candidate: the expanded audience;
- ``auc_vs_seed_size.png``, ``auc_by_test_set.png``, ``auc_before_after.png``.
"""
import os
from dataclasses import dataclass, field

import pandas as pd

from metaheac import atomic_files
from metaheac import metrics
from metaheac import plots
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

    @property
    def summary(self):
        return metrics.summarize(self.campaigns, self.pooled_auc)


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
    """A Markdown table of the summaries, one row per test set and checkpoint."""
    lines = ["| test data | epoch | campaigns (one-class) | pooled AUC | GAUC | GAUC row-weighted "
             "| GAUC before fine-tuning | precision@%d%% | recall@%d%% |"
             % (metrics.TOP_PERCENT, metrics.TOP_PERCENT), "|---" * 9 + "|"]
    for r in results:
        s = r.summary
        lines.append("| %s | %d | %d (%d) | %s |" % (
            r.name, r.epoch, s["campaigns"], len(s["one_class_campaigns"]),
            " | ".join("%.4f" % s[key] for key in (
                "pooled_auc", "gauc", "gauc_row_weighted", "gauc_before",
                "mean_" + metrics.PRECISION, "mean_" + metrics.RECALL))))
    return "\n".join(lines)
