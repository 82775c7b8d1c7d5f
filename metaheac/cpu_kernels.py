"""The module's C++ kernels for the CPU, built on first use: one library of

- ``fused_lookup.cc``: the task-local embedding lookups and sequence pooling, forward and
  backward (``metaheac/fused_lookup.py`` says when the network uses them);
- ``fused_adam.cc``: Adam's update and the clearing of the gradients over all parameters
  at once, on every core (``metaheac/fused_adam.py``).

Paddle's C++ extension builder compiles them on first use, once per source and Paddle
version, into Paddle's extension directory (``PADDLE_EXTENSION_DIR``, by default
``~/.cache/paddle_extensions``), under a file lock so that the ranks of a distributed
run build them once. Where they cannot be built (no C++ compiler) a warning says why,
and the network and the optimizer keep Paddle's own ops.
"""
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

_HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = [os.path.join(_HERE, name) for name in ("fused_lookup.cc", "fused_adam.cc")]
HEADERS = [os.path.join(_HERE, "cpu_threads.h")]  # included by the sources
NAME = "metaheac_cpu_kernels"
# No contraction into fused multiply-adds: the kernels round as Paddle's own ops do.
COMPILE_FLAGS = ["-O3", "-ffp-contract=off"]

# (sources, PADDLE_EXTENSION_DIR) -> the built module, or None where it failed to build
_loaded = {}


def dense_float32_on_cpu(tensor):
    """Whether a kernel may index `tensor`'s memory as float32 values on the CPU."""
    return (tensor.place.is_cpu_place() and tensor.dtype == paddle.float32
            and tensor.is_dense())


def threads():
    """The threads a kernel splits its work over: the cores the matrix products are given
    (``MKL_NUM_THREADS``, set per process by tools/utils/cpu.py), else every core."""
    return max(1, int(os.environ.get("MKL_NUM_THREADS") or os.cpu_count() or 1))


def module():
    """The built kernels' module (built now if need be), or None if they cannot be built."""
    key = (tuple(SOURCES), os.environ.get("PADDLE_EXTENSION_DIR"))
    if key not in _loaded:  # hashing the sources once, not on every forward pass
        _loaded[key] = _load(build_directory())
    return _loaded[key]


def build_directory():
    """Where these sources, built by this Paddle and Python, live."""
    digest = hashlib.sha256()
    for path in SOURCES + HEADERS:
        with open(path, "rb") as source:
            digest.update(source.read())
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
        reason = reason[-1] if reason else type(error).__name__
        warnings.warn("the C++ kernels (%s) could not be built: %s; using Paddle's slower ops "
                      "instead" % (", ".join(SOURCES), reason))
        return None


def _build(directory):
    """Compile in a child process (which loads the library as it builds; this process
    loads it once, after), into a scratch directory that is then renamed: a run killed
    mid-build leaves no half-built library for the next one to load."""
    print("metaheac: building the C++ kernels once, into %s (about 30 s)" % directory,
          file=sys.stderr, flush=True)
    scratch = "%s.tmp-%d" % (directory, os.getpid())
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch)
    # The builder writes <name>/<name>.so and a Python module for it that loads the
    # library as <name>_pd_.so (the name its setup() installs it under).
    build = ("import os, shutil, sys, paddle.utils.cpp_extension as e\n"
             "name, out, sources = sys.argv[1], sys.argv[2], sys.argv[3].split(os.pathsep)\n"
             "e.load(name=name, sources=sources, build_directory=out, "
             "extra_cxx_cflags=sys.argv[4:], verbose=False)\n"
             "library = os.path.join(out, name, name)\n"
             "shutil.copyfile(library + '.so', library + '_pd_.so')\n")
    try:
        done = subprocess.run(
            [sys.executable, "-c", build, NAME, scratch, os.pathsep.join(SOURCES)] + COMPILE_FLAGS,
            capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError((done.stderr or done.stdout).strip())
        os.replace(scratch, directory)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
