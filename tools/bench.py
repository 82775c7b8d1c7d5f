"""Speed and memory of MetaHeac meta-training and per-campaign inference, in one run.

    python tools/bench.py [--threads 2] [--openmp]    # the full measurement
    python tools/bench.py --quick                     # fewer steps and seed rows
    python tools/bench.py --quick --profile           # + the top operators of a meta-step
    python tools/bench.py --data datasets/Lookalike   # + the real data
    python tools/bench.py --tiny --json out.json      # a smoke test; the figures also as JSON

Measures, on synthetic inputs of the real schema and the default network of
``metaheac/settings.py`` (random ids):

* the rate of one large matrix product (``paddle.matmul`` of two squares);
* per meta-step (forward with the inner steps, backward, outer Adam step over
  every parameter), at each ``--batches`` size: the median seconds of upstream's
  full-table formulation (``metaheac.reference.full_table_meta_loss``) and of ours
  (``maml.meta_step`` on a batch as the train reader yields it), their ratio, our
  forward / backward / optimizer split, the GFLOP/s achieved (matrix products
  counted analytically, ``meta_step_flops``), and the reader's id planning per
  meta-batch (``maml.plan_tasks``, on the host, outside the step);
* the epoch time of the full preset extrapolated from the step time;
* per campaign of inference (fine-tune ``--infer-epochs`` epochs on ``--seed-rows``
  rows, then score a quarter as many candidates): ``infer.adapt_and_score`` against
  reloading the checkpoint from disk and fine-tuning the full model with Adam
  (``metaheac.reference.full_model_fine_tune``);
* peak resident memory (``ru_maxrss``) after each part.

With ``--data DIR`` (``train_data/`` and ``test_hot_data/`` as written by
``tools/generate_data.py --preset full``) it also measures, each in a fresh process
so that its peak memory is its own: the first load of ``reader_train.RecDataset``
over the train files (linked into an empty temporary folder, so no ``.columns_cache``
exists and the one beside the data is left alone), the cached load, ``--data-steps``
meta-steps through the real reader as ``tools/trainer.py`` runs them, and the
inference of the hot test campaign with the fewest seed rows both ways. Those
processes run one measurement each, a command that can also be run by hand:

    python tools/bench.py child load DIR              # RecDataset over DIR's files
    python tools/bench.py child train DIR --steps 20  # + meta-steps through the reader
    python tools/bench.py child infer DIR             # the campaign with the fewest seeds

and print its figures as one JSON line.

The CPU is set up as tools/trainer.py sets it up (tools/utils/cpu.py): MKL's matrix
products on ``--threads`` threads (default: every core), Paddle's other kernels on
one, glibc's allocator tuned. ``--openmp`` gives OpenMP itself the threads instead
(OMP_NUM_THREADS, Paddle's own knob), to compare. Timings are wall-clock medians;
the load average is reported with them, since other processes on the machine slow
every figure. Nothing here asserts a time.
"""
import argparse
import dataclasses
import json
import math
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import List, Optional

# Paddle reads the thread settings once, when it is imported: so Paddle, and the
# modules that import it, are imported inside the functions below, after setup_cpu.
import utils  # puts the repo root on the path

FULL_PRESET_TRAIN_ROWS = 4_400_000  # tools/generate_data.py --preset full: ~4.4 M train rows
MODES = {  # batches, steps, warm-up, seed rows, data steps
    "full": ("32,1024", 7, 2, 30_000, 20),
    "quick": ("32,1024", 3, 1, 4_096, 5),
    "tiny": ("8,16", 1, 1, 64, 2)}
TINY_MAX_ID = 50  # tiny mode's vocabularies, so that its tables are small


# --- what the bench returns -------------------------------------------------------


@dataclass
class StepTimes:
    """Median seconds of one meta-step and of its parts."""
    forward: float
    backward: float
    optimizer: float
    total: float


@dataclass
class MetaStepRow:
    batch: int
    ours: StepTimes
    full_table: Optional[StepTimes]  # None with --skip-reference
    gflop: float  # of the matrix products of one meta-step
    gflops: float  # ours
    speedup: Optional[float]  # full-table seconds / ours
    planning: float  # median seconds of the reader's id work (maml.plan_tasks) per meta-batch
    # The speed-up over the full-table formulation if ours took only its matrix products at
    # the measured matmul rate plus its optimizer step: what the exact maths allows.
    ceiling: Optional[float]
    # Seconds per meta-step of its matrix products and of its embedding lookups, each
    # timed forward and backward on its own (``time_products``, ``time_lookups``), and the
    # speed-up if ours took only those plus its optimizer step: the floor of Paddle's own
    # kernels for what the exact maths must compute.
    products: float
    lookups: float
    kernel_ceiling: Optional[float]
    # Median seconds per meta-step of ours with Paddle's lookups, pooling and gradient adds in
    # place of the fused lookup kernel (None where that is not built).
    unfused: Optional[float] = None


@dataclass
class TaskBatching:
    """The tasks of a meta-step in a Python loop against batched, at one batch size."""
    batch: int
    order0_loop: float  # median s/step, meta_order 0 with the task loop
    order0_batched: float  # the tasks' queries as one batch (what meta_step runs)
    product_batched_ms: float  # the experts' first-layer product with a leading task axis
    product_loop_ms: float  # the same products one task at a time (what orders 1 and 2 run)


@dataclass
class EpochEstimate:
    what: str
    rows: int
    batch: int
    steps: int
    step_seconds: float  # ours, reading included where measured
    minutes: float
    full_table_minutes: Optional[float] = None


@dataclass
class MetaSteps:
    steps: int
    warmup: int
    rows: List[MetaStepRow]
    rss_ours_mib: float  # after ours at every batch size, before the reference
    rss_mib: float
    full_preset_epoch: EpochEstimate
    task_batching: List[TaskBatching]


