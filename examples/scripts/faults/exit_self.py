"""Fault: the worker process exits on its own, as a script calling
os._exit (or a C extension calling exit) would.

Plays like gain.py (x 0.5) until `outboard-bench faults` arms it by creating
this file's name plus ".armed". One-shot: it removes the arm file as it
fires, so the worker the supervisor starts in its place plays again.
"""
import os

ARMED = __file__ + ".armed"


def process(block, ctx):
    if os.path.exists(ARMED):
        os.remove(ARMED)
        os._exit(1)  # no clean-up, no exception: the process is just gone
    block *= 0.5
