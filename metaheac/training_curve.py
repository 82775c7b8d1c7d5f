"""The loss and AUC curve of a training run, kept next to its checkpoints.

At every log line of the trainer a row joins ``<model_save_path>/training_curve.csv``
(rewritten whole, atomically, so it is readable while training runs); at the end
``training_curve.png`` plots it. With ``runner.use_visual: True`` the same values
go to VisualDL (``<model_save_path>/visualdl``) when it is installed.
"""
import logging
import math
import os

import pandas as pd

from metaheac import atomic_files
from metaheac import plots

logger = logging.getLogger(__name__)

CSV_NAME = "training_curve.csv"
PNG_NAME = "training_curve.png"


class TrainingCurve:
    def __init__(self, model_dir, use_visual=False):
        self.csv_path = os.path.join(model_dir, CSV_NAME)
        self.png_path = os.path.join(model_dir, PNG_NAME)
        self.rows = []
        self.visual = _visualdl_writer(os.path.join(model_dir, "visualdl")) if use_visual else None

    def record(self, epoch, step, meta_step, loss, mean_loss, auc):
        """One log line: `loss` of this meta-step, `mean_loss` since the previous line,
        `auc` of the query predictions since the epoch began."""
        self.rows.append({"epoch": epoch, "step": step, "meta_step": meta_step, "loss": loss,
                          "mean_loss": mean_loss, "auc": auc})
        atomic_files.write_csv(pd.DataFrame(self.rows), self.csv_path)
        if self.visual is not None:
            for name, value in (("loss", mean_loss), ("auc", auc)):
                if not math.isnan(value):
                    self.visual.add_scalar("train/" + name, value, meta_step)

    def close(self):
        """Draw the PNG (when anything was recorded) and close VisualDL."""
        if self.rows:
            atomic_files.save_figure(plots.training_curve(pd.DataFrame(self.rows)), self.png_path)
            logger.info("training curve: %s and %s", self.csv_path, self.png_path)
        if self.visual is not None:
            self.visual.close()


def _visualdl_writer(logdir):
    try:
        from visualdl import LogWriter
    except ImportError:
        logger.warning("runner.use_visual is True but VisualDL is not installed; install it with "
                       "`pip install visualdl` to log there. The curve is still written to %s.",
                       CSV_NAME)
        return None
    logger.info("logging to VisualDL in %s; view it with `visualdl --logdir %s`", logdir, logdir)
    return LogWriter(logdir=logdir)