@dataclass
class OperatorRow:
    operator: str
    calls_per_step: float
    ms_per_step: float


@dataclass
class Campaign:
    """Seconds of one campaign's inference, ours and the full-model way, per repeat."""
    seeds: int
    candidates: int
    ours: List[float]
    full_model: List[float]  # empty with --skip-reference
    ours_median: float
    full_model_median: Optional[float]
    speedup: Optional[float]
    rss_ours_mib: float
    rss_mib: float
    aid: Optional[int] = None  # a real campaign's
    campaigns: Optional[int] = None  # in its test folder
    load_seconds: Optional[float] = None  # of that folder


@dataclass
class Inference:
    epochs: int
    batch_size: int
    campaign: Campaign


@dataclass
class Load:
    """One RecDataset load of the train files, in a fresh process."""
    seconds: float
    rows: int
    campaigns: int
    maxrss_mib: float


@dataclass
class ReaderSteps:
    """Meta-steps through the real reader, as tools/trainer.py runs them."""
    load: float
    rows: int
    steps: int
    batch: int
    step: float  # median seconds, reading included
    reader: float
    compute: float
    maxrss_mib: float


@dataclass
class RealData:
    folder: str
    files: List[str]
    first_load: Load
    cached_load: Load
    train: ReaderSteps
    measured_epoch: EpochEstimate
    synthetic_epoch: EpochEstimate
    hot_campaign: Optional[Campaign]  # None without test_hot_data/


@dataclass
class Report:
    mode: str
    paddle: str
    threads: int
    openmp: bool
    cores: int
    network: dict
    parameters: int
    load_start: str
    matmul_size: int
    matmul_gflops: float
    meta_steps: MetaSteps
    inference: Inference
    profile_batch: Optional[int] = None
    profile: List[OperatorRow] = field(default_factory=list)
    data: Optional[RealData] = None
    skipped_data: Optional[str] = None  # why the --data part did not run
    load_end: str = ""
    rss_mib: float = 0.0


# --- command line -----------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="python tools/bench.py child {load,train,infer} DIR: one measurement of --data "
               "in this process (see the module docstring)")
    p.add_argument("--quick", action="store_true", help="fewer steps and seed rows")
    p.add_argument("--tiny", action="store_true",
                   help="tiny batches and vocabularies, one step each: a smoke test")
    p.add_argument("--data",
                   help="folder with train_data/ (the full preset): also time the real reader")
    p.add_argument("--batches", default=None,
                   help="meta-step batch sizes, comma-separated (32,1024)")
    p.add_argument("--steps", type=int, default=None, help="timed meta-steps per batch size")
    p.add_argument("--warmup", type=int, default=None, help="untimed meta-steps first")
    p.add_argument("--seed-rows", type=int, default=None,
                   help="seed rows of the inference campaign (candidates: a quarter of them)")
    p.add_argument("--infer-epochs", type=int, default=2, help="fine-tuning epochs per campaign")
    p.add_argument("--data-steps", type=int, default=None,
                   help="meta-steps through the real reader (with --data)")
    _cpu_options(p)
    p.add_argument("--profile", action="store_true",
                   help="also measure the operators that take the most time in our meta-step at "
                        "the largest batch size (Paddle's profiler)")
    p.add_argument("--skip-reference", action="store_true",
                   help="time only ours (the full-table reference is the slow part)")
    p.add_argument("--json", help="also write the measured figures to this JSON file")
    args = p.parse_args(argv)
    args.mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    for name, value in zip(("batches", "steps", "warmup", "seed_rows", "data_steps"),
                           MODES[args.mode]):
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.batches = [int(b) for b in str(args.batches).split(",") if b]
    return args


def parse_child_args(argv):
    p = argparse.ArgumentParser(prog="bench.py child",
                                description="One measurement of bench.py --data, printed as "
                                            "one JSON line")
    p.add_argument("what", choices=("load", "train", "infer"))
    p.add_argument("folder", help="the data files (train files for load and train, a hot "
                                  "test folder for infer)")
    p.add_argument("--steps", type=int, default=MODES["full"][4],
                   help="meta-steps through the reader (train)")
    p.add_argument("--tiny", action="store_true", help="batches of 16 rather than 1024")
    _cpu_options(p)
    return p.parse_args(argv)


def _cpu_options(parser):
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads of MKL's matrix products (MKL_NUM_THREADS)")
    parser.add_argument("--openmp", action="store_true",
                        help="give the threads to OpenMP (OMP_NUM_THREADS) rather than to MKL "
                             "alone")


def setup_cpu(threads, openmp):
    """The CPU set up as tools/trainer.py sets it up, with `threads` for the products."""
    os.environ["MKL_NUM_THREADS"] = str(threads)
    if openmp:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    from utils import cpu  # noqa: F401  (applies the rest before Paddle is imported)


class BenchError(Exception):
    """Bad input (a missing folder, an unreadable data file); the message says which."""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["child"]:
            args = parse_child_args(argv[1:])
            setup_cpu(args.threads, args.openmp)
            print(json.dumps(dataclasses.asdict(run_child(args))))
            return
        args = parse_args(argv)
        setup_cpu(args.threads, args.openmp)
        report = run(args)
        print(render(report), flush=True)
        if args.json:
            from metaheac.atomic_files import write_json
            write_json(dataclasses.asdict(report), args.json)
    except BenchError as error:
        print("error: %s" % error, file=sys.stderr)
        sys.exit(2)


# --- the network and its inputs ----------------------------------------------------


