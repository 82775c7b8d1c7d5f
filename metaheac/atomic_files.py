"""Report files written whole or not at all: to a temporary name, then renamed.

A reader (or a run interrupted mid-write) never sees half a file: ``os.replace``
swaps the finished file in at once.
"""
import contextlib
import json
import math
import os

import numpy as np


@contextlib.contextmanager
def replacing(path):
    """Yields a temporary path to write; on success it replaces `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = "%s.tmp-%d" % (path, os.getpid())
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_json(obj, path):
    """`obj` as strict JSON: NaN (an undefined metric) becomes null."""
    with replacing(path) as temporary, open(temporary, "w") as f:
        json.dump(_strict(obj), f, indent=2, allow_nan=False)
        f.write("\n")


def write_csv(frame, path):
    with replacing(path) as temporary:
        frame.to_csv(temporary, index=False)


def save_figure(figure, path):
    with replacing(path) as temporary:
        figure.savefig(temporary, format="png", dpi=120, bbox_inches="tight")


def _strict(obj):
    if isinstance(obj, dict):
        return {str(k): _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj
