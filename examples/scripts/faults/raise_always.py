"""Fault: process() raises on every call while armed (this file's name plus
".armed" exists). Persistent by design: the track plays dry and counts a
script error per block, the log shows the traceback once and then a count,
and the worker is not restarted (nothing is wrong with it). Once the arm
file is gone the next block is processed again.
"""
import os

ARMED = __file__ + ".armed"


def process(block, ctx):
    if os.path.exists(ARMED):
        raise RuntimeError("raise_always.py is armed")
    block *= 0.5