def network_config(tiny=False, **overrides):
    """A config of the default network (metaheac/settings.py); tiny: small vocabularies."""
    from metaheac import settings
    max_idxs = settings.DEFAULTS["hyper_parameters.max_idxs"]
    if tiny:
        max_idxs = [[min(m, TINY_MAX_ID) for m in group] for group in max_idxs]
    return dict({"hyper_parameters.max_idxs": max_idxs}, **overrides)


def setting(config, key):
    from metaheac import settings
    return settings.get(config, key)


def network_sizes(config):
    return {k: setting(config, "hyper_parameters." + k)
            for k in ("embed_dim", "mlp_dims", "num_expert", "num_output", "task_count")}


def make_net(config, seed=0):
    import paddle
    from dygraph_model import DygraphModel
    paddle.seed(seed)
    return DygraphModel().create_model(config)


def make_optimizer(net, config):
    """The optimizer tools/trainer.py meta-trains with."""
    from dygraph_model import DygraphModel
    return DygraphModel().create_optimizer(net, config)


def task_batch(rng, config, batch):
    """Random support and query inputs (NumPy) and labels (tensors) of `task_count` tasks."""
    import paddle
    from metaheac.reference import random_inputs
    shape = (setting(config, "hyper_parameters.task_count"), batch)
    max_idxs = setting(config, "hyper_parameters.max_idxs")
    sx, qx = (random_inputs(rng, shape, max_idxs) for _ in range(2))
    sy, qy = (paddle.to_tensor(random_labels(rng, shape)) for _ in range(2))
    return sx, sy, qx, qy


def planned_batch(config, batch):
    """`batch` as the train reader yields it, ids planned per task; and the planning time."""
    import paddle
    import maml
    import net
    sx, sy, qx, qy = batch
    start = time.perf_counter()
    sx, qx, task_rows = maml.plan_tasks(
        sx, qx, net.table_sizes(setting(config, "hyper_parameters.max_idxs")))
    seconds = time.perf_counter() - start
    to_tensors = lambda arrays: [paddle.to_tensor(a) for a in arrays]  # noqa: E731
    return (to_tensors(sx), sy, to_tensors(qx), qy, [to_tensors(r) for r in task_rows]), seconds


def tensor_batch(batch):
    """`batch` with the tables' own ids, as tensors (the full-table formulation's input)."""
    import paddle
    sx, sy, qx, qy = batch
    return [paddle.to_tensor(x) for x in sx], sy, [paddle.to_tensor(x) for x in qx], qy


def random_labels(rng, shape, positive_rate=0.3):
    return (rng.random(shape) < positive_rate).astype("float32")


def meta_step_flops(embed_dim, mlp_dims, num_expert, num_output, task_count, batch):
    """FLOPs of the matrix products of one meta-step, 2 per multiply-add.

    Per row, forward: the experts (14E -> mlp_dims, each of K experts), the two
    gates (7E -> H -> K and 7E -> H -> C), the gate's mixture of the K experts'
    outputs (K -> H) and the critics (H -> C). A backward
    pass costs twice its forward (the input and the weight gradient of each
    product). A task runs support forward + backward, query forward + backward:
    6 forwards' worth. Embedding lookups, pooling, the mean over the fields
    (0.2 % of the rest) and elementwise ops are not counted.
    """
    user_fields, gate_fields = _field_counts()
    hidden = mlp_dims[-1]
    per_row = 0
    fan_in = user_fields * embed_dim
    for width in mlp_dims:
        per_row += num_expert * fan_in * width
        fan_in = width
    gate_in = gate_fields * embed_dim
    per_row += gate_in * hidden + hidden * num_expert      # expert gate
    per_row += gate_in * hidden + hidden * num_output      # critic gate
    per_row += num_expert * hidden                         # the experts mixed by the gate
    per_row += hidden * num_output                         # critics
    return 2 * per_row * 6 * task_count * batch


# --- measurements -------------------------------------------------------------------


def run(args):
    """Every measurement the arguments ask for, as a Report."""
    if args.data:
        train_folder(args.data)  # a wrong folder stops the run before any measurement
    import paddle
    paddle.set_device("cpu")
    config = network_config(args.tiny)
    load_start = _load()
    size, rate = measure_matmul(256 if args.tiny else 2048, 3 if args.tiny else 6)
    meta_steps = measure_meta_steps(config, args.batches, args.steps, args.warmup, rate,
                                    reference=not args.skip_reference)
    report = Report(
        mode=args.mode, paddle=paddle.__version__, threads=args.threads, openmp=args.openmp,
        cores=os.cpu_count(), network=network_sizes(config),
        parameters=sum(int(p.size) for p in make_net(config).parameters()),
        load_start=load_start, matmul_size=size, matmul_gflops=rate, meta_steps=meta_steps,
        inference=measure_inference(config, args.seed_rows, args.infer_epochs,
                                    16 if args.tiny else 1024, repeats=1 if args.tiny else 3,
                                    reference=not args.skip_reference))
    if args.profile:
        report.profile_batch = max(args.batches)
        report.profile = measure_profile(config, report.profile_batch)
    if args.data:
        report.data, report.skipped_data = measure_real_data(args, meta_steps)
    report.load_end, report.rss_mib = _load(), _maxrss_mib()
    return report


def measure_matmul(n, repeats):
    """The best GFLOP/s of ``paddle.matmul`` of two n x n float32 matrices."""
    import paddle
    x = paddle.randn([n, n])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        float(paddle.matmul(x, x)[0, 0])
        best = min(best, time.perf_counter() - start)
    return n, 2 * n ** 3 / best / 1e9


def time_steps(step, batches, optimizer, warmup):
    """Median StepTimes of `step` (a meta-loss) + backward + `optimizer` over `batches`."""
    times = []
    for i, b in enumerate(batches):
        t0 = time.perf_counter()
        loss = step(*b)
        float(loss)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        optimizer.clear_grad()
        t3 = time.perf_counter()
        if i >= warmup:
            times.append((t1 - t0, t2 - t1, t3 - t2, t3 - t0))
    return StepTimes(*(statistics.median(column) for column in zip(*times)))


