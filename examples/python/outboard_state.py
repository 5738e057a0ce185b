"""Outboard's plugin state from Python: give an Outboard.vst3 in pedalboard
(or any JUCE-based VST3 host) its script, read back what it runs.

Standard library only. Copy this file beside your own code, or put
`examples/python` on `sys.path`.

    import pedalboard, outboard_state
    fx = pedalboard.load_plugin("Outboard.vst3", plugin_name="Outboard")
    outboard_state.set_script(fx, "my_effect.py")      # follows the file
    outboard_state.get_state(fx)["name"]               # 'my_effect.py'

Two layers:

- The plugin's own state (what CLAP hosts save, and what the VST3 wrapper
  hands to VST3 hosts unchanged as its component state): `encode` and
  `decode`, the format of `outboard_plugin::state` (plugin/src/state.rs),
  version 3. Little-endian: magic `OUTBOARD`, version u32, flags u32 (0),
  parameter count u32, (id u32, value f64) per parameter in ascending id
  order, then the script's name, its source, the file it came from, the
  Python environment named for it (empty: the usual choice) and what the
  script declared (the scripts host's JSON, as its worker sent it; empty:
  nothing heard yet), each a u32 length and UTF-8 bytes, then an FNV-1a 64
  checksum of every byte before it. (Version 2 has no declaration, version
  1 only the name and the source; both are read.)
- pedalboard's `raw_state` for a VST3 (JUCE's format): `VC2!`, a u32 size,
  an XML document whose `<IComponent>` holds the component state in JUCE's
  base64 (`SIZE.` then 6 bits per character, least significant first, over
  `.A-Za-z0-9+`), and a NUL. `from_raw_state` and `to_raw_state` convert.

Parameters are saved by id as the host holds them: Mix 0-1, Bypass 0/1,
DSP load in terms; the 32 script slots (ids 3-34, slot k is id 3 + k) hold
the parameters the script declares (`PARAMS`), a continuous one as 0-1
across its range (linear or log), a stepped or choice one as its step
number (0, 1, ...). A slot with no value saved is unset: the script sees
its declared default. The declaration names the slots: in it, parameter
`"index": i` is slot i - 1, so id 2 + i (`param_ids` works that out).
"""

import json
import os
import struct
from xml.etree import ElementTree

MAGIC = b"OUTBOARD"
VERSION = 3
SLOTS = 32
FIRST_SLOT = 3
# Parameter ids by the names pedalboard gives them (stable forever): the
# script slots are listed as script_1 ... script_32 whatever they hold.
PARAM_IDS = {"mix": 0, "dsp_load": 1, "bypass": 2, **{f"script_{k + 1}": FIRST_SLOT + k for k in range(SLOTS)}}

_JUCE_MAGIC = b"VC2!"
_JUCE_BASE64 = ".ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+"
_JUCE_INDEX = {c: i for i, c in enumerate(_JUCE_BASE64)}


def _fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def param_ids(declared=""):
    """Parameter ids by name: `PARAM_IDS`, and each parameter a declaration
    (the JSON text of a state's `declared`) names, by its declared name."""
    ids = dict(PARAM_IDS)
    if declared:
        for p in json.loads(declared)["params"]:
            ids[p["name"]] = FIRST_SLOT + int(p["index"]) - 1
    return ids


def encode(source, name="script.py", path="", params=None, python_env="", declared=""):
    """The plugin's state bytes for a script, and parameters by name or id,
    as the host holds them (Mix 0-1, Bypass 0/1, a script slot 0-1 or its
    step number; names: those of `PARAM_IDS` and, with `declared`, the
    declared ones). Parameters left out keep their values when the state
    is loaded (script slots are unset: their declared defaults). `path`:
    the file the instance follows; `python_env`: a virtual environment's
    folder; `declared`: what the script declares (JSON text, as in a saved
    state; the plugin takes the slots' names and ranges from it until the
    script's worker says what it declares)."""
    ids = param_ids(declared)
    values = {}
    for key, value in (params or {}).items():
        values[ids[key] if isinstance(key, str) else int(key)] = float(value)
    out = bytearray(MAGIC)
    out += struct.pack("<III", VERSION, 0, len(values))
    for pid in sorted(values):
        out += struct.pack("<Id", pid, values[pid])
    for text in (name, source, path, python_env, declared):
        raw = text.encode("utf-8")
        out += struct.pack("<I", len(raw)) + raw
    out += struct.pack("<Q", _fnv1a64(out))
    return bytes(out)


