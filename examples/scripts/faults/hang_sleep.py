"""Fault: the script hangs inside a C call (time.sleep) for a minute: no
CPU burnt, no Python bytecode run, no heartbeat either.

Plays like gain.py (x 0.5) until armed by this file's name plus ".armed";
one-shot (it removes the arm file first), so the restarted worker plays.
"""
import os
import time

ARMED = __file__ + ".armed"


def process(block, ctx):
    if os.path.exists(ARMED):
        os.remove(ARMED)
        time.sleep(60)
    block *= 0.5