def measure_meta_steps(config, batches, steps, warmup, matmul_gflops=None, reference=True):
    """Ours and the full-table meta-step at each batch size, and the full preset's epoch."""
    import numpy as np
    import paddle
    import maml
    from metaheac import cpu_kernels, fused_lookup
    from metaheac.reference import full_table_meta_loss
    local_lr = setting(config, "hyper_parameters.local_lr")
    ours_net = make_net(config)
    ours_opt = make_optimizer(ours_net, config)

    def ours_step(sx, sy, qx, qy, rows):
        return maml.meta_step(ours_net, sx, sy, qx, qy, local_lr, task_rows=rows)[0]

    data, planned, ours, unfused, planning, batching = {}, {}, {}, {}, {}, []
    for size in batches:  # ours at every size first, so that its peak RSS is its own
        rng = np.random.default_rng(size)
        data[size] = [task_batch(rng, config, size) for _ in range(warmup + steps)]
        timed_plans = [planned_batch(config, b) for b in data[size]]
        planning[size] = statistics.median(seconds for _, seconds in timed_plans[warmup:])
        planned[size] = [b for b, _ in timed_plans]
        ours[size] = time_steps(ours_step, planned[size], ours_opt, warmup)
        if cpu_kernels.module() is not None:
            with fused_lookup.disabled():
                unfused[size] = time_steps(ours_step, planned[size], ours_opt, warmup).total
        batching.append(measure_task_batching(config, ours_net, ours_opt, planned[size], warmup))
    rss_ours = _maxrss_mib()
    full = dict.fromkeys(batches)
    if reference:
        ref_net = make_net(config)
        ref_opt = paddle.optimizer.Adam(
            learning_rate=setting(config, "hyper_parameters.optimizer.global_learning_rate"),
            parameters=ref_net.parameters())
        for size in batches:
            full[size] = time_steps(
                lambda sx, sy, qx, qy: full_table_meta_loss(ref_net, sx, sy, qx, qy, local_lr),
                [tensor_batch(b) for b in data[size]], ref_opt, warmup)
    rows = []
    for size in batches:
        flops = meta_step_flops(batch=size, **network_sizes(config))
        floor = None if matmul_gflops is None else flops / matmul_gflops / 1e9 + ours[size].optimizer
        products, lookups = time_products(config, size), time_lookups(config, planned[size][0])
        kernels = products + lookups + ours[size].optimizer
        rows.append(MetaStepRow(
            size, ours[size], full[size], flops / 1e9, flops / ours[size].total / 1e9,
            None if full[size] is None else full[size].total / ours[size].total, planning[size],
            None if full[size] is None or floor is None else full[size].total / floor,
            products, lookups, None if full[size] is None else full[size].total / kernels,
            unfused.get(size)))
    return MetaSteps(steps, warmup, rows, rss_ours, _maxrss_mib(),
                     epoch_estimate(rows, FULL_PRESET_TRAIN_ROWS,
                                    "the full preset (~4.4 M train rows)"), batching)


def _field_counts():
    """The network's user fields (static and pooled sequence) and gate fields (their
    mean and the ad fields)."""
    from metaheac import schema
    return schema.USER_FIELDS, 1 + len(schema.AD_FIELDS)


def product_shapes(embed_dim, mlp_dims, num_expert, num_output, batch, pooling=True):
    """The matrix products of one forward pass of the network, as (left shape, right
    shape, whether the left one takes a gradient); the right one always does. `pooling`:
    whether the sequence fields are pooled by a product (not by the fused lookup)."""
    from metaheac import schema
    sequence_fields, sequence_width = len(schema.SEQUENCE_FIELDS), schema.SEQUENCE_TOTAL_WIDTH
    user_fields, gate_fields = _field_counts()
    hidden = mlp_dims[-1]
    shapes = [([batch, sequence_fields, sequence_width], [batch, sequence_width, embed_dim],
               False)] if pooling else []
    shapes += [([1, user_fields], [batch, user_fields, embed_dim], False),  # mean over fields
               ([batch, user_fields * embed_dim], [user_fields * embed_dim,
                                                   num_expert * mlp_dims[0]], True)]
    shapes += [([num_expert, batch, fan_in], [num_expert, fan_in, width], True)
               for fan_in, width in zip(mlp_dims, mlp_dims[1:])]          # deeper expert layers
    for width in (num_expert, num_output):                                 # the two gates
        shapes += [([batch, gate_fields * embed_dim], [gate_fields * embed_dim, hidden], True),
                   ([batch, hidden], [hidden, width], True)]
    shapes += [([batch, 1, num_expert], [batch, num_expert, hidden], True),  # the mixture
               ([batch, hidden], [hidden, num_output], True)]                # the critics
    return shapes


def time_products(config, batch, repeats=5):
    """Seconds per meta-step of its matrix products alone: each shape of
    ``product_shapes`` timed forward and backward on its own (the best of `repeats`), times
    the two passes (support, query) of each task. No other operator runs."""
    import paddle
    from metaheac import cpu_kernels
    sizes = network_sizes(config)
    seconds = 0.0
    shapes = product_shapes(sizes["embed_dim"], sizes["mlp_dims"], sizes["num_expert"],
                            sizes["num_output"], batch, pooling=cpu_kernels.module() is None)
    for left_shape, right_shape, left_grad in shapes:
        left, right = paddle.randn(left_shape), paddle.randn(right_shape)
        left.stop_gradient, right.stop_gradient = not left_grad, False
        wrt = [left, right] if left_grad else [right]
        upstream = paddle.randn(paddle.matmul(left, right).shape)

        def forward_backward():
            grads = paddle.grad([paddle.matmul(left, right)], wrt, [upstream])
            return float(grads[-1].flatten()[0])  # waits for the result on any device

        seconds += min(_repeat_seconds(forward_backward, repeats))
    return 2 * sizes["task_count"] * seconds


