"""Fault: process() returns bad audio while armed. The arm file (this file's
name plus ".armed") says which kind:

    nan       NaN samples            inf     +/-Inf samples
    denormal  subnormal samples      huge    finite but absurd (1e30)
    shape     an array of the wrong shape
    dtype     float64 instead of float32

Persistent while the arm file exists; the next block after it is removed
is processed normally (x 0.5, like gain.py).
"""
import numpy as np

ARMED = __file__ + ".armed"


def _armed_kind():
    try:
        with open(ARMED) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def process(block, ctx):
    kind = _armed_kind()
    if kind == "nan":
        block[:, ::2] = np.nan
    elif kind == "inf":
        block[0, :] = np.inf
        block[-1, :] = -np.inf
    elif kind == "denormal":
        block[:] = np.float32(1e-41)  # below float32's smallest normal, 1.2e-38
    elif kind == "huge":
        block[:] = np.float32(1e30)
    elif kind == "shape":
        return np.zeros((block.shape[0], block.shape[1] + 1), dtype=np.float32)
    elif kind == "dtype":
        return block.astype(np.float64) * 0.5
    else:
        block *= 0.5
