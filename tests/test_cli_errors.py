"""Bad input on the command line: one clear message, exit status 2, no hang, no Paddle trace."""
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

FAILING_READER = '''
from paddle.io import IterableDataset
from metaheac.data_files import DataError


class RecDataset(IterableDataset):
    def __init__(self, file_list, config):
        pass

    def __iter__(self):
        raise DataError("row 17 of part-3.pkl is broken")
        yield
'''


def run(script, *overrides, env=None):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, script), "-m", os.path.join(ROOT, "config.yaml"),
         "-o", *overrides], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("script, override, message", [
    ("tools/trainer.py", "runner.train_data_dir=no/such/dir", "runner.train_data_dir = .*no/such/dir: no such directory"),
    ("infer.py", "runner.test_data_dir=data/train", r"test data needs \['test_stage1', 'test_stage2'\]"),
    ("infer.py", "runner.infer_load_path=no/models", "no checkpoint at no/models/0"),
])
def test_missing_inputs_are_named(script, override, message, tmp_path):
    code, log = run(script, override, "runner.model_save_path=%s" % tmp_path)
    assert code == 2, log[-2000:]
    assert re.search(message, log), log[-2000:]
    assert "Traceback" not in log


def test_empty_data_directory_is_named(tmp_path):
    code, log = run("tools/trainer.py", "runner.train_data_dir=%s" % tmp_path)
    assert code == 2 and "the directory is empty" in log and "Traceback" not in log


def test_an_error_inside_the_reader_stops_the_run_at_once(tmp_path):
    (tmp_path / "failing_reader.py").write_text(FAILING_READER)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    code, log = run("tools/trainer.py", "runner.train_reader_path=failing_reader",
                    "runner.model_save_path=%s" % (tmp_path / "out"), env=env)
    assert code == 2, log[-2000:]
    assert "row 17 of part-3.pkl is broken" in log and "Traceback" not in log
