"""Fault: the script hangs in a pure-Python busy loop, holding the GIL and
a core. Only the supervisor's heartbeat timeout can end it (by killing the
worker); meanwhile its priority is lowered so it delays no other worker.

Plays like gain.py (x 0.5) until armed by this file's name plus ".armed";
one-shot (it removes the arm file first), so the restarted worker plays.
"""
import os

ARMED = __file__ + ".armed"


def process(block, ctx):
    if os.path.exists(ARMED):
        os.remove(ARMED)
        while True:
            pass
    block *= 0.5
