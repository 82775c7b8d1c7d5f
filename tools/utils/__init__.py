"""Helpers of tools/trainer.py, infer.py and the other tools.

Importing this package puts the repository root on ``sys.path`` (once): a script run
as ``python tools/<name>.py`` then imports the model files and the ``metaheac``
package. The helpers that use Paddle import ``utils.cpu`` first, which sets the CPU
up before Paddle is imported.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
