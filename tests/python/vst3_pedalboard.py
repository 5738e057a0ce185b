"""Outboard.vst3 in Spotify's pedalboard, a third-party VST3 host.

Run by tests/tests/vst3_pedalboard.rs, one check per call:

    python3 tests/python/vst3_pedalboard.py CHECK BUNDLE.vst3 SCRATCH_DIR

Each check exits non-zero (an AssertionError and its traceback) when the
plugin does not hold. `examples/python` must be on PYTHONPATH (for
outboard_state). OUTBOARD_SCRIPTS_HOST is unset: the plugin finds its
scripts host inside the bundle.

What pedalboard does that the checks rely on: it compensates the latency
the plugin reports (it feeds that many samples more and drops the first
ones), so its output is aligned with its input; it runs the plugin with
VST3's offline process mode (CLAP render offline: the plugin waits for
every script result); it resets the plugin before each call (the script's
ctx.time starts at 0 again); it activates with the call's buffer size as
the maximum block (at most 8192 by default), from which the plugin's
latency follows.
"""

import os
import sys
import time

import numpy as np
import pedalboard
import outboard_state

RATE = 48000
BLOCK = 64
MAX_LATENCY_BLOCKS = 64

# Memoryless but different per channel and nonlinear: any misaligned or
# dry sample shows.
SHAPER = """import numpy as np

def process(block, ctx):
    block[0] *= 0.5
    block[1] = np.tanh(2.0 * block[1])
"""

# Depends on the absolute sample index: proves ctx.time and the alignment.
RAMP = """import numpy as np

def process(block, ctx):
    t = ctx.time + np.arange(block.shape[1])
    block *= ((t % 1000) / 1000.0).astype(np.float32)
"""


def shaper(x):
    y = x.copy()
    y[0] *= 0.5
    y[1] = np.tanh(2.0 * y[1])
    return y


def ramp(x):
    t = np.arange(x.shape[1])
    return x * ((t % 1000) / 1000.0).astype(np.float32)


def signal(seconds=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((2, int(RATE * seconds))) * 0.2).astype(np.float32)


