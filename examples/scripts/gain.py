"""The simplest audio-rate script: scales the block in place by the track's
`gain` parameter (default 0.5 when the host sets none)."""


def setup(ctx):
    ctx.log("gain script ready on", ctx.channels, "channels at", ctx.rate, "Hz")


def process(block, ctx):
    gain = ctx.params.get("gain") or 0.5
    block *= gain