def time_lookups(config, planned, repeats=5):
    """Seconds per meta-step of its embedding lookups alone: those of the first task's
    support batch of `planned` (``planned_batch``) into its local table, forward and
    backward (the best of `repeats`), times the two passes of each task. The lookups are
    the fused kernel's, pooling included, where it is built; else Paddle's three."""
    import paddle
    import paddle.nn.functional as F
    from metaheac import cpu_kernels, fused_lookup
    (static, sequence, lengths, ad), _, _, _, task_rows = planned
    table = paddle.randn([sum(r.shape[0] for r in task_rows[0]),
                          setting(config, "hyper_parameters.embed_dim")])
    table.stop_gradient = False
    fused = cpu_kernels.module() is not None

    def lookups():
        if fused:
            return fused_lookup.lookup(table, static[0], sequence[0], lengths[0], ad[0])
        return [F.embedding(i, table) for i in (static[0], sequence[0], ad[0])]

    upstream = [paddle.randn(x.shape) for x in lookups()]

    def forward_backward():
        grad, = paddle.grad(lookups(), [table], upstream)
        return float(grad[0, 0])

    return 2 * setting(config, "hyper_parameters.task_count") * min(
        _repeat_seconds(forward_backward, repeats))


def _repeat_seconds(run_once, repeats):
    """The seconds of each of `repeats` runs of `run_once`, after one warm-up run. The
    fastest is a floor, as the matmul rate is; the median a typical run."""
    run_once()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_once()
        times.append(time.perf_counter() - start)
    return times


def measure_task_batching(config, net, optimizer, planned, warmup):
    """Order 0's meta-step with the task loop and as one batch, and the experts' first
    layer as one product with a leading task axis against one product per task (the
    per-task fast weights of orders 1 and 2 would need the former)."""
    import paddle
    import maml
    local_lr = setting(config, "hyper_parameters.local_lr")
    times = {}
    for batched in (False, True):
        times[batched] = time_steps(
            lambda sx, sy, qx, qy, rows: maml.meta_step(net, sx, sy, qx, qy, local_lr, order=0,
                                                        task_rows=rows, batched=batched)[0],
            planned, optimizer, warmup).total
    sizes = network_sizes(config)
    tasks, batch = planned[0][1].shape
    fan_in = _field_counts()[0] * sizes["embed_dim"]
    width = sizes["num_expert"] * sizes["mlp_dims"][0]
    users, weights = paddle.randn([tasks, batch, fan_in]), paddle.randn([tasks, fan_in, width])
    product = {
        True: lambda: float(paddle.matmul(users, weights)[0, 0, 0]),
        False: lambda: float([paddle.matmul(users[t], weights[t]) for t in range(tasks)][-1][0, 0])}
    product_ms = {batched: 1000 * statistics.median(_repeat_seconds(run_product, 5))
                  for batched, run_product in product.items()}
    return TaskBatching(batch, times[False], times[True], product_ms[True], product_ms[False])


def epoch_estimate(rows, data_rows, what, reader_seconds=0.0):
    """An epoch over `data_rows` from the meta-step times (batch 1024, or the largest)."""
    by_batch = {r.batch: r for r in rows}
    row = by_batch.get(1024, by_batch[max(by_batch)])
    steps = math.ceil(data_rows / row.batch)
    seconds = row.ours.total + reader_seconds
    return EpochEstimate(what, data_rows, row.batch, steps, seconds, steps * seconds / 60,
                         None if row.full_table is None
                         else steps * (row.full_table.total + reader_seconds) / 60)


def measure_profile(config, size, top=12):
    """The operators that take the most time in our meta-step (Paddle's profiler)."""
    import contextlib
    import io
    import numpy as np
    import paddle.profiler as profiler
    import maml
    local_lr = setting(config, "hyper_parameters.local_lr")
    net = make_net(config)
    optimizer = make_optimizer(net, config)
    batches = [planned_batch(config, task_batch(np.random.default_rng(size), config, size))[0]
               for _ in range(3)]

    def step(sx, sy, qx, qy, task_rows):
        loss, _ = maml.meta_step(net, sx, sy, qx, qy, local_lr, task_rows=task_rows)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()

    step(*batches[0])  # warm-up, outside the profile
    # on_trace_ready: keep the trace in memory (the default writes ./profiler_log/).
    prof = profiler.Profiler(targets=[profiler.ProfilerTarget.CPU],
                             on_trace_ready=lambda finished: None)
    prof.start()
    for b in batches[1:]:
        step(*b)
        prof.step()
    prof.stop()
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        prof.summary(sorted_by=profiler.SortedKeys.CPUTotal, op_detail=False,
                     thread_sep=False, time_unit="ms")
    lines = text.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if "Operator Summary" in line)
    # Columns are two or more spaces apart; a name may hold one ("matmul dygraph",
    # "Global_CustomOpGradNode: <op>_grad").
    table = [re.split(r"\s{2,}", line.strip()) for line in lines[start:]
             if line.startswith("Global_") or " dygraph " in line]
    profiled = len(batches) - 1
    operators = []
    for name, calls, times in (row[:3] for row in table[:top]):
        forward = name.endswith(" dygraph")
        operators.append(OperatorRow(
            name[:-len(" dygraph")] + " (forward)" if forward else name,
            int(calls) / profiled, float(times.split("/")[0]) / profiled))
    return operators


