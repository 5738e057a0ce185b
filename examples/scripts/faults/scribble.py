"""Fault: a hostile peer. Once armed (this file's name plus ".armed";
one-shot), the script finds its worker's shared region (the memfd the host
handed down, "/memfd:outboard-region" in /proc/self/fd), maps it with
Python's mmap and writes random bytes over all of it, again and again for
a second: header, heartbeat, doorbell, every ring's positions and slots.
(Once would not do: the worker's own code, running again, would rewrite
valid positions over some of the garbage.) The host must notice from what
it reads (it validates every position and length), play dry, and replace
the worker with one on a fresh region.
"""
import mmap
import os
import time

ARMED = __file__ + ".armed"


def _own_region_fd():
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("/memfd:outboard-region"):
                return int(name)
        except OSError:
            pass  # the listing's own descriptor, already closed
    raise RuntimeError("no outboard-region memfd in /proc/self/fd")


def process(block, ctx):
    if os.path.exists(ARMED):
        os.remove(ARMED)
        with mmap.mmap(_own_region_fd(), 0) as region:  # MAP_SHARED, read-write
            until = time.monotonic() + 1.0
            while time.monotonic() < until:
                region[:] = os.urandom(len(region))
    block *= 0.5
