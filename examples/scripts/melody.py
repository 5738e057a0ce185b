"""A generative melody: a seeded random walk over the A minor pentatonic
scale, one note every eighth at the transport's tempo (120 BPM in the demo,
which has no host transport), scheduled ahead from tick().

Runs on a track with a plucked voice. Edit it while the demo plays: the
change is heard within a second.
"""
import random

SCALE = [69, 72, 74, 76, 79, 81]  # A4 C5 D5 E5 G5 A5


def setup(ctx):
    ctx.state["rng"] = random.Random(7)
    ctx.state["step"] = 2
    ctx.state["next"] = 0  # sample time of the next note


def tick(ctx):
    eighth = int(ctx.transport.samples_per_beat / 2)
    end = ctx.time + ctx.frames
    # Catch up if the script started (or was reloaded) late.
    if ctx.state["next"] < ctx.time:
        ctx.state["next"] = (ctx.time // eighth + 1) * eighth
    while ctx.state["next"] < end:
        rng = ctx.state["rng"]
        ctx.state["step"] = max(0, min(len(SCALE) - 1, ctx.state["step"] + rng.choice([-2, -1, 1, 1, 2])))
        velocity = 0.8 if (ctx.state["next"] // eighth) % 4 == 0 else 0.55
        ctx.note(SCALE[ctx.state["step"]], velocity, 0.2, at=ctx.state["next"])
        ctx.state["next"] += eighth