def measure_inference(config, seed_rows, epochs, batch_size, repeats=1, reference=True):
    """One campaign of random ids: `seed_rows` seeds, a quarter as many candidates."""
    import numpy as np
    from metaheac.reference import random_inputs
    n_seed, n_cand = seed_rows, max(1, seed_rows // 4)
    rng = np.random.default_rng(1)
    max_idxs = setting(config, "hyper_parameters.max_idxs")
    seed_x, cand_x = (random_inputs(rng, (n,), max_idxs) for n in (n_seed, n_cand))
    seed_y, cand_y = (random_labels(rng, n) for n in (n_seed, n_cand))
    config = dict(config, **{"hyper_parameters.batch_size": batch_size,
                             "runner.infer_train_epoch": epochs})
    campaign = time_campaign(make_net(config), config, seed_x, seed_y, cand_x, cand_y,
                             repeats, reference)
    return Inference(epochs, batch_size, campaign)


def time_campaign(net, config, seed_x, seed_y, cand_x, cand_y, repeats=1, reference=True):
    """Seconds per campaign (one per repeat): ``infer.adapt_and_score`` (ours), and the
    straightforward way: reload the checkpoint from disk, fine-tune every parameter of
    the full model with Adam, score."""
    import paddle
    import infer
    from dygraph_model import DygraphModel
    from metaheac.reference import full_model_fine_tune
    model_class = DygraphModel()
    batch_size = setting(config, "hyper_parameters.batch_size")
    epochs = setting(config, "runner.infer_train_epoch")
    net.eval()
    ours = []
    for _ in range(repeats):
        metrics, _ = model_class.create_metrics()
        local, _ = model_class.create_metrics()
        start = time.perf_counter()
        infer.adapt_and_score(model_class, net, config, seed_x, seed_y, cand_x, cand_y,
                              metrics, local)
        ours.append(time.perf_counter() - start)
    rss_ours = _maxrss_mib()
    full_model = []
    if reference:
        folder = tempfile.mkdtemp(prefix="metaheac_bench_")
        try:
            path = os.path.join(folder, "rec.pdparams")
            paddle.save(net.state_dict(), path)
            full = make_net(config, seed=1)
            lr = setting(config, "hyper_parameters.optimizer.local_test_learning_rate")
            for _ in range(repeats):
                start = time.perf_counter()
                full.set_state_dict(paddle.load(path))
                optimizer = paddle.optimizer.Adam(learning_rate=lr, parameters=full.parameters())
                full_model_fine_tune(full, optimizer, seed_x, seed_y, epochs, batch_size)
                infer.score(full, cand_x, batch_size)
                full_model.append(time.perf_counter() - start)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    ours_median = statistics.median(ours)
    full_median = statistics.median(full_model) if full_model else None
    return Campaign(len(seed_y), len(cand_y), ours, full_model, ours_median, full_median,
                    None if full_median is None else full_median / ours_median,
                    rss_ours, _maxrss_mib())


def measure_real_data(args, meta_steps):
    """Loads, reader meta-steps and a real campaign, each in a fresh process (``child``).
    Returns (RealData, None), or (None, why it was skipped)."""
    train = train_folder(args.data)
    files = sorted(f for f in os.listdir(train) if f.endswith((".pkl", ".npz")))
    if not files:
        return None, "%s holds no .pkl/.npz files" % train
    scratch = tempfile.mkdtemp(prefix="metaheac_bench_data_")
    try:
        for f in files:
            os.symlink(os.path.join(train, f), os.path.join(scratch, f))
        first, cached = (Load(**_in_fresh_process(args, ["load", scratch])) for _ in range(2))
        reader = ReaderSteps(**_in_fresh_process(args, ["train", scratch, "--steps",
                                                        str(args.data_steps)]))
    except BenchError as error:  # name the data file, not its link
        raise BenchError(str(error).replace(scratch, train)) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    steps = math.ceil(reader.rows / reader.batch)
    measured = EpochEstimate("this data, measured steps", reader.rows, reader.batch, steps,
                             reader.step, steps * reader.step / 60)
    synthetic = epoch_estimate(meta_steps.rows, reader.rows,
                               "this data (%s rows), synthetic step time"
                               % "{:,}".format(reader.rows))
    test = os.path.join(os.path.abspath(args.data), "test_hot_data")
    hot = Campaign(**_in_fresh_process(args, ["infer", test])) if os.path.isdir(test) else None
    return RealData(train, files, first, cached, reader, measured, synthetic, hot), None


def train_folder(data):
    train = os.path.join(os.path.abspath(data), "train_data")
    if not os.path.isdir(train):
        raise BenchError("--data %s: no train_data/ folder in it (the layout of "
                         "tools/generate_data.py --preset full)" % data)
    return train


def _in_fresh_process(args, what):
    command = [sys.executable, os.path.abspath(__file__), "child", *what,
               "--threads", str(args.threads)]
    command += ["--tiny"] * args.tiny + ["--openmp"] * args.openmp
    out = subprocess.run(command, capture_output=True, text=True, cwd=utils.ROOT)
    if out.returncode == 2:  # bad input, said in one line
        raise BenchError(out.stderr.strip().splitlines()[-1].removeprefix("error: "))
    if out.returncode != 0:
        raise RuntimeError("%s failed:\n%s" % (" ".join(command), out.stderr[-4000:]))
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_child(args):
    """One measurement of the --data part in this process: a Load, ReaderSteps or Campaign."""
    from metaheac.data_files import DataError
    try:
        return _measure_in_child(args)
    except (DataError, OSError) as error:
        raise BenchError(error) from None


def _measure_in_child(args):
    import paddle
    paddle.set_device("cpu")
    if args.what == "infer":
        return measure_real_campaign(args.folder, 16 if args.tiny else 1024)
    import numpy as np
    import reader_train
    config = {"hyper_parameters.batch_size": 16 if args.tiny else 1024,
              "runner.train_data_dir": args.folder, "config_abs_dir": utils.ROOT}
    files = sorted(os.path.join(args.folder, f) for f in os.listdir(args.folder))
    start = time.perf_counter()
    dataset = reader_train.RecDataset(files, config)
    load = time.perf_counter() - start
    if args.what == "load":
        return Load(load, len(dataset.data), len(dataset.aids), _maxrss_mib())
    from dygraph_model import DygraphModel
    from utils.utils_single import TensorLoader
    model_class = DygraphModel()
    model = model_class.create_model(config)
    optimizer = model_class.create_optimizer(model, config)
    metrics, _ = model_class.create_metrics()
    reader, compute = [], []
    batches = iter(TensorLoader(dataset))
    for _ in range(args.steps + 1):  # the first step is a warm-up
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        loss, metrics, _ = model_class.train_forward(model, metrics, batch, config)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        t2 = time.perf_counter()
        reader.append(t1 - t0)
        compute.append(t2 - t1)
    total = [r + c for r, c in zip(reader[1:], compute[1:])]
    return ReaderSteps(load, len(dataset.data), args.steps,
                       setting(config, "hyper_parameters.batch_size"), float(np.median(total)),
                       float(np.median(reader[1:])), float(np.median(compute[1:])),
                       _maxrss_mib())


def measure_real_campaign(folder, batch_size):
    """Inference on the real test campaign with the fewest seed rows, both ways."""
    import reader_test
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                   if f.endswith((".pkl", ".npz")))
    start = time.perf_counter()
    dataset = reader_test.RecDataset(files, {})
    load = time.perf_counter() - start
    sizes = dataset.seed_counts()
    pick = min(range(len(sizes)), key=sizes.__getitem__)
    for index, campaign in enumerate(dataset):
        if index == pick:
            break
    aid, seed_x, seed_y, cand_x, cand_y, _ = campaign
    config = network_config(**{"hyper_parameters.batch_size": batch_size})
    result = time_campaign(make_net(config), config, seed_x, seed_y, cand_x, cand_y)
    result.aid, result.campaigns, result.load_seconds = int(aid[0]), len(sizes), load
    return result


