"""A deliberate GIL hog: a busy loop with allocation and garbage-collector
churn, like a sequencer's UI or a generative script that never rests.

`run()` never returns. Outboard runs it in a process of its own, where it can
only slow itself down; run inside the host's interpreter it takes the GIL
from every audio thread that needs Python.
"""
import gc


def churn():
    junk = [[i, str(i), (i, i)] for i in range(2000)]
    table = {i: [i] * 4 for i in range(500)}
    del junk, table
    gc.collect(0)


def run():
    while True:
        churn()


def tick(ctx):
    # As a track's script: a hi-hat every quarter note, when the worker
    # gets round to it.
    quarter = int(ctx.rate * 0.5)
    if ctx.time // quarter != (ctx.time + ctx.frames) // quarter:
        ctx.note(90, 0.15, 0.03, at=(ctx.time // quarter + 1) * quarter)


def process(block, ctx):
    # As a track's script: hog the worker on every block.
    for _ in range(20):
        churn()