def expected_latency(buffer_size):
    """What the plugin reports for a host whose largest block is buffer_size."""
    blocks = min(-(-buffer_size // BLOCK) + 1, MAX_LATENCY_BLOCKS)
    return blocks * BLOCK


def assert_exact(y, ref, what):
    assert y.shape == ref.shape, f"{what}: shape {y.shape}, expected {ref.shape}"
    if not np.array_equal(y, ref):
        bad = np.argwhere(y != ref)
        c, t = bad[0]
        raise AssertionError(
            f"{what}: {len(bad)} samples differ, first at channel {c}, frame {t}: {y[c, t]!r} != {ref[c, t]!r}"
        )


def load(bundle):
    plugin = pedalboard.load_plugin(bundle)
    assert plugin.name == "Outboard", plugin.name
    assert plugin.is_effect and not plugin.is_instrument
    return plugin


def write(scratch, name, source):
    path = os.path.join(scratch, name)
    with open(path, "w") as f:
        f.write(source)
    return path


def check_script_through_state(bundle, scratch):
    """A script given through raw_state (the plugin's own state format, built
    here and by Rust identically) is heard exactly, at every buffer size,
    aligned by the latency pedalboard reads from the plugin; workers start
    from the bundle without OUTBOARD_SCRIPTS_HOST."""
    assert "OUTBOARD_SCRIPTS_HOST" not in os.environ
    state = outboard_state.encode(SHAPER, "shaper.py", "", {"mix": 1.0, "bypass": 0.0})
    with open(os.path.join(scratch, "rust_state.bin"), "rb") as f:
        rust_state = f.read()
    assert state == rust_state, "outboard_state.encode writes what outboard_plugin::state::PluginState writes"
    plugin = load(bundle)
    plugin.raw_state = outboard_state.to_raw_state(state)
    got = outboard_state.get_state(plugin)
    assert got["name"] == "shaper.py" and got["source"] == SHAPER and got["path"] == "", got
    x = signal()
    for buffer_size in (8192, 512, 100, 64, 7):
        y = plugin(x, RATE, buffer_size=buffer_size)
        assert plugin.reported_latency_samples == expected_latency(buffer_size), (
            buffer_size,
            plugin.reported_latency_samples,
        )
        assert_exact(y, shaper(x), f"buffer size {buffer_size}")
    # A buffer shorter than pedalboard's default block: the block is the buffer.
    short = x[:, :1000]
    y = plugin(short, RATE)
    assert plugin.reported_latency_samples == expected_latency(1000)
    assert_exact(y, shaper(short), "a 1000-frame buffer")
    # The time the script sees starts at 0 for each call (pedalboard resets),
    # sample-accurately.
    plugin.raw_state = outboard_state.to_raw_state(outboard_state.encode(RAMP, "ramp.py"))
    for buffer_size in (8192, 100):
        assert_exact(plugin(x, RATE, buffer_size=buffer_size), ramp(x), f"ramp at buffer size {buffer_size}")


def check_followed_file(bundle, scratch):
    """A state with a script path: the instance follows the file (modules
    beside it import, edits are heard, the state carries the latest text)."""
    write(scratch, "gains.py", "LEFT = 0.5\nRIGHT = 0.25\n")
    source = "import gains\n\ndef process(block, ctx):\n    block[0] *= gains.LEFT\n    block[1] *= gains.RIGHT\n"
    path = write(scratch, "followed.py", source)
    plugin = load(bundle)
    outboard_state.set_script(plugin, path)
    state = outboard_state.get_state(plugin)
    assert state["path"] == path and state["name"] == "followed.py" and state["source"] == source, state
    x = signal(0.5)
    ref = x * np.array([[0.5], [0.25]], dtype=np.float32)
    assert_exact(plugin(x, RATE), ref, "the followed file")

    edited = "def process(block, ctx):\n    block *= 0.125\n"
    time.sleep(0.05)
    write(scratch, "followed.py", edited)
    deadline = time.monotonic() + 10.0
    while True:
        y = plugin(x, RATE)
        if np.array_equal(y, x * np.float32(0.125)):
            break
        assert time.monotonic() < deadline, "the edit was not heard within 10 s"
        time.sleep(0.2)
    state = outboard_state.get_state(plugin)
    assert state["source"] == edited and state["path"] == path, "a state saved while following carries the latest text"

    # The same state where the file does not exist: the saved source runs.
    os.remove(path)
    other = load(bundle)
    other.raw_state = plugin.raw_state
    assert_exact(other(x, RATE), x * np.float32(0.125), "the saved copy of a missing file")


def check_parameters(bundle, scratch):
    """Parameters by name with their text; Mix, Bypass and a script knob
    reach the audio exactly."""
    plugin = load(bundle)
    names = list(plugin.parameters.keys())
    for name in ("mix", "dsp_load", "bypass", "p1", "p2", "p3", "p4", "late_results"):
        assert name in names, names
    script = "def process(block, ctx):\n    block *= ctx.params['p1']\n"
    plugin.raw_state = outboard_state.to_raw_state(outboard_state.encode(script, "knob.py", "", {"p1": 0.5}))
    mix, bypass = plugin.parameters["mix"], plugin.parameters["bypass"]
    assert mix.name == "Mix" and bypass.name == "Bypass"
    assert plugin.mix == 100.0 and mix.string_value == "100.0 %", (plugin.mix, mix.string_value)
    assert bypass.type is bool and not plugin.bypass, (bypass.type, plugin.bypass)
    assert plugin.parameters["dsp_load"].string_value == "0 terms", plugin.parameters["dsp_load"].string_value
    x = signal(0.5)
    assert_exact(plugin(x, RATE), x * np.float32(0.5), "P1 = 0.5 read by the script")

    plugin.p1 = 0.25
    assert_exact(plugin(x, RATE), x * np.float32(plugin.parameters["p1"].raw_value), "P1 set by name")

    plugin.mix = 25.0
    assert mix.string_value == "25.0 %", mix.string_value
    m = np.float32(mix.raw_value)
    wet = x * np.float32(plugin.parameters["p1"].raw_value)
    assert_exact(plugin(x, RATE), m * wet + (np.float32(1.0) - m) * x, "Mix 25 %")

    plugin.bypass = True
    assert plugin.bypass and bypass.string_value == "On", (plugin.bypass, bypass.string_value)
    assert_exact(plugin(x, RATE), x, "bypassed: the input, at the same latency")
    plugin.bypass = False
    assert_exact(plugin(x, RATE), m * wet + (np.float32(1.0) - m) * x, "bypass off again")


def check_state_round_trip(bundle, scratch):
    """raw_state carries the plugin's state unchanged: load-then-save gives
    the same bytes, a second instance loaded from it sounds the same, and
    Rust reads what pedalboard saved."""
    params = {"mix": 0.75, "dsp_load": 0.0, "bypass": 0.0, "p1": 0.5, "p2": 0.25, "p3": 0.0, "p4": 1.0}
    script = "def process(block, ctx):\n    block *= ctx.params['p2']\n"
    state = outboard_state.encode(script, "quarter.py", "", params)
    plugin = load(bundle)
    plugin.raw_state = outboard_state.to_raw_state(state)
    assert outboard_state.from_raw_state(plugin.raw_state) == state, "load then save: the same bytes"
    x = signal(0.5)
    y = plugin(x, RATE)
    m = np.float32(0.75)
    assert_exact(y, m * (x * np.float32(0.25)) + (np.float32(1.0) - m) * x, "the state's parameters and script")

    # Parameters set by name are in the state once the plugin has processed
    # (VST3 hands them to the plugin with the next block).
    plugin.p2 = 0.5
    plugin(x[:, :256], RATE)
    saved = plugin.raw_state
    decoded = outboard_state.get_state(plugin)
    assert decoded["params"][4] == plugin.parameters["p2"].raw_value, decoded["params"]
    with open(os.path.join(scratch, "saved_state.bin"), "wb") as f:
        f.write(outboard_state.from_raw_state(saved))

    other = load(bundle)
    other.raw_state = saved
    assert other.raw_state == saved, "a second instance saves what it loaded"
    assert other.p2 == plugin.p2 and other.mix == plugin.mix, (other.p2, plugin.p2, other.mix, plugin.mix)
    assert_exact(other(x, RATE), plugin(x, RATE), "the restored instance sounds the same")

    # A damaged state is refused; the instance keeps what it had.
    damaged = bytearray(outboard_state.from_raw_state(saved))
    damaged[30] ^= 0xFF
    try:
        other.raw_state = outboard_state.to_raw_state(bytes(damaged))
    except Exception:
        pass
    assert other.raw_state == saved, "a refused state changes nothing"


def check_chain(bundle, scratch):
    """Outboard between pedalboard's own effects, compared with each stage
    applied on its own (pedalboard runs a chain stage by stage)."""
    outboard = load(bundle)
    outboard.raw_state = outboard_state.to_raw_state(outboard_state.encode(SHAPER, "shaper.py"))
    board = pedalboard.Pedalboard(
        [
            pedalboard.Gain(gain_db=-6.0),
            outboard,
            pedalboard.Gain(gain_db=3.0),
            pedalboard.Reverb(room_size=0.3, wet_level=0.2),
        ]
    )
    x = signal(1.0, seed=3)
    y = board(x, RATE)
    ref = pedalboard.Gain(gain_db=-6.0)(x, RATE)
    ref = shaper(ref)
    ref = pedalboard.Gain(gain_db=3.0)(ref, RATE)
    ref = pedalboard.Reverb(room_size=0.3, wet_level=0.2)(ref, RATE)
    assert_exact(y, ref, "Gain, Outboard, Gain, Reverb")


def check_offline_waits(bundle, scratch):
    """pedalboard renders offline (VST3 kOffline, CLAP render offline): a
    script slower than real time is waited for, not played dry."""
    script = "import time\n\ndef process(block, ctx):\n    time.sleep(0.003)\n    block *= 0.5\n"
    plugin = load(bundle)
    plugin.raw_state = outboard_state.to_raw_state(outboard_state.encode(script, "slow.py"))
    x = signal(0.4)
    started = time.monotonic()
    y = plugin(x, RATE, buffer_size=256)
    took = time.monotonic() - started
    blocks = x.shape[1] // BLOCK
    assert took > blocks * 0.003, f"{took:.2f} s for {blocks} blocks of 3 ms: not waited for?"
    assert_exact(y, x * np.float32(0.5), "a slow script, rendered offline")


def check_errors_are_said(bundle, scratch):
    """The VST3 wrapper drops CLAP log messages on Linux: the plugin's
    messages go to stderr instead (the Rust test reads them), and a broken
    script leaves the audio dry and exact."""
    path = write(scratch, "broken.py", "def process(block, ctx)\n    block *= 0.5\n")
    plugin = load(bundle)
    outboard_state.set_script(plugin, path)
    x = signal(0.25)
    assert_exact(plugin(x, RATE), x, "a script that does not compile: dry")
    time.sleep(0.5)


CHECKS = {name[len("check_") :]: f for name, f in globals().items() if name.startswith("check_")}

if __name__ == "__main__":
    check, bundle, scratch = sys.argv[1:4]
    CHECKS[check](bundle, scratch)
    print(f"{check}: ok (pedalboard {pedalboard.__version__})")
