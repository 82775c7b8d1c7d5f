"""Speed and memory of MetaHeac meta-training and per-campaign inference, in one run.

    python tools/bench.py [--threads 2] [--openmp]    # about 1-2 minutes on 2 idle cores
    python tools/bench.py --quick                     # under a minute
    python tools/bench.py --quick --profile           # + the top operators of a meta-step
    python tools/bench.py --data datasets/Lookalike   # + the real data (3-5 more minutes)

Prints, on synthetic inputs of the real schema and vocabularies (random ids, the
default network: embed_dim 64, mlp_dims [64, 64], 8 experts, 5 critics, 5 tasks):

* the rate of one large matrix product (``paddle.matmul`` of two squares);
* per meta-step (forward with the inner steps, backward, outer Adam step over
  every parameter), at each ``--batches`` size: the median seconds of the
  straightforward full-table formulation (upstream's recipe, ``full_table_meta_loss``
  below) and of ours (``maml.meta_step``), their ratio, our forward / backward /
  optimizer split, and the GFLOP/s achieved (matrix products counted analytically,
  see ``meta_step_flops``);
* the epoch time of the full preset extrapolated from the step time;
* per campaign of inference (fine-tune ``--infer-epochs`` epochs on ``--seed-rows``
  rows, then score a quarter as many candidates): ``infer.adapt_and_score`` against
  reloading the checkpoint from disk and fine-tuning the full model with Adam;
* peak resident memory (``ru_maxrss``) after each part.

With ``--data DIR`` (``train_data/`` and ``test_hot_data/`` as written by
``tools/generate_data.py --preset full``) it also measures, each in a fresh child
process: the first load of ``reader_train.RecDataset`` over the train files (linked
into an empty temporary folder, so no ``.columns_cache`` exists and the one beside the
data is left alone), the cached load, ``--data-steps`` meta-steps through the real
reader as ``tools/trainer.py`` runs them, and the inference of the hot test campaign
with the fewest seed rows both ways, each with its peak memory.

The CPU is set up as tools/trainer.py sets it up (tools/utils/cpu.py): MKL's matrix
products on ``--threads`` threads (default: every core), Paddle's other kernels on
one, glibc's allocator tuned. ``--openmp`` gives OpenMP itself the threads instead
(OMP_NUM_THREADS, Paddle's own knob), to compare. Timings are wall-clock medians;
the load average is printed with them, since other processes on the machine slow
every figure. Nothing here asserts a time.
"""
import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FULL_PRESET_TRAIN_ROWS = 4_400_000  # tools/generate_data.py --preset full: ~4.4 M train rows


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer steps and rows: under two minutes")
    p.add_argument("--tiny", action="store_true",
                   help="tiny batches and vocabularies, one step each: a smoke test (seconds)")
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
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="threads of MKL's matrix products (MKL_NUM_THREADS)")
    p.add_argument("--openmp", action="store_true",
                   help="give the threads to OpenMP (OMP_NUM_THREADS) rather than to MKL alone")
    p.add_argument("--profile", action="store_true",
                   help="also print the operators that take the most time in our meta-step at the "
                        "largest batch size (Paddle's profiler)")
    p.add_argument("--skip-reference", action="store_true",
                   help="time only ours (the full-table reference is the slow part)")
    p.add_argument("--_child", help=argparse.SUPPRESS)  # internal: load / train in a child
    args = p.parse_args(argv)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    defaults = {  # batches, steps, warmup, seed rows, data steps
        "full": ("32,1024", 7, 2, 30_000, 20),
        "quick": ("32,1024", 3, 1, 4_096, 5),
        "tiny": ("8,16", 1, 1, 64, 2)}[mode]
    for name, value in zip(("batches", "steps", "warmup", "seed_rows", "data_steps"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.batches = [int(b) for b in str(args.batches).split(",") if b]
    args.mode = mode
    return args


def main(argv=None):
    args = parse_args(argv)
    # Read once, when Paddle is imported.
    os.environ["MKL_NUM_THREADS"] = str(args.threads)
    if args.openmp:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    for path in (ROOT, os.path.join(ROOT, "tools")):
        if path not in sys.path:
            sys.path.insert(0, path)
    import utils  # noqa: F401  (sets up the CPU as the trainer does)
    if args._child:
        return _child(args)
    bench = Bench(args)
    bench.run()
    return bench


# --- the straightforward formulation --------------------------------------------


def full_table_meta_loss(model, sx, sy, qx, qy, lr):
    """Upstream's recipe: backward the support loss, fast = w - lr * w.grad on every
    parameter (full tables included), then the query loss with the fast weights.
    Inputs: tensors with a leading task axis."""
    import paddle
    import paddle.nn.functional as F
    params = dict(model.named_parameters())
    losses = []
    for t in range(sy.shape[0]):
        model.clear_gradients()
        support = F.binary_cross_entropy(model(*[x[t] for x in sx]), sy[t])
        support.backward()
        fast = {n: p - lr * p.grad.detach().clone() for n, p in params.items()}
        model.clear_gradients()
        query = model(*[x[t] for x in qx], weights=fast)
        losses.append(F.binary_cross_entropy(query, qy[t]))
    return paddle.stack(losses).mean()


def meta_step_flops(embed_dim, mlp_dims, num_expert, num_output, task_count, batch,
                    user_fields=14, gate_fields=7):
    """FLOPs of the matrix products of one meta-step, 2 per multiply-add.

    Per row, forward: the experts (14E -> mlp_dims, each of K experts), the two
    gates (7E -> H -> K and 7E -> H -> C) and the critics (H -> C). A backward
    pass costs twice its forward (the input and the weight gradient of each
    product). A task runs support forward + backward, query forward + backward:
    6 forwards' worth. Embedding lookups, pooling and elementwise ops are not
    counted.
    """
    hidden = mlp_dims[-1]
    per_row = 0
    fan_in = user_fields * embed_dim
    for width in mlp_dims:
        per_row += num_expert * fan_in * width
        fan_in = width
    gate_in = gate_fields * embed_dim
    per_row += gate_in * hidden + hidden * num_expert      # expert gate
    per_row += gate_in * hidden + hidden * num_output      # critic gate
    per_row += hidden * num_output                         # critics
    return 2 * per_row * 6 * task_count * batch


# --- the benchmark ------------------------------------------------------------------


class Bench:
    def __init__(self, args):
        self.args = args
        import numpy as np
        import paddle
        paddle.set_device("cpu")
        self.np, self.paddle = np, paddle
        from metaheac import schema
        self.max_idxs = schema.DEFAULT_MAX_IDXS
        if args.tiny:
            self.max_idxs = [[min(m, 50) for m in group] for group in schema.DEFAULT_MAX_IDXS]
        self.hp = dict(embed_dim=64, mlp_dims=[64, 64], num_expert=8, num_output=5)
        self.task_count, self.local_lr, self.lr = 5, 0.0002, 0.001
        self.results = {}

    def say(self, text=""):
        print(text, flush=True)

    def run(self):
        a = self.args
        import paddle
        self.say("# MetaHeac benchmark (%s mode)" % a.mode)
        self.say("paddle %s, CPU, %d %s thread(s), %d cores; load average at start: %s"
                 % (paddle.__version__, a.threads, "OpenMP" if a.openmp else "MKL",
                    os.cpu_count(), _load()))
        self.say("network: embed_dim %(embed_dim)d, mlp_dims %(mlp_dims)s, %(num_expert)d experts, "
                 "%(num_output)d critics" % self.hp
                 + ", %d tasks per meta-step, %s parameters"
                 % (self.task_count, "{:,}".format(self._count_params())))
        self.matmul()
        self.meta_steps()
        if a.profile:
            self.profile(max(a.batches))
        self.inference()
        if a.data:
            self.data(a.data)
        self.say("\nload average at end: %s; peak RSS of this process: %.0f MiB"
                 % (_load(), _maxrss_mib()))

    def _count_params(self):
        net = self.make_net()
        return sum(int(p.size) for p in net.parameters())

    def make_net(self, seed=0):
        import net
        self.paddle.seed(seed)
        return net.MetaHeacNet(self.max_idxs, **self.hp)

    def make_optimizer(self, net):
        """The optimizer tools/trainer.py meta-trains with."""
        from dygraph_model import DygraphModel
        return DygraphModel().create_optimizer(
            net, {"hyper_parameters.optimizer.global_learning_rate": self.lr})

    # --- matrix product rate ---
    def matmul(self):
        paddle = self.paddle
        n = 256 if self.args.tiny else 2048
        x = paddle.randn([n, n])
        best = float("inf")
        for _ in range(3 if self.args.tiny else 6):
            start = time.perf_counter()
            float(paddle.matmul(x, x)[0, 0])
            best = min(best, time.perf_counter() - start)
        self.matmul_rate = 2 * n ** 3 / best / 1e9
        self.say("matrix product: paddle.matmul of two %dx%d float32: %.1f GFLOP/s (best of runs)"
                 % (n, n, self.matmul_rate))

    # --- meta-steps ---
    def batch(self, rng, batch):
        np, paddle = self.np, self.paddle
        shape = (self.task_count, batch)
        sx, qx = (random_inputs(rng, shape, self.max_idxs) for _ in range(2))
        sy, qy = ((rng.random(shape) < 0.3).astype("float32") for _ in range(2))
        to = lambda arrays: [paddle.to_tensor(x) for x in arrays]  # noqa: E731
        return to(sx), paddle.to_tensor(sy), to(qx), paddle.to_tensor(qy)

    def time_steps(self, step, batches, optimizer):
        times = {"forward": [], "backward": [], "optimizer": [], "total": []}
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
            if i >= self.args.warmup:
                for key, value in zip(times, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                    times[key].append(value)
        return {k: statistics.median(v) for k, v in times.items()}

    def meta_steps(self):
        import maml
        a = self.args
        np, paddle = self.np, self.paddle
        self.say("\n## Meta-step (forward with inner steps + backward + outer Adam over every "
                 "parameter), median of %d after %d warm-up" % (a.steps, a.warmup))
        rows = []
        self.step_times = {}
        ours_net = self.make_net()
        ours_opt = self.make_optimizer(ours_net)
        ref_net = None if a.skip_reference else self.make_net()
        ref_opt = None if ref_net is None else paddle.optimizer.Adam(
            learning_rate=self.lr, parameters=ref_net.parameters())
        data = {}
        for size in a.batches:  # ours at every size first, so that its peak RSS is its own
            rng = np.random.default_rng(size)
            data[size] = [self.batch(rng, size) for _ in range(a.warmup + a.steps)]
            ours = self.time_steps(
                lambda sx, sy, qx, qy: maml.meta_step(ours_net, sx, sy, qx, qy, self.local_lr)[0],
                data[size], ours_opt)
            self.step_times[size] = (ours, None)
        rss_ours = _maxrss_mib()
        for size in a.batches if ref_net is not None else ():
            ref = self.time_steps(
                lambda sx, sy, qx, qy: full_table_meta_loss(ref_net, sx, sy, qx, qy, self.local_lr),
                data[size], ref_opt)
            self.step_times[size] = (self.step_times[size][0], ref)
        for size in a.batches:
            ours, ref = self.step_times[size]
            flops = meta_step_flops(task_count=self.task_count, batch=size, **self.hp)
            rows.append((size, ours, ref, flops))
        self.say("\n| batch | full-table s/step | ours s/step | speed-up | ours forward / backward "
                 "/ optimizer s | GFLOP/step | ours GFLOP/s | % of matmul rate |")
        self.say("|---|---|---|---|---|---|---|---|")
        for size, ours, ref, flops in rows:
            self.say("| %d | %s | %.4f | %s | %.4f / %.4f / %.4f | %.2f | %.1f | %.0f %% |" % (
                size, "-" if ref is None else "%.4f" % ref["total"], ours["total"],
                "-" if ref is None else "%.1fx" % (ref["total"] / ours["total"]),
                ours["forward"], ours["backward"], ours["optimizer"], flops / 1e9,
                flops / ours["total"] / 1e9, 100 * flops / ours["total"] / 1e9 / self.matmul_rate))
        for size, ours, ref, _ in rows:
            if ref is not None:
                self.say("full-table at batch %d: forward / backward / optimizer "
                         "%.4f / %.4f / %.4f s"
                         % (size, ref["forward"], ref["backward"], ref["optimizer"]))
        self.say("peak RSS after ours (every batch size, before the reference): %.0f MiB; "
                 "after the reference: %.0f MiB" % (rss_ours, _maxrss_mib()))
        self.epoch_estimate(FULL_PRESET_TRAIN_ROWS, "the full preset (~4.4 M train rows)")

    def epoch_estimate(self, rows, what, reader_seconds=0.0):
        batch = 1024 if 1024 in self.step_times else max(self.step_times)
        ours, ref = self.step_times[batch]
        steps = math.ceil(rows / batch)
        text = "epoch of %s at batch %d: %d steps x %.4f s = %.1f min (ours)" % (
            what, batch, steps, ours["total"] + reader_seconds,
            steps * (ours["total"] + reader_seconds) / 60)
        if ref is not None:
            text += ", %.1f min (full-table)" % (steps * (ref["total"] + reader_seconds) / 60)
        self.say(text)

    # --- where the time goes ---
    def profile(self, size, top=12):
        import contextlib
        import io
        import maml
        import paddle.profiler as profiler
        net = self.make_net()
        optimizer = self.make_optimizer(net)
        batches = [self.batch(self.np.random.default_rng(size), size) for _ in range(3)]

        def step(sx, sy, qx, qy):
            loss, _ = maml.meta_step(net, sx, sy, qx, qy, self.local_lr)
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
        rows = [line.split() for line in lines[start:]
                if line.startswith("Global_") or " dygraph " in line]
        self.say("\nTop operators of our meta-step at batch %d (Paddle's profiler, %d steps; "
                 "ms per step, forward ops and their gradient nodes):" % (size, len(batches) - 1))
        self.say("\n| operator | calls per step | ms per step |")
        self.say("|---|---|---|")
        for row in rows[:top]:
            name = row[0] if row[1] != "dygraph" else row[0] + " (forward)"
            numbers = row[2:] if row[1] == "dygraph" else row[1:]
            self.say("| %s | %.0f | %.1f |" % (name, int(numbers[0]) / (len(batches) - 1),
                                            float(numbers[1]) / (len(batches) - 1)))

    # --- inference ---
    def inference(self):
        a = self.args
        np = self.np
        batch_size = 1024 if not a.tiny else 16
        n_seed, n_cand = a.seed_rows, max(1, a.seed_rows // 4)
        self.say("\n## Inference per campaign: fine-tune %d epoch(s) on %d seed rows in batches of "
                 "%d, then score %d candidates (random ids)"
                 % (a.infer_epochs, n_seed, batch_size, n_cand))
        rng = np.random.default_rng(1)
        seed_x, cand_x = (random_inputs(rng, (n,), self.max_idxs) for n in (n_seed, n_cand))
        seed_y, cand_y = ((rng.random(n) < 0.3).astype("float32") for n in (n_seed, n_cand))
        net = self.make_net()
        ours, ref, rss_ours = time_campaign(
            net, lambda: self.make_net(seed=1), seed_x, seed_y, cand_x, cand_y, batch_size,
            a.infer_epochs, self.lr, repeats=1 if a.tiny else 3, reference=not a.skip_reference)
        self.say("\n| per campaign | reload + full-model Adam (s) | ours (s) | speed-up |")
        self.say("|---|---|---|---|")
        self.say(campaign_row("%d seeds, %d candidates" % (n_seed, n_cand), ours, ref))
        self.say("peak RSS after ours: %.0f MiB; after the reference: %.0f MiB"
                 % (rss_ours, _maxrss_mib()))

    # --- real data ---
    def data(self, folder):
        a = self.args
        train = os.path.join(os.path.abspath(folder), "train_data")
        files = sorted(f for f in os.listdir(train) if f.endswith((".pkl", ".npz")))
        if not files:
            self.say("\n%s holds no .pkl/.npz files; skipping the real-data part" % train)
            return
        self.say("\n## Real data: %s (%s)" % (train, ", ".join(files)))
        scratch = tempfile.mkdtemp(prefix="metaheac_bench_data_")
        try:
            for f in files:
                os.symlink(os.path.join(train, f), os.path.join(scratch, f))
            first = self._run_child(["load", scratch])
            cached = self._run_child(["load", scratch])
            self.say("\n| RecDataset load | seconds | rows | campaigns | peak RSS (MiB) |")
            self.say("|---|---|---|---|---|")
            for name, r in (("first (no cache: parse + check + write the cache)", first),
                            ("cached", cached)):
                self.say("| %s | %.2f | %s | %d | %.0f |" % (
                    name, r["seconds"], "{:,}".format(r["rows"]), r["campaigns"], r["maxrss_mib"]))
            run = self._run_child(["train", scratch, str(a.data_steps)])
            self.say("\n%d meta-steps at batch %d through the real reader (as tools/trainer.py): "
                     "median %.4f s/step (reading %.4f s, compute %.4f s); load %.1f s; "
                     "peak RSS %.0f MiB" % (run["steps"], run["batch"], run["step"], run["reader"],
                                            run["compute"], run["load"], run["maxrss_mib"]))
            steps = math.ceil(run["rows"] / run["batch"])
            self.say("measured epoch estimate: %d steps x %.4f s = %.1f min (+ %.1f s load)"
                     % (steps, run["step"], steps * run["step"] / 60, run["load"]))
            self.epoch_estimate(run["rows"], "this data (%s rows), synthetic step time"
                                % "{:,}".format(run["rows"]))
            test = os.path.join(os.path.abspath(folder), "test_hot_data")
            if os.path.isdir(test):
                r = self._run_child(["infer", test])
                self.say("\nInference on the real hot test campaign with the fewest seed rows "
                         "(aid %d of %d; test data loaded in %.1f s):" % (r["aid"], r["campaigns"],
                                                                         r["load"]))
                self.say("\n| per campaign | reload + full-model Adam (s) | ours (s) | speed-up |")
                self.say("|---|---|---|---|")
                self.say(campaign_row("%d seeds, %d candidates" % (r["seeds"], r["candidates"]),
                                      r["ours"], r["ref"]))
                self.say("peak RSS of that process: %.0f MiB after ours, %.0f MiB in all"
                         % (r["maxrss_ours_mib"], r["maxrss_mib"]))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _run_child(self, what):
        a = self.args
        command = [sys.executable, os.path.abspath(__file__), "--threads", str(a.threads),
                   "--_child", json.dumps(what)]
        if a.tiny:
            command.append("--tiny")
        if a.openmp:
            command.append("--openmp")
        out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        if out.returncode != 0:
            raise RuntimeError("bench child %s failed:\n%s" % (what, out.stderr[-4000:]))
        return json.loads(out.stdout.strip().splitlines()[-1])


def _child(args):
    """Runs in a fresh process, so that its peak RSS is its own; prints one JSON line."""
    what = json.loads(args._child)
    import numpy as np
    if what[0] == "infer":
        return _child_infer(args, what[1])
    import reader_train
    config = {"hyper_parameters.batch_size": 16 if args.tiny else 1024,
              "hyper_parameters.task_count": 5, "runner.seed": 2021,
              "runner.train_data_dir": what[1], "config_abs_dir": ROOT}
    files = sorted(os.path.join(what[1], f) for f in os.listdir(what[1]))
    start = time.perf_counter()
    dataset = reader_train.RecDataset(files, config)
    load = time.perf_counter() - start
    result = {"seconds": load, "rows": len(dataset.data), "campaigns": len(dataset.aids)}
    if what[0] == "train":
        from dygraph_model import DygraphModel
        from utils.utils_single import TensorLoader
        model_class = DygraphModel()
        model = model_class.create_model(config)
        optimizer = model_class.create_optimizer(model, config)
        metrics, _ = model_class.create_metrics()
        steps = int(what[2])
        reader, compute = [], []
        batches = iter(TensorLoader(dataset))
        for _ in range(steps + 1):  # the first step is a warm-up
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
        result.update(load=load, steps=steps, batch=config["hyper_parameters.batch_size"],
                      step=float(np.median(total)), reader=float(np.median(reader[1:])),
                      compute=float(np.median(compute[1:])))
    result["maxrss_mib"] = _maxrss_mib()
    print(json.dumps(result))
    return result


def _child_infer(args, folder):
    """Inference on the real test campaign with the fewest seed rows: ours and the
    straightforward way, as ``time_campaign``; prints one JSON line."""
    import net as network
    import reader_test
    from metaheac import schema
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                   if f.endswith((".pkl", ".npz")))
    start = time.perf_counter()
    dataset = reader_test.RecDataset(files, {"runner.seed": 2021})
    load = time.perf_counter() - start
    sizes = [len(dataset._seed_index[aid]) for aid in dataset.aids.tolist()]
    pick = int(min(range(len(sizes)), key=sizes.__getitem__))
    for index, campaign in enumerate(dataset):
        if index == pick:
            break
    aid, seed_x, seed_y, cand_x, cand_y, _ = campaign
    make_net = lambda: network.MetaHeacNet(  # noqa: E731
        schema.DEFAULT_MAX_IDXS, 64, [64, 64], num_expert=8, num_output=5)
    ours, ref, rss_ours = time_campaign(make_net(), make_net, seed_x, seed_y, cand_x, cand_y,
                                        16 if args.tiny else 1024, 2, 0.001)
    result = {"load": load, "campaigns": len(sizes), "aid": int(aid[0]), "seeds": len(seed_y),
              "candidates": len(cand_y), "ours": ours, "ref": ref, "maxrss_ours_mib": rss_ours,
              "maxrss_mib": _maxrss_mib()}
    print(json.dumps(result))
    return result


def time_campaign(net, make_net, seed_x, seed_y, cand_x, cand_y, batch_size, epochs, lr,
                  repeats=1, reference=True):
    """Seconds per campaign (a list per repeat): ``infer.adapt_and_score`` (ours), and
    the straightforward way: reload the checkpoint from disk, fine-tune every
    parameter of the full model with Adam, score. Also our peak RSS (MiB)."""
    import paddle
    import paddle.nn.functional as F
    import infer
    from dygraph_model import DygraphModel
    config = {"hyper_parameters.batch_size": batch_size, "runner.infer_train_epoch": epochs,
              "hyper_parameters.optimizer.local_test_learning_rate": lr}
    model_class = DygraphModel()
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
    ref = []
    if reference:
        folder = tempfile.mkdtemp(prefix="metaheac_bench_")
        try:
            path = os.path.join(folder, "rec.pdparams")
            paddle.save(net.state_dict(), path)
            full = make_net()
            seed_t = [paddle.to_tensor(x) for x in seed_x]
            cand_t = [paddle.to_tensor(x) for x in cand_x]
            seed_yt = paddle.to_tensor(seed_y)
            for _ in range(repeats):
                start = time.perf_counter()
                full.set_state_dict(paddle.load(path))
                optimizer = paddle.optimizer.Adam(learning_rate=lr, parameters=full.parameters())
                for _ in range(epochs):
                    for s in range(0, len(seed_y), batch_size):
                        loss = F.binary_cross_entropy(
                            full(*[x[s:s + batch_size] for x in seed_t]), seed_yt[s:s + batch_size])
                        loss.backward()
                        optimizer.step()
                        optimizer.clear_grad()
                with paddle.no_grad():
                    for s in range(0, len(cand_y), batch_size):
                        full(*[x[s:s + batch_size] for x in cand_t]).numpy()
                ref.append(time.perf_counter() - start)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return ours, ref, rss_ours


def campaign_row(what, ours, ref):
    o = statistics.median(ours)
    r = statistics.median(ref) if ref else None
    return "| %s | %s | %.3f | %s |" % (what, "-" if r is None else "%.3f" % r, o,
                                        "-" if r is None else "%.1fx" % (r / o))


def random_inputs(rng, shape, max_idxs):
    """Random (static, sequence, lengths, ad) int64 arrays of leading `shape`."""
    import numpy as np
    from metaheac import schema
    static_max, sequence_max, ad_max = max_idxs
    shape = tuple(shape)
    static = np.stack([rng.integers(0, m + 1, shape) for m in static_max], axis=-1)
    sequence = np.concatenate(
        [rng.integers(0, m + 1, shape + (f.width,))
         for f, m in zip(schema.SEQUENCE_FIELDS, sequence_max)], axis=-1)
    lengths = np.stack([rng.integers(0, f.width + 1, shape) for f in schema.SEQUENCE_FIELDS],
                       axis=-1)
    ad = np.stack([rng.integers(0, m + 1, shape) for m in ad_max], axis=-1)
    return [static, sequence, lengths, ad]


def _maxrss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _load():
    return "%.2f %.2f %.2f" % os.getloadavg()


if __name__ == "__main__":
    main()
