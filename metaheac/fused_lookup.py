"""The task-local embedding lookup as one C++ kernel on the CPU (fused_lookup.cc).

A forward pass on a task-local table looks up 63 ids per row. With Paddle's ops that
is three embedding lookups, a batched product pooling the sequence fields and a
concatenation: on the CPU they and their gradients take two to four times as long as
this kernel, which gathers, pools and scatters the rows in one pass (tools/bench.py
prints the step with each). It computes the same sums in another order, so results agree to
float rounding (tests/test_fused_lookup.py).

Paddle's C++ extension builder compiles it on first use, once per source and Paddle
version, into Paddle's extension directory (``PADDLE_EXTENSION_DIR``, by default
``~/.cache/paddle_extensions``), under a file lock so that the ranks of a distributed
run build it once. Where it cannot be built (no C++ compiler) a warning says why and
the forward pass keeps Paddle's ops; off the CPU it is never used.
"""
import contextlib
import fcntl
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import warnings

import paddle
import paddle.utils.cpp_extension

from metaheac import schema

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fused_lookup.cc")
NAME = "metaheac_fused_lookup"
COMPILE_FLAGS = ["-O3"]

# (source, PADDLE_EXTENSION_DIR) -> the kernel's module, or None where it failed to build
_loaded = {}
_disabled = []  # non-empty inside ``disabled()``


def applies(table, inputs):
    """Whether the kernel computes this lookup: in eager mode, of a float32 table on the
    CPU, with ``lookup``'s `inputs` as B x width int64 tensors."""
    return (not _disabled and paddle.in_dynamic_mode() and table.place.is_cpu_place()
            and table.dtype == paddle.float32
            and all(x.dtype == paddle.int64 and x.ndim == 2 for x in inputs)
            and kernel() is not None)


def lookup(table, static_ids, sequence_ids, sequence_lengths, ad_ids):
    """The user fields, B x 14 x E (static, then the sequence fields' means over their
    lengths), and the ad fields, B x 6 x E, of ids that index `table`."""
    return kernel().metaheac_fused_lookup(table, static_ids, sequence_ids, sequence_lengths,
                                          ad_ids, list(schema.SEQUENCE_WIDTHS))


@contextlib.contextmanager
def disabled():
    """Paddle's ops in place of the kernel within the block, to compare the two."""
    _disabled.append(True)
    try:
        yield
    finally:
        _disabled.pop()


def kernel():
    """The built kernel's module (built now if need be), or None if it cannot be built."""
    key = (SOURCE, os.environ.get("PADDLE_EXTENSION_DIR"))
    if key not in _loaded:  # hashing the source once, not on every forward pass
        _loaded[key] = _load(build_directory())
    return _loaded[key]


def build_directory():
    """Where this source, built by this Paddle and Python, lives."""
    with open(SOURCE, "rb") as source:
        digest = hashlib.sha256(source.read())
    for part in (paddle.__version__, sys.version, " ".join(COMPILE_FLAGS)):
        digest.update(part.encode())
    return os.path.join(paddle.utils.cpp_extension.get_build_directory(),
                        "%s_%s" % (NAME, digest.hexdigest()[:16]))


def _load(directory):
    module_file = os.path.join(directory, NAME, NAME + ".py")
    try:
        os.makedirs(os.path.dirname(directory), exist_ok=True)
        with open(directory + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not os.path.exists(module_file):
                _build(directory)
        spec = importlib.util.spec_from_file_location(NAME, module_file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    except Exception as error:  # noqa: BLE001  (any failure to build leaves Paddle's ops)
        reason = str(error).strip().splitlines()
        warnings.warn("the fused lookup kernel (%s) could not be built: %s; using Paddle's "
                      "slower ops instead" % (SOURCE, reason[-1] if reason else type(error).__name__))
        return None


def _build(directory):
    """Compile in a child process (which loads the kernel as it builds; this process
    loads it once, after), into a scratch directory that is then renamed: a run killed
    mid-build leaves no half-built kernel for the next one to load."""
    print("metaheac: building the fused lookup kernel once, into %s (about 30 s)" % directory,
          file=sys.stderr, flush=True)
    scratch = "%s.tmp-%d" % (directory, os.getpid())
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch)
    # The builder writes <name>/<name>.so and a Python module for it that loads the
    # library as <name>_pd_.so (the name its setup() installs it under).
    build = ("import os, shutil, sys, paddle.utils.cpp_extension as e\n"
             "name, source, out = sys.argv[1:4]\n"
             "e.load(name=name, sources=[source], build_directory=out, "
             "extra_cxx_cflags=sys.argv[4:], verbose=False)\n"
             "library = os.path.join(out, name, name)\n"
             "shutil.copyfile(library + '.so', library + '_pd_.so')\n")
    try:
        done = subprocess.run([sys.executable, "-c", build, NAME, SOURCE, scratch] + COMPILE_FLAGS,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError((done.stderr or done.stdout).strip())
        os.replace(scratch, directory)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