def decode(data):
    """The plugin's state as a dict: version, params ({id: value}), name,
    source, path, python_env, declared (JSON text, or ""). Raises
    ValueError for anything but a whole, checksummed state."""
    data = bytes(data)
    if len(data) < 28 or data[:8] != MAGIC:
        raise ValueError("not an Outboard state")
    if struct.unpack_from("<Q", data, len(data) - 8)[0] != _fnv1a64(data[:-8]):
        raise ValueError("the state's checksum does not match")
    version, flags, count = struct.unpack_from("<III", data, 8)
    if version not in (1, 2, 3) or flags != 0:
        raise ValueError(f"state version {version} (flags {flags:#x}) is not known here")
    at = 20
    params = {}
    for _ in range(count):
        pid, value = struct.unpack_from("<Id", data, at)
        params[pid] = value
        at += 12
    texts = []
    for _ in range({1: 2, 2: 4, 3: 5}[version]):
        (length,) = struct.unpack_from("<I", data, at)
        if at + 4 + length > len(data) - 8:
            raise ValueError("the state is truncated")
        texts.append(data[at + 4 : at + 4 + length].decode("utf-8"))
        at += 4 + length
    if at != len(data) - 8:
        raise ValueError("the state has bytes past its end")
    texts += [""] * (5 - len(texts))
    return {
        "version": version,
        "params": params,
        "name": texts[0],
        "source": texts[1],
        "path": texts[2],
        "python_env": texts[3],
        "declared": texts[4],
    }


def _juce_base64_encode(data):
    bits = int.from_bytes(data, "little")
    chars = (len(data) * 8 + 5) // 6
    return f"{len(data)}." + "".join(_JUCE_BASE64[(bits >> (6 * i)) & 63] for i in range(chars))


def _juce_base64_decode(text):
    size, _, body = text.strip().partition(".")
    size = int(size)
    bits = 0
    for i, c in enumerate(body):
        bits |= _JUCE_INDEX[c] << (6 * i)
    return (bits & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


def from_raw_state(raw):
    """The plugin's state inside pedalboard's `raw_state` of a VST3."""
    raw = bytes(raw)
    if raw[:4] != _JUCE_MAGIC:
        raise ValueError("not a JUCE VST3 state (no VC2! header)")
    (size,) = struct.unpack_from("<I", raw, 4)
    root = ElementTree.fromstring(raw[8 : 8 + size].rstrip(b"\0"))
    component = root.find("IComponent")
    if component is None or not component.text:
        raise ValueError("the VST3 state has no component state")
    return _juce_base64_decode(component.text)


def to_raw_state(state):
    """pedalboard's `raw_state` for a VST3 whose component state is `state`."""
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?> <VST3PluginState><IComponent>'
        + _juce_base64_encode(bytes(state))
        + "</IComponent></VST3PluginState>"
    ).encode("utf-8")
    return _JUCE_MAGIC + struct.pack("<I", len(xml)) + xml + b"\0"


def get_state(plugin):
    """What an Outboard.vst3 in pedalboard runs: `decode` of its state."""
    return decode(from_raw_state(plugin.raw_state))


def set_script(plugin, path=None, source=None, name=None, follow=True):
    """Gives an Outboard.vst3 in pedalboard a script, keeping its parameters
    (and the declaration that names them: the new script's own replaces it
    once it has loaded, each value kept where its name stays).

    With `path` (and `follow`), the instance follows that file: edits are
    heard within a second, modules beside it import, and the state keeps
    the file's path and latest text. With `source`, it runs that text.
    """
    if path is not None:
        path = os.path.abspath(path)
        if source is None:
            with open(path, encoding="utf-8") as f:
                source = f.read()
        name = name or os.path.basename(path)
    if source is None:
        raise ValueError("set_script needs a path or a source")
    current = get_state(plugin)
    followed = path if (path and follow) else ""
    state = encode(
        source, name or "script.py", followed, current["params"], current["python_env"], current["declared"]
    )
    plugin.raw_state = to_raw_state(state)