def _maxrss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _load():
    return "%.2f %.2f %.2f" % os.getloadavg()


# --- the one renderer ---------------------------------------------------------------


def render(report):
    """The Report as Markdown text."""
    r = report
    m = r.meta_steps
    hp = r.network
    lines = [
        "# MetaHeac benchmark (%s mode)" % r.mode,
        "paddle %s, CPU, %d %s thread(s), %d cores; load average at start: %s"
        % (r.paddle, r.threads, "OpenMP" if r.openmp else "MKL", r.cores, r.load_start),
        "network: embed_dim %d, mlp_dims %s, %d experts, %d critics, %d tasks per meta-step, "
        "%s parameters" % (hp["embed_dim"], hp["mlp_dims"], hp["num_expert"], hp["num_output"],
                           hp["task_count"], "{:,}".format(r.parameters)),
        "matrix product: paddle.matmul of two %dx%d float32: %.1f GFLOP/s (best of runs)"
        % (r.matmul_size, r.matmul_size, r.matmul_gflops),
        "",
        "## Meta-step (forward with inner steps + backward + outer Adam over every parameter), "
        "median of %d after %d warm-up" % (m.steps, m.warmup),
        "",
        "| batch | full-table s/step | ours s/step | speed-up | speed-up ceiling | products / "
        "lookups alone s/step | ceiling from them | ours forward / backward / optimizer s | "
        "GFLOP/step | ours GFLOP/s | % of matmul rate | reader's id planning s | ours with "
        "Paddle's lookups s/step |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in m.rows:
        o, f = row.ours, row.full_table
        lines.append("| %d | %s | %.4f | %s | %s | %.4f / %.4f | %s | %.4f / %.4f / %.4f | %.2f | "
                     "%.1f | %.0f %% | %.4f | %s |" % (
                         row.batch, _maybe("%.4f", f and f.total), o.total,
                         _maybe("%.1fx", row.speedup), _maybe("%.1fx", row.ceiling),
                         row.products, row.lookups, _maybe("%.1fx", row.kernel_ceiling),
                         o.forward, o.backward, o.optimizer, row.gflop, row.gflops,
                         100 * row.gflops / r.matmul_gflops, row.planning,
                         _maybe("%.4f", row.unfused)))
    lines += ["", "Speed-up ceiling: the full-table seconds over ours if our step took only its "
                  "matrix products at the matmul rate above, plus its optimizer step (Adam over "
                  "all %s parameters reads and writes 7 float32 values each: %.0f MB a step). "
                  "The exact maths allows no more. Products / lookups alone: the step's matrix "
                  "products, shape by shape, and its embedding lookups (our fused lookup kernel, "
                  "pooling included, where it is built), each timed forward and backward on its "
                  "own (best of 5) with nothing else run; the ceiling from them is the full-table "
                  "seconds over their sum plus the optimizer step: the floor of these kernels for "
                  "what the exact maths computes. Ours with Paddle's lookups: the same step with "
                  "Paddle's lookups, pooling product and gather/scatter gradient adds in place "
                  "of the fused lookup kernel." % (
                      "{:,}".format(r.parameters), 28 * r.parameters / 1e6)]
    lines += _floor_lines(m.rows, r.matmul_gflops)
    lines += _task_batching_lines(m.task_batching, hp["task_count"])
    for row in m.rows:
        if row.full_table:
            f = row.full_table
            lines.append("full-table at batch %d: forward / backward / optimizer %.4f / %.4f / "
                         "%.4f s" % (row.batch, f.forward, f.backward, f.optimizer))
    lines.append("peak RSS after ours (every batch size, before the reference): %.0f MiB; "
                 "after the reference: %.0f MiB" % (m.rss_ours_mib, m.rss_mib))
    lines.append(_epoch_line(m.full_preset_epoch))
    if r.profile:
        lines += ["", "Top operators of our meta-step at batch %d (Paddle's profiler; ms per "
                      "step, forward ops and their gradient nodes):" % r.profile_batch,
                  "", "| operator | calls per step | ms per step |", "|---|---|---|"]
        lines += ["| %s | %.0f | %.1f |" % (o.operator, o.calls_per_step, o.ms_per_step)
                  for o in r.profile]
    inference = r.inference
    c = inference.campaign
    lines += ["", "## Inference per campaign: fine-tune %d epoch(s) on %d seed rows in batches "
                  "of %d, then score %d candidates (random ids)"
              % (inference.epochs, c.seeds, inference.batch_size, c.candidates)]
    lines += _campaign_lines(c)
    if r.skipped_data:
        lines += ["", "%s; skipping the real-data part" % r.skipped_data]
    if r.data:
        lines += _real_data_lines(r.data)
    lines += ["", "load average at end: %s; peak RSS of this process: %.0f MiB"
              % (r.load_end, r.rss_mib)]
    return "\n".join(lines)


def _floor_lines(rows, matmul_gflops):
    """What the kernels timed alone allow: the share of the matmul rate our step would
    reach if it took only them and its optimizer step (the targets' measured floor)."""
    lines = ["", "## The floor: the step's kernels timed alone", "",
             "| batch | products alone GFLOP/s (% of matmul rate) | products + lookups + "
             "optimizer s | % of matmul rate at that floor | ours: % of that floor's rate |",
             "|---|---|---|---|---|"]
    for row in rows:
        floor = row.products + row.lookups + row.ours.optimizer
        lines.append("| %d | %.1f (%.0f %%) | %.4f | %.0f %% | %.0f %% |" % (
            row.batch, row.gflop / row.products, 100 * row.gflop / row.products / matmul_gflops,
            floor, 100 * row.gflop / floor / matmul_gflops, 100 * floor / row.ours.total))
    lines.append("No step can run its products faster than they run alone, nor skip its lookups "
                 "or its optimizer step (Adam moves every parameter): the floor's share of the "
                 "matmul rate is the most the exact maths reaches with these kernels.")
    return lines


def _task_batching_lines(rows, tasks):
    lines = ["", "## Tasks batched: one batch against the task loop", "",
             "| batch | order 0 task loop s/step | order 0 one batch s/step | speed-up | "
             "experts' first layer, %d tasks: one batched product ms | one product per task ms |"
             % tasks, "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append("| %d | %.4f | %.4f | %.2fx | %.2f | %.2f |" % (
            row.batch, row.order0_loop, row.order0_batched, row.order0_loop / row.order0_batched,
            row.product_batched_ms, row.product_loop_ms))
    lines.append("meta_step batches order 0, whose tasks share the weights. Orders 1 and 2 give "
                 "each task its own fast weights: batched, every product carries a task axis "
                 "(the last two columns), and their whole step was slower so (readme.md, "
                 "\"Speed\").")
    return lines


