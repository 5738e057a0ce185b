"""Outboard.vst3 in Spotify's pedalboard: how long a numpy script takes to
process a buffer through the plugin (out of process, in 64-frame blocks
through shared memory), against pedalboard's own Gain in the same run and
against the same script called directly in Python on the whole buffer.

    cargo xtask bundle
    python3 examples/bench/pedalboard_bench.py [--bundle target/bundled/Outboard.vst3] \\
        [--seconds 60] [--rate 48000] [--buffer-size 8192] [--repeat 5] [--check]

Prints one line per measurement (best of --repeat runs, after one warm-up
call) and a JSON summary. --check also asserts that the plugin's output is
the direct call's, sample for sample (pedalboard compensates the latency).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "examples", "python"))

import outboard_state  # noqa: E402
import pedalboard  # noqa: E402

# The script: a numpy soft clipper, memoryless, so the plugin's block-by-block
# result equals one call on the whole buffer.
SCRIPT = '''"""Soft clipper: tanh drive, level kept."""
import numpy as np

DRIVE = np.float32(3.0)
NORM = np.float32(1.0 / np.tanh(3.0))


def process(block, ctx):
    np.tanh(block * DRIVE, out=block)
    block *= NORM
'''


class DirectContext:
    """The little of `ctx` the script reads, for calling it directly."""

    def __init__(self, rate, channels, frames):
        self.rate, self.channels, self.frames = rate, channels, frames
        self.params, self.state, self.block, self.time = {}, {}, 0, 0


def best_of(repeat, run):
    run()  # warm-up: activation, worker start, first numpy calls
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - started)
    return min(times), out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=os.path.join(ROOT, "target", "bundled", "Outboard.vst3"))
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=int, default=48000)
    parser.add_argument("--buffer-size", type=int, default=8192)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()

    frames = int(args.seconds * args.rate)
    x = (np.random.default_rng(1).standard_normal((2, frames)) * 0.25).astype(np.float32)

    gain = pedalboard.Gain(gain_db=-3.0)
    t_gain, _ = best_of(args.repeat, lambda: gain(x, args.rate, buffer_size=args.buffer_size))

    # The bundle holds Outboard and Outboard Instrument: name the effect.
    outboard = pedalboard.load_plugin(args.bundle, plugin_name="Outboard")
    outboard.raw_state = outboard_state.to_raw_state(outboard_state.encode(SCRIPT, "softclip.py"))
    t_plugin, y = best_of(args.repeat, lambda: outboard(x, args.rate, buffer_size=args.buffer_size))
    latency = outboard.reported_latency_samples

    namespace = {}
    exec(compile(SCRIPT, "softclip.py", "exec"), namespace)

    def direct():
        block = x.copy()
        namespace["process"](block, DirectContext(args.rate, 2, frames))
        return block

    t_direct, ref = best_of(args.repeat, direct)

    if args.check:
        assert np.array_equal(y, ref), "Outboard.vst3's output is not the script's"

    audio = frames / args.rate
    rows = [
        ("pedalboard Gain (in process, C++)", t_gain),
        ("Outboard.vst3, numpy soft clipper", t_plugin),
        ("the script called directly on the whole buffer", t_direct),
    ]
    print(
        f"{audio:.0f} s of stereo float32 at {args.rate} Hz, buffer_size {args.buffer_size}, "
        f"best of {args.repeat} (pedalboard {pedalboard.__version__}, numpy {np.__version__}, "
        f"Outboard latency {latency} samples)"
    )
    for what, t in rows:
        print(f"  {what:<50} {t * 1000:9.1f} ms   {audio / t:8.0f}x real time")
    summary = {
        "seconds": audio,
        "rate": args.rate,
        "buffer_size": args.buffer_size,
        "latency_samples": latency,
        "gain_s": t_gain,
        "outboard_s": t_plugin,
        "direct_s": t_direct,
        "checked": args.check,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
