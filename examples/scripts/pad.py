"""A slow pad: an A minor chord every two seconds from tick(), through a numpy
tremolo in process(). Shows both hooks on one track."""
import numpy as np

CHORD = [57, 60, 64]  # A3 C4 E4


def setup(ctx):
    ctx.state["phase"] = 0.0
    ctx.state["next"] = 0


def tick(ctx):
    bar = int(ctx.rate * 2.0)
    if ctx.state["next"] < ctx.time:
        ctx.state["next"] = (ctx.time // bar + 1) * bar
    if ctx.state["next"] < ctx.time + ctx.frames:
        for pitch in CHORD:
            ctx.note(pitch, 0.22, 1.9, at=ctx.state["next"])
        ctx.state["next"] += bar


def process(block, ctx):
    frames = block.shape[1]
    step = 2.0 * np.pi * 4.0 / ctx.rate
    phase = ctx.state["phase"] + step * np.arange(frames)
    block *= (0.7 + 0.3 * np.sin(phase)).astype(np.float32)
    ctx.state["phase"] = float(phase[-1] + step) % (2.0 * np.pi)
