"""A second-order Butterworth low-pass from scipy.signal, its filter state
carried from block to block (lfilter's `zi`), so the output is the same as
filtering the whole signal at once.

Needs scipy in the script's Python environment (see scipy_biquad.requirements.txt
and the README, "Scripts with your own packages"): a `.venv` beside this file,
one the instance names, or $OUTBOARD_PYTHON_ENV.
"""

import numpy as np
from scipy import signal

CUTOFF_HZ = 1000.0


def setup(ctx):
    # Importing scipy and designing the filter happen here, at load, while
    # the instance starts (or the previous version keeps playing): never on
    # an audio block.
    b, a = signal.butter(2, CUTOFF_HZ, fs=ctx.rate)
    ctx.state["ba"] = (b, a)
    ctx.state["zi"] = np.zeros((ctx.channels, max(len(a), len(b)) - 1))


def process(block, ctx):
    if ctx.skipped:
        # Blocks this script never saw: the carried state no longer fits.
        ctx.state["zi"][:] = 0.0
    b, a = ctx.state["ba"]
    out, ctx.state["zi"] = signal.lfilter(b, a, block, axis=1, zi=ctx.state["zi"])
    return out.astype(np.float32)
