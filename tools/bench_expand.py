"""Measure expand.py on large pools: peak memory (RSS) and pool rows scored per second.

    python tools/bench_expand.py --rows 1000000 5000000 [--work /tmp/bench_expand]

For each size, draws a pool of that many users of one campaign as the full preset of
tools/generate_data.py draws them (same world, same user distribution), written as a
columnar ``.npz`` that expand.py streams; draws positive-only seeds of the same
campaign; saves the full preset's network (config_big.yaml, untrained: speed and memory
do not depend on the weights) as the checkpoint; then runs expand.py as a child
process and reports its peak RSS (``getrusage`` of the child) and pool rows scored per
second (the scoring time of expand.py's summary line; fine-tuning is not counted).
Big files go to ``--work``, never into the repository.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np

import utils  # noqa: F401  (puts the repo root, and so the metaheac package, on the path)

from metaheac import data_files, schema  # noqa: E402
import generate_data  # noqa: E402

SEED_USERS = 2000
DRAW_ROWS = 250_000  # users drawn at once: bounds the generator's float temporaries


def draw_pool(path, rows, seed, users, first_uid=0):
    """A columnar file of `rows` users of campaign 0 of the full preset's world (drawn from
    `seed`); `users` seeds the users' draw, so seeds and pool are different users."""
    spec = generate_data.PRESETS["full"]
    world = generate_data._make_world(spec, np.random.default_rng(seed))
    rng = np.random.default_rng([seed, users])
    folder = tempfile.mkdtemp(dir=os.path.dirname(path))
    widths = {"static": len(schema.STATIC_FIELDS), "sequence": schema.SEQUENCE_TOTAL_WIDTH,
              "lengths": len(schema.SEQUENCE_FIELDS), "ad": len(schema.AD_FIELDS)}
    arrays = {name: np.lib.format.open_memmap(os.path.join(folder, name + ".npy"), "w+",
                                              np.int64, (rows, width))
              for name, width in widths.items()}
    ad = np.array([world["ad"][name][0] for name in schema.AD_COLUMNS])
    for start in range(0, rows, DRAW_ROWS):
        n = min(DRAW_ROWS, rows - start)
        _, cols = generate_data._draw_users(n, spec, world, rng)
        block = slice(start, start + n)
        arrays["static"][block] = np.stack([cols[c] for c in schema.STATIC_COLUMNS], axis=1)
        arrays["sequence"][block] = np.concatenate([cols[c] for c in schema.SEQUENCE_COLUMNS], axis=1)
        arrays["lengths"][block] = np.stack([cols[c] for c in schema.LENGTH_COLUMNS], axis=1)
        arrays["ad"][block] = ad
    for mapped in arrays.values():
        mapped.flush()
    del arrays
    small = {"aid": np.zeros(rows, np.int64), "row_id": np.arange(rows, dtype=np.int64),
             schema.UID: np.arange(first_uid, first_uid + rows, dtype=np.int64),
             "format_version": np.array(data_files.FORMAT_VERSION)}
    for name, values in small.items():
        np.save(os.path.join(folder, name + ".npy"), values)
    # Members stored uncompressed, as np.savez writes them: expand.py maps them in chunks.
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name in list(widths) + list(small):
            archive.write(os.path.join(folder, name + ".npy"), name + ".npy")
            os.remove(os.path.join(folder, name + ".npy"))
    os.rmdir(folder)


def save_checkpoint(directory):
    from utils import cpu  # noqa: F401  (before Paddle)
    from utils.config import load_config
    from utils.save_load import save_model
    from utils.utils_single import load_dy_model_class
    config = load_config(os.path.join(utils.ROOT, "config_big.yaml"))
    model_class = load_dy_model_class(utils.ROOT)
    save_model(model_class.create_model(config), None, directory, 0)


# Runs a command and prints its peak RSS (KB): getrusage of a process's children keeps the
# largest child so far, so each measured run gets a parent of its own.
PEAK_RSS = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")


def run_expand(work, pool, seeds, out):
    command = [sys.executable, "-c", PEAK_RSS, sys.executable,
               os.path.join(utils.ROOT, "expand.py"), "-m",
               os.path.join(utils.ROOT, "config_big.yaml"), "--seeds", seeds, "--pool", pool,
               "--out", out, "--top-fraction", "0.05",
               "-o", "runner.infer_load_path=%s" % os.path.join(work, "model"),
               "runner.use_gpu=False"]
    start = time.time()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.time() - start
    if result.returncode:
        sys.exit("expand.py failed:\n" + result.stderr[-3000:])
    summary = re.search(r"pool (\d+), audience (\d+), .*scoring ([0-9.]+) s", result.stderr)
    peak_kb = int(result.stdout.split()[-1])
    return (int(summary.group(1)), int(summary.group(2)), float(summary.group(3)), wall,
            peak_kb)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "bench_expand"))
    parser.add_argument("--seed", type=int, default=2021)
    args = parser.parse_args(argv)
    if any(r < SEED_USERS for r in args.rows):
        parser.error("--rows: each pool needs at least %d users" % SEED_USERS)
    os.makedirs(args.work, exist_ok=True)
    save_checkpoint(os.path.join(args.work, "model"))
    seeds = os.path.join(args.work, "seeds.npz")
    draw_pool(seeds, SEED_USERS, args.seed, users=1, first_uid=10 ** 9)  # disjoint uids
    print("| pool rows | peak RSS of expand.py | pool rows/s | audience | wall time |")
    print("|---|---|---|---|---|")
    for rows in args.rows:
        pool = os.path.join(args.work, "pool_%d.npz" % rows)
        if not os.path.isfile(pool):
            draw_pool(pool, rows, args.seed, users=0)
        scored, audience, seconds, wall, peak_kb = run_expand(
            args.work, pool, seeds, os.path.join(args.work, "audience.csv"))
        print("| %d | %.2f GB | %.0f | %d | %.0f s |"
              % (scored, peak_kb / 1e6, scored / seconds, audience, wall), flush=True)


if __name__ == "__main__":
    main()
