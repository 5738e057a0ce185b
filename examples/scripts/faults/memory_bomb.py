"""Fault: a memory bomb. Once armed (this file's name plus ".armed"; one-shot),
process() hoards 64 MiB chunks, each written to so that they are really
resident, in a module-level list that is never freed, until the worker's
address-space limit (SupervisorConfig::memory_limit) stops it with a
MemoryError. Without that limit it would take the machine's memory.
"""
import os

ARMED = __file__ + ".armed"
CHUNK = 64 << 20
HOARD = []


def process(block, ctx):
    if os.path.exists(ARMED):
        os.remove(ARMED)
        while True:
            HOARD.append(b"\xff" * CHUNK)  # raises MemoryError at the limit
    block *= 0.5
