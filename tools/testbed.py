"""The testbed measurements: generate seeds, meta-train, fine-tune fixed and auto, print a table.

    python tools/testbed.py --root datasets/testbed --seeds 1 2 3

For each generator seed S: ``tools/generate_data.py --preset testbed --seed S`` into
``ROOT/seedS`` (unless there), each meta-training variant of ``VARIANTS`` with the
config's hyper-parameters (``ROOT/seedS/model_<variant>``, unless trained), then
``infer.py`` on the hot and cold test campaigns with each fine-tuning mode of ``MODES``
(``ROOT/seedS/infer_<variant>_<mode>``, unless there). Prints a Markdown table of pooled
AUC and GAUC, mean ± sd over the seeds, the oracle of each test set, and the per-seed
difference auto - fixed; ``ROOT/testbed.png`` plots each seed's pooled AUC. Steps
already done are skipped, so an interrupted run resumes.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

import utils  # noqa: F401  (puts the repo root, and so the metaheac package, on the path)

from metaheac import atomic_files, plots, schema  # noqa: E402

ROOT = utils.ROOT
# Meta-training variants: -o overrides on top of the config.
VARIANTS = {
    "order0": ["hyper_parameters.meta_order=0"],
    "order1": ["hyper_parameters.meta_order=1"],
    "order1_lr0.05_3steps": ["hyper_parameters.meta_order=1", "hyper_parameters.local_lr=0.05",
                             "hyper_parameters.inner_steps=3"],
    # The same inner loop moving only the gates and the critics.
    "order1_gates_critics_lr0.05_3steps": ["hyper_parameters.meta_order=1",
                                           "hyper_parameters.local_lr=0.05",
                                           "hyper_parameters.inner_steps=3",
                                           "hyper_parameters.inner_params=gates_critics"],
}
MODES = {"fixed": ["runner.infer_finetune=fixed"], "auto": ["runner.infer_finetune=auto"],
         "auto_refit": ["runner.infer_finetune=auto", "runner.infer_auto_refit=true"],
         # Fine-tuning in batches of 128 rather than batch_size: more, smaller steps.
         "fixed_batch128": ["runner.infer_finetune=fixed", "runner.infer_batch_size=128"],
         "auto_batch128": ["runner.infer_finetune=auto", "runner.infer_batch_size=128"]}
# Each auto mode against the fixed schedule of the same batch size, seed by seed.
PAIRED = {"auto": "fixed", "auto_refit": "fixed", "auto_batch128": "fixed_batch128"}
TEST_SETS = {"hot": "test", "cold": "test_cold"}  # the generator's paddlerec layout


def run(command, log):
    print("running: %s  (log: %s)" % (" ".join(command), log), flush=True)
    with open(log, "w") as out:
        if subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT):
            sys.exit("failed: %s (see %s)" % (" ".join(command), log))


def measure(args):
    """{(variant, mode, test set): [summary of each seed]} and {test set: [oracle of each seed]}."""
    python = sys.executable
    found, oracles = {}, {}
    for seed in args.seeds:
        data = os.path.join(args.root, "seed%d" % seed)
        if not os.path.isdir(os.path.join(data, TEST_SETS["cold"])):
            run([python, "tools/generate_data.py", "--preset", args.preset, "--seed", str(seed),
                 "--out", data], data + ".generate.log")
        tests = "runner.test_data_dirs=[%s]" % ",".join(os.path.join(data, d) for d in TEST_SETS.values())
        for variant in args.variants:
            model = os.path.join(data, "model_" + variant)
            if not os.path.exists(os.path.join(model, "0", "rec.pdparams")):
                run([python, "tools/trainer.py", "-m", args.config, "-o",
                     "runner.train_data_dir=" + os.path.join(data, "train"),
                     "runner.model_save_path=" + model, "runner.use_gpu=False",
                     *VARIANTS[variant], *args.opt], model + ".train.log")
            for mode in args.modes:
                out = os.path.join(data, "infer_%s_%s" % (variant, mode))
                report = os.path.join(out, "0", "metrics.json")
                if not os.path.exists(report):
                    run([python, "infer.py", "-m", args.config, "-o", "runner.use_gpu=False",
                         "runner.infer_load_path=" + model, "runner.infer_output_dir=" + out,
                         tests, *MODES[mode], *args.opt], out + ".log")
                with open(report) as f:
                    test_sets = json.load(f)["test_sets"]
                for name, test_set in zip(TEST_SETS, test_sets):
                    found.setdefault((variant, mode, name), []).append(test_set["summary"])
        for name, folder in TEST_SETS.items():
            with open(os.path.join(data, folder, schema.ORACLE_FILE)) as f:
                oracles.setdefault(name, []).append(json.load(f))
    return found, oracles


def _mean_sd(values):
    values = np.asarray(values, dtype=float)
    sd = values.std(ddof=1) if len(values) > 1 else float("nan")
    return "%.4f ± %.4f" % (values.mean(), sd)


def table(found, oracles, seeds):
    """The Markdown table: one row per variant and mode, then the oracle; then the paired
    per-seed differences of each auto mode and its fixed schedule (PAIRED)."""
    lines = ["| meta-training | fine-tuning | hot pooled AUC | hot GAUC | cold pooled AUC | cold GAUC |",
             "|---|---|---|---|---|---|"]
    rows = sorted({(v, m) for v, m, _ in found}, key=lambda vm: (list(VARIANTS).index(vm[0]),
                                                                  list(MODES).index(vm[1])))
    for variant, mode in rows:
        cells = [_mean_sd([s[key] for s in found[variant, mode, name]])
                 for name in TEST_SETS for key in ("pooled_auc", "gauc")]
        lines.append("| %s | %s | %s |" % (variant, mode, " | ".join(cells)))
    oracle = [_mean_sd([o[key] for o in oracles[name]]) for name in TEST_SETS
              for key in ("pooled_auc", "gauc")]
    lines.append("| oracle (true probabilities) | | %s |" % " | ".join(oracle))
    lines += ["", "Per-seed pooled AUC, auto - fixed (seeds %s):" % ", ".join(map(str, seeds)), ""]
    for variant in sorted({v for v, _ in rows}, key=list(VARIANTS).index):
        for mode, fixed in PAIRED.items():
            if (variant, mode, "hot") in found and (variant, fixed, "hot") in found:
                diffs = ["%s %s" % (name, " / ".join(
                    "%+.4f" % (a["pooled_auc"] - b["pooled_auc"])
                    for a, b in zip(found[variant, mode, name], found[variant, fixed, name])))
                    for name in TEST_SETS]
                lines.append("- %s, %s - %s: %s" % (variant, mode, fixed, "; ".join(diffs)))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="folder for the seeds' data, models and reports")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--preset", default="testbed", help="generator preset (default: testbed)")
    parser.add_argument("--config", default="config_big.yaml")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=["fixed", "auto"])
    parser.add_argument("-o", "--opt", nargs="*", default=[],
                        help="more overrides for training and inference, key=value")
    args = parser.parse_args(argv)
    args.root = os.path.abspath(args.root)
    found, oracles = measure(args)
    text = table(found, oracles, args.seeds)
    print(text)
    figure = os.path.join(args.root, "testbed.png")
    atomic_files.save_figure(plots.testbed_seeds(
        {key: [s["pooled_auc"] for s in summaries] for key, summaries in found.items()},
        {name: [o["pooled_auc"] for o in values] for name, values in oracles.items()},
        args.seeds), figure)
    print("figure: " + figure)
    return text


if __name__ == "__main__":
    main()