def _real_data_lines(d):
    t = d.train
    lines = ["", "## Real data: %s (%s)" % (d.folder, ", ".join(d.files)), "",
             "| RecDataset load | seconds | rows | campaigns | peak RSS (MiB) |",
             "|---|---|---|---|---|"]
    for name, load in (("first (no cache: parse + check + write the cache)", d.first_load),
                       ("cached", d.cached_load)):
        lines.append("| %s | %.2f | %s | %d | %.0f |" % (
            name, load.seconds, "{:,}".format(load.rows), load.campaigns, load.maxrss_mib))
    lines += ["", "%d meta-steps at batch %d through the real reader (as tools/trainer.py): "
                  "median %.4f s/step (reading %.4f s, compute %.4f s); load %.1f s; peak RSS "
                  "%.0f MiB" % (t.steps, t.batch, t.step, t.reader, t.compute, t.load,
                                t.maxrss_mib),
              "measured epoch estimate: %d steps x %.4f s = %.1f min (+ %.1f s load)"
              % (d.measured_epoch.steps, d.measured_epoch.step_seconds, d.measured_epoch.minutes,
                 t.load),
              _epoch_line(d.synthetic_epoch)]
    c = d.hot_campaign
    if c:
        lines += ["", "Inference on the real hot test campaign with the fewest seed rows (aid %d "
                      "of %d; test data loaded in %.1f s):" % (c.aid, c.campaigns, c.load_seconds)]
        lines += _campaign_lines(c)
    return lines


def _campaign_lines(c):
    return ["", "| per campaign | reload + full-model Adam (s) | ours (s) | speed-up |",
            "|---|---|---|---|",
            "| %d seeds, %d candidates | %s | %.3f | %s |" % (
                c.seeds, c.candidates, _maybe("%.3f", c.full_model_median), c.ours_median,
                _maybe("%.1fx", c.speedup)),
            "peak RSS after ours: %.0f MiB; after the reference: %.0f MiB"
            % (c.rss_ours_mib, c.rss_mib)]


def _epoch_line(e):
    text = "epoch of %s at batch %d: %d steps x %.4f s = %.1f min (ours)" % (
        e.what, e.batch, e.steps, e.step_seconds, e.minutes)
    if e.full_table_minutes is not None:
        text += ", %.1f min (full-table)" % e.full_table_minutes
    return text


def _maybe(pattern, value):
    return "-" if value is None else pattern % value


if __name__ == "__main__":
    main()
