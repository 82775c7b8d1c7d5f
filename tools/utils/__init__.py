"""Helpers of tools/trainer.py and infer.py; the model folder above tools/ goes on the path."""
import os
import sys
import warnings

from . import cpu

cpu.configure()  # before anything imports Paddle

# Paddle warns at import that ccache (a C++ build cache) is missing; nothing here compiles.
warnings.filterwarnings("ignore", message="No ccache found")

MODEL_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if MODEL_DIR not in sys.path:
    sys.path.insert(0, MODEL_DIR)
