"""A low drone for the DSP-load track: one long A2 every four seconds, and a
gentle gain in process(). The track's partial-sum DSP load is set from the
demo's command line (--dsp-terms)."""


def setup(ctx):
    ctx.state["next"] = 0


def tick(ctx):
    length = int(ctx.rate * 4.0)
    if ctx.state["next"] < ctx.time:
        ctx.state["next"] = (ctx.time // length + 1) * length
    if ctx.state["next"] < ctx.time + ctx.frames:
        ctx.note(45, 0.35, 3.9, at=ctx.state["next"])
        ctx.state["next"] += length


def process(block, ctx):
    block *= 0.9
