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
latency follows. It lists every parameter the VST3 has, hidden ones
too, under the name each has when asked (the wrapper passes a CLAP
parameter rescan on as a VST3 restart), so a script slot is script_K until
a declaration names it.

A check that hangs (the plugin and pedalboard deadlocked) is ended after
CHECK_SECONDS with every thread's stack on stderr.
"""

import faulthandler
import json
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


# A declared parameter, and the declaration its worker sends (what a saved
# state carries: the scripts host's JSON, byte for byte). Declared "index"
# i is script slot i (Script i, CLAP id 2 + i).
GAIN = '''"""Gain: one declared parameter."""
PARAMS = {"gain": dict(min=0.0, max=1.0, default=1.0)}


def process(block, ctx):
    block *= ctx.params["gain"]
'''
GAIN_DECLARED = (
    '{"params":[{"index":1,"name":"gain","min":0.0,"max":1.0,"default":1.0,"unit":"","scale":"linear",'
    '"step":null,"choices":null}],"instrument":false,"doc":"Gain: one declared parameter.","slot":0}'
)

# What the plugin's own parameters and its 32 script slots are listed as
# in pedalboard, hidden slots included: pedalboard lists every parameter
# the VST3 has, under the names it has now (a slot's declared name once a
# declaration is known), and the wrapper's MIDI controller mapping last.
OWN_PARAMETERS = ["mix", "dsp_load", "bypass", "late_results"]
SLOT_NAMES = [f"script_{k}" for k in range(1, 33)]
WRAPPER_PARAMETERS = ["midi_controller"]

# A declaration for the byte comparison with Rust only (never played):
# parameters on Script 1 and Script 3 (ids 3 and 5), one with choices.
DECLARED_FOR_BYTES = (
    '{"params":[{"index":1,"name":"cutoff","min":20.0,"max":20000.0,"default":1000.0,"unit":"Hz",'
    '"scale":"log","step":null,"choices":null},{"index":3,"name":"mode","min":0.0,"max":2.0,"default":1,'
    '"unit":"","scale":"linear","step":null,"choices":["low","band","high"]}],"instrument":false,'
    '"doc":"","slot":0}'
)
# What SHAPER's worker declares: nothing.
SHAPER_DECLARED = '{"params":[],"instrument":false,"doc":"","slot":0}'


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
    # The bundle holds two plugins (Outboard, Outboard Instrument): name one.
    plugin = pedalboard.load_plugin(bundle, plugin_name="Outboard")
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
    state = outboard_state.encode(SHAPER, "shaper.py", "", {"mix": 1.0, "bypass": 0.0}, declared=SHAPER_DECLARED)
    with open(os.path.join(scratch, "rust_state.bin"), "rb") as f:
        rust_state = f.read()
    assert state == rust_state, "outboard_state.encode writes what outboard_plugin::state::PluginState writes"
    # Declared parameters by name, on the ids their indices give.
    params = {"mix": 0.5, "bypass": 0.0, "cutoff": 0.25, "mode": 2.0}
    declared = outboard_state.encode(SHAPER, "shaper.py", "/a/shaper.py", params, "/a/venv", DECLARED_FOR_BYTES)
    with open(os.path.join(scratch, "rust_state_declared.bin"), "rb") as f:
        assert declared == f.read(), "the same with declared parameters"
    decoded = outboard_state.decode(declared)
    assert decoded["declared"] == DECLARED_FOR_BYTES and decoded["params"] == {0: 0.5, 2: 0.0, 3: 0.25, 5: 2.0}
    plugin = load(bundle)
    plugin.raw_state = outboard_state.to_raw_state(state)
    got = outboard_state.get_state(plugin)
    assert got["name"] == "shaper.py" and got["source"] == SHAPER and got["path"] == "", got
    assert got["version"] == 3 and got["declared"] == SHAPER_DECLARED, got
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
    """Parameters by name with their text. pedalboard lists the plugin's own
    and all 32 script slots, hidden ones too (script_1 ... script_32); a
    state that declares parameters names their slots, and a declared
    parameter set by that name reaches the script exactly; a slot the state
    leaves unset is the declared default; Mix and Bypass reach the audio
    exactly; a script given without a declaration names its parameters
    once the plugin has processed."""
    plugin = load(bundle)
    names = list(plugin.parameters.keys())
    assert names == OWN_PARAMETERS + SLOT_NAMES + WRAPPER_PARAMETERS, names
    for k, name in enumerate(SLOT_NAMES, 1):
        slot = plugin.parameters[name]
        assert (slot.name, slot.string_value, slot.raw_value) == (f"Script {k}", "0.000", 0.0), (name, slot)
    x = signal(0.5)

    # The declaration alone: Script 1 is "gain", at its default (unset).
    plugin.raw_state = outboard_state.to_raw_state(
        outboard_state.encode(GAIN, "gain.py", "", {"mix": 1.0, "bypass": 0.0}, declared=GAIN_DECLARED)
    )
    named = OWN_PARAMETERS + ["gain"] + SLOT_NAMES[1:] + WRAPPER_PARAMETERS
    assert list(plugin.parameters.keys()) == named, list(plugin.parameters.keys())
    gain = plugin.parameters["gain"]
    assert (gain.name, gain.string_value, gain.raw_value, plugin.gain) == ("gain", "1.000", 1.0, 1.0), gain
    assert_exact(plugin(x, RATE), x, "gain unset: its declared default, 1.0")

    # A value for Script 1 (id 3) in the state.
    state = outboard_state.encode(GAIN, "gain.py", "", {"mix": 1.0, "bypass": 0.0, "gain": 0.5}, declared=GAIN_DECLARED)
    assert outboard_state.decode(state)["params"][3] == 0.5
    plugin.raw_state = outboard_state.to_raw_state(state)
    gain = plugin.parameters["gain"]
    assert (gain.string_value, gain.raw_value, plugin.gain) == ("0.500", 0.5, 0.5), gain
    mix, bypass = plugin.parameters["mix"], plugin.parameters["bypass"]
    assert mix.name == "Mix" and bypass.name == "Bypass"
    assert plugin.mix == 100.0 and mix.string_value == "100.0 %", (plugin.mix, mix.string_value)
    assert bypass.type is bool and not plugin.bypass, (bypass.type, plugin.bypass)
    assert plugin.parameters["dsp_load"].string_value == "0 terms", plugin.parameters["dsp_load"].string_value
    assert_exact(plugin(x, RATE), x * np.float32(0.5), "gain = 0.5 from the state, read by the script")
    assert list(plugin.parameters.keys()) == named, "the same names after processing"

    # Set by its name (pedalboard maps the text "0.250" to the VST3 value).
    plugin.gain = 0.25
    g = gain.raw_value
    assert gain.string_value == "0.250" and plugin.gain == 0.25 and g == 0.25, (gain.string_value, plugin.gain, g)
    assert_exact(plugin(x, RATE), x * np.float32(g), "gain set by name")
    assert gain.raw_value == g and outboard_state.get_state(plugin)["params"][3] == g, "the plugin keeps it"

    plugin.mix = 25.0
    assert mix.string_value == "25.0 %", mix.string_value
    m = np.float32(mix.raw_value)
    wet = x * np.float32(g)
    assert_exact(plugin(x, RATE), m * wet + (np.float32(1.0) - m) * x, "Mix 25 %")
    assert plugin.mix == 25.0 and gain.raw_value == g, (plugin.mix, gain.raw_value)

    plugin.bypass = True
    assert plugin.bypass and bypass.string_value == "On", (plugin.bypass, bypass.string_value)
    assert_exact(plugin(x, RATE), x, "bypassed: the input, at the same latency")
    plugin.bypass = False
    assert_exact(plugin(x, RATE), m * wet + (np.float32(1.0) - m) * x, "bypass off again")

    # A script given without a declaration (set_script keeps the old one):
    # its own is known once the plugin has processed. "gain" keeps its slot
    # and value, the new name takes the next free slot, at its default.
    path = write(
        scratch,
        "levels.py",
        "import numpy as np\n\n"
        'PARAMS = {"level": dict(min=0.0, max=2.0, default=0.5), "gain": dict(min=0.0, max=1.0, default=1.0)}\n\n\n'
        "def process(block, ctx):\n    block *= np.float32(ctx.params['level']) * np.float32(ctx.params['gain'])\n",
    )
    outboard_state.set_script(plugin, path)
    plugin(x[:, :256], RATE)
    plugin.mix = 100.0  # after that call, not before (see the README's VST3 section)
    names = OWN_PARAMETERS + ["gain", "level"] + SLOT_NAMES[2:] + WRAPPER_PARAMETERS
    assert list(plugin.parameters.keys()) == names, list(plugin.parameters.keys())
    level = plugin.parameters["level"]
    assert (level.string_value, plugin.level, gain.raw_value) == ("0.500", 0.5, g), (level, gain.raw_value)
    assert_exact(plugin(x, RATE), x * (np.float32(0.5) * np.float32(g)), "level at its default, gain kept")
    plugin.level = 1.5
    v = level.raw_value
    assert level.string_value == "1.500" and v == 0.75, (level.string_value, v)
    assert_exact(plugin(x, RATE), x * (np.float32(2.0 * np.float32(v)) * np.float32(g)), "level set by name")


# Two declared parameters, for the round trip.
LEVELS = '''"""Two declared parameters."""
PARAMS = {
    "drive": dict(min=0.0, max=1.0, default=0.0),
    "level": dict(min=0.0, max=1.0, default=1.0),
}


def process(block, ctx):
    block *= ctx.params["level"]
'''
LEVELS_DECLARED = (
    '{"params":[{"index":1,"name":"drive","min":0.0,"max":1.0,"default":0.0,"unit":"","scale":"linear",'
    '"step":null,"choices":null},{"index":2,"name":"level","min":0.0,"max":1.0,"default":1.0,"unit":"",'
    '"scale":"linear","step":null,"choices":null}],"instrument":false,"doc":"Two declared parameters.","slot":0}'
)


def declaration(text):
    """A declaration as JSON, less the worker's slot (which names no more
    than the worker it came from)."""
    body = json.loads(text)
    body.pop("slot", None)
    return body


def check_state_round_trip(bundle, scratch):
    """raw_state carries the plugin's state unchanged, declared parameters
    and all: load-then-save gives the same bytes, a second instance loaded
    from it saves the same bytes and sounds the same, and Rust reads what
    pedalboard saved."""
    params = {"mix": 0.75, "dsp_load": 0.0, "bypass": 0.0, "drive": 1.0, "level": 0.25}
    state = outboard_state.encode(LEVELS, "levels.py", "", params, declared=LEVELS_DECLARED)
    assert outboard_state.decode(state)["params"] == {0: 0.75, 1: 0.0, 2: 0.0, 3: 1.0, 4: 0.25}
    plugin = load(bundle)
    plugin.raw_state = outboard_state.to_raw_state(state)
    assert outboard_state.from_raw_state(plugin.raw_state) == state, "load then save: the same bytes"
    assert plugin.drive == 1.0 and plugin.level == 0.25, (plugin.drive, plugin.level)
    x = signal(0.5)
    y = plugin(x, RATE)
    m = np.float32(0.75)
    assert_exact(y, m * (x * np.float32(0.25)) + (np.float32(1.0) - m) * x, "the state's parameters and script")

    # Parameters set by name are in the state once the plugin has processed
    # (VST3 hands them to the plugin with the next block).
    plugin.level = 0.5
    plugin(x[:, :256], RATE)
    saved = plugin.raw_state
    decoded = outboard_state.get_state(plugin)
    assert decoded["params"][4] == plugin.parameters["level"].raw_value == 0.5, decoded["params"]
    assert declaration(decoded["declared"]) == declaration(LEVELS_DECLARED), decoded["declared"]
    with open(os.path.join(scratch, "saved_state.bin"), "wb") as f:
        f.write(outboard_state.from_raw_state(saved))

    other = load(bundle)
    assert "level" not in other.parameters
    other.raw_state = saved
    assert other.raw_state == saved, "a second instance saves what it loaded"
    assert "level" in other.parameters, list(other.parameters.keys())
    assert (other.level, other.drive, other.mix) == (plugin.level, plugin.drive, plugin.mix), (
        (other.level, other.drive, other.mix),
        (plugin.level, plugin.drive, plugin.mix),
    )
    assert_exact(other(x, RATE), plugin(x, RATE), "the restored instance sounds the same")

    # A damaged state is refused; the instance keeps what it had.
    before = other.raw_state
    damaged = bytearray(outboard_state.from_raw_state(saved))
    damaged[30] ^= 0xFF
    try:
        other.raw_state = outboard_state.to_raw_state(bytes(damaged))
    except Exception:
        pass
    assert other.raw_state == before, "a refused state changes nothing"


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

# A check that has not ended by then is stuck (a deadlock between the
# plugin and its host): its threads' stacks go to stderr, and it exits 1.
CHECK_SECONDS = 240

if __name__ == "__main__":
    check, bundle, scratch = sys.argv[1:4]
    faulthandler.dump_traceback_later(CHECK_SECONDS, exit=True)
    CHECKS[check](bundle, scratch)
    print(f"{check}: ok (pedalboard {pedalboard.__version__})")
