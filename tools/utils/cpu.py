"""CPU settings that must be in place before Paddle is imported.

* Matrix products on every core: Paddle sets OMP_NUM_THREADS to 1 when it is
  unset, and MKL reads its thread count once, at start-up. MKL_NUM_THREADS gives
  MKL's products the cores (shared among the processes of a
  ``paddle.distributed.launch`` run on this machine) while Paddle's other CPU
  kernels stay on one thread. Giving OpenMP itself two threads is slower here: its
  idle workers spin and take the core from the thread doing the next operation
  (tools/bench.py measures both).
* MKL's idle workers spin for 1 ms after a product, not the OpenMP default of 200 ms
  (``KMP_BLOCKTIME``): spinning, they took the other core from the threads of the
  optimizer's step (metaheac/fused_adam.py), which then ran no faster than on one.
* glibc's allocator keeps freed blocks of up to 32 MiB (``tune_malloc``).

A value the user set in the environment is kept. Importing this module applies
them, and quiets Paddle's import warning about ccache (a C++ build cache: nothing
here compiles); import it before Paddle.
"""
import ctypes
import os
import warnings


def configure():
    processes = int(os.environ.get("PADDLE_LOCAL_SIZE", "1") or 1)
    os.environ.setdefault("MKL_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    os.environ.setdefault("KMP_BLOCKTIME", "1")
    tune_malloc()


def tune_malloc():
    """Serve blocks up to 32 MiB (the most glibc allows) from the heap and keep freed
    memory there: Paddle allocates every tensor afresh, and a block above glibc's
    mmap threshold costs a page fault per 4 KiB on each use (~20 ms for 64 MiB)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)
                and libc.mallopt(m_trim_threshold, 1 << 30))


configure()
warnings.filterwarnings("ignore", message="No ccache found")
