"""A numpy audio-rate effect: tremolo, a slow sine on the block's gain.

Parameters: `rate_hz` (default 5) and `depth` (0..1, default 0.5).
"""
import numpy as np


def setup(ctx):
    ctx.state["phase"] = 0.0


def process(block, ctx):
    frames = block.shape[1]
    rate_hz = ctx.params.get("rate_hz") or 5.0
    depth = ctx.params.get("depth") or 0.5
    step = 2.0 * np.pi * rate_hz / ctx.rate
    phase = ctx.state["phase"] + step * np.arange(frames)
    gain = (1.0 - depth / 2.0) + (depth / 2.0) * np.sin(phase)
    block *= gain.astype(np.float32)
    ctx.state["phase"] = float(phase[-1] + step) % (2.0 * np.pi)
