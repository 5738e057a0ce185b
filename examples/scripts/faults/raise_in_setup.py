"""Fault: setup() raises. The bench hot-swaps this file in over a running
script. The error is reported with its traceback, and process() still runs
on every block: it needs nothing setup() would have made, so the track
stays wet.
"""


def setup(ctx):
    raise RuntimeError("raise_in_setup.py: setup failed on purpose")


def process(block, ctx):
    block *= 0.5
