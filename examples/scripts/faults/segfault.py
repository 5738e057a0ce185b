"""Fault: the worker dies of SIGSEGV, as a buggy C extension would make it:
ctypes reads address 0.

Plays like gain.py (x 0.5) until armed by this file's name plus ".armed";
one-shot (it removes the arm file first), so the restarted worker plays.
"""
import ctypes
import os

ARMED = __file__ + ".armed"


def process(block, ctx):
    if os.path.exists(ARMED):
        os.remove(ARMED)
        ctypes.string_at(0)  # SIGSEGV
    block *= 0.5
