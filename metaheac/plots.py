"""The figures of a training run and of an evaluation, as matplotlib Figures.

Built on ``matplotlib.figure.Figure`` rather than pyplot, so no GUI backend or
global figure state is involved; ``atomic_files.save_figure`` writes them.
"""
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

CHANCE = 0.5


def training_curve(curve):
    """Loss and AUC against the meta-step; `curve` is the training-curve DataFrame."""
    figure = Figure(figsize=(8, 6))
    loss_axes, auc_axes = figure.subplots(2, 1, sharex=True)
    loss_axes.plot(curve["meta_step"], curve["mean_loss"], marker=".")
    loss_axes.set_ylabel("mean query loss (BCE)\nsince the previous point")
    loss_axes.set_title("Meta-training")
    auc_axes.plot(curve["meta_step"], curve["auc"], marker=".", color="tab:green")
    auc_axes.axhline(CHANCE, color="grey", linestyle=":", label="chance")
    auc_axes.set_ylabel("AUC of query predictions\nsince the epoch began")
    auc_axes.set_xlabel("meta-step")
    auc_axes.legend(loc="lower right")
    for axes in (loss_axes, auc_axes):
        axes.grid(alpha=0.3)
        for start in curve.groupby("epoch")["meta_step"].min().iloc[1:]:
            axes.axvline(start, color="grey", linewidth=0.8)  # an epoch begins
    return figure


def auc_vs_seed_size(campaigns):
    """Each campaign's AUC after fine-tuning against the rows of its seed set."""
    figure, axes = _figure()
    for test_set, part in _two_class(campaigns).groupby("test_set", sort=False):
        axes.scatter(part["seed_rows"], part["auc"], label=test_set, alpha=0.8)
    axes.set_xscale("log")
    axes.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))  # 10, 20, 50, 100, ... in plain digits
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel("seed-set size (rows, log scale)")
    axes.set_ylabel("AUC after fine-tuning")
    axes.set_title("Per-campaign AUC against seed-set size" + _left_out(campaigns))
    _finish(axes)
    return figure


def auc_by_test_set(campaigns):
    """The spread of the campaigns' AUCs in each test set (e.g. hot against cold)."""
    figure, axes = _figure()
    groups = list(_two_class(campaigns).groupby("test_set", sort=False))
    positions = np.arange(1, len(groups) + 1)
    if groups:  # matplotlib cannot draw zero boxes
        axes.boxplot([part["auc"] for _, part in groups], positions=positions, widths=0.5,
                     showfliers=False, medianprops={"color": "grey"})
    jitter = np.random.default_rng(0)  # fixed, so the same report draws the same figure
    for position, (_, part) in zip(positions, groups):
        axes.scatter(position + jitter.uniform(-0.12, 0.12, len(part)), part["auc"], alpha=0.7)
        axes.plot([position - 0.3, position + 0.3], [part["auc"].mean()] * 2, color="black",
                  linewidth=2, label="GAUC (mean)" if position == 1 else None)
    axes.set_xticks(positions, ["%s\n(%d campaigns)" % (name, len(part)) for name, part in groups])
    axes.set_xlabel("test set")
    axes.set_ylabel("per-campaign AUC after fine-tuning")
    axes.set_title("Per-campaign AUC by test set" + _left_out(campaigns))
    _finish(axes)
    return figure


def auc_before_after(campaigns):
    """Each campaign's AUC with the meta-trained weights against after fine-tuning."""
    figure, axes = _figure()
    scored = _two_class(campaigns)
    for test_set, part in scored.groupby("test_set", sort=False):
        axes.scatter(part["auc_before"], part["auc"], label=test_set, alpha=0.8)
    low = min(scored[["auc_before", "auc"]].min().min(), CHANCE) - 0.02 if len(scored) else 0.0
    axes.plot([low, 1], [low, 1], color="grey", linestyle="--", label="no change")
    axes.set_xlim(low, 1.01)
    axes.set_ylim(low, 1.01)
    axes.set_aspect("equal")
    axes.set_xlabel("AUC before fine-tuning (meta-trained weights)")
    axes.set_ylabel("AUC after fine-tuning on the seed set")
    axes.set_title("What adaptation bought, per campaign" + _left_out(campaigns))
    _finish(axes)
    return figure


def testbed_seeds(pooled_aucs, oracles, seeds):
    """Pooled AUC per generator seed of each (variant, mode), hot and cold side by side,
    with the oracle's. `pooled_aucs`: {(variant, mode, test set): [AUC of each seed]};
    `oracles`: {test set: [oracle pooled AUC of each seed]}."""
    test_sets = list(oracles)
    figure = Figure(figsize=(5 * len(test_sets), 4.5))
    for axes, test_set in zip(np.atleast_1d(figure.subplots(1, len(test_sets), sharey=True)),
                              test_sets):
        for (variant, mode, name), values in pooled_aucs.items():
            if name == test_set:
                axes.plot(seeds, values, marker="o", label="%s, %s" % (variant, mode))
        axes.plot(seeds, oracles[test_set], color="black", linestyle="--", marker="_",
                  label="oracle (true probabilities)")
        axes.set_xticks(seeds)
        axes.set_xlabel("generator seed")
        axes.set_title("%s campaigns" % test_set)
        _chance_and_grid(axes)
    figure.axes[0].set_ylabel("pooled AUC after fine-tuning")
    figure.suptitle("Testbed: each seed's data, model and fine-tuning")
    # One legend under both panels, clear of the lines.
    figure.legend(*figure.axes[0].get_legend_handles_labels(), loc="lower center",
                  ncol=2, fontsize="small", bbox_to_anchor=(0.5, -0.12))
    return figure


def _figure():
    figure = Figure(figsize=(7, 5.5))
    return figure, figure.subplots()


def _two_class(campaigns):
    return campaigns[campaigns["auc"].notna()]


def _left_out(campaigns):
    unscored = int(campaigns["auc"].isna().sum())
    return "\n(%d campaign(s) of one class or failed not shown)" % unscored if unscored else ""


def _chance_and_grid(axes):
    axes.axhline(CHANCE, color="grey", linestyle=":", label="chance")
    axes.grid(alpha=0.3)


def _finish(axes):
    _chance_and_grid(axes)
    axes.legend(loc="lower right", fontsize="small")
