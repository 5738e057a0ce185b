"""Realtime-mode runtime for outboard-scripts-host: one Script per track
slot, its hooks called once per block, every failure reported with file and
line on the host's log while the track falls back to dry.

Called from Rust with the GIL held.

Hooks a script may define (all optional), and exactly when they are called.
No hook is ever called at any other time: nothing here calls one to warm up,
probe or test a script.

    setup(ctx)            once when the script is loaded for a track (or the
                          track is given it in place of another file), and
                          again after each successful reload of its file,
                          before the worker answers that the script is loaded
                          (reloads: before its next block), so heavy
                          imports and setup cost land at load, not on an audio
                          block. ctx.block == 0, ctx.time == 0, ctx.skipped
                          == 0, and ctx.params at their current values: those
                          sent with the script at load (0.0 for any the host
                          did not send), those of the last block processed at
                          a reload. ctx.state is the same dict before and after
                          a reload.
    process(block, ctx)   exactly once per audio block the track sends, in
                          order. block: numpy float32 (channels, frames); edit
                          it in place, or return an array of the same
                          shape/dtype (an instrument's block comes zeroed: fill
                          it). ctx.block is the block's number, ctx.time its
                          first sample; ctx.params the declared parameters'
                          values at that sample (in their units), and
                          ctx.param_changes, ctx.events (the host's notes and
                          MIDI, with their offsets) and ctx.transport what the
                          host sent for this block. Notes, MIDI and parameter
                          moves it sends (ctx.note, ctx.note_on, ctx.note_off,
                          ctx.midi, ctx.set_param) at sample `at` (default
                          ctx.time) leave the plugin at `at` + its latency,
                          like the audio of that sample.
    tick(ctx)             once per block, right after process (whether or not
                          there is one), with ctx.block and ctx.time set L
                          blocks ahead (L = ctx.latency_blocks): what it sends
                          is scheduled at ctx.time or later, early enough for
                          a native voice (the demo's tracks) to play it on
                          time. ctx.block and ctx.time are restored after.
                          process and tick together may send at most
                          MAX_EVENTS_PER_BLOCK events per block.

Declared parameters: a module-level PARAMS dict (see `declare` and `Param`),
checked at each (re)load; a bad declaration is a script error with the file
and line of PARAMS, and the script then runs with none. Each declared name
keeps its index on the wire across reloads (`Context._declare`), which is
what keeps its host slot stable. `declaration(slot)` is what the worker
reports to the host after each load and reload.

A worker that falls behind (a slow block, a busy machine) runs the blocks
waiting for a track in order. A block whose result can no longer be played
(a block L or more newer has already arrived) still goes through process and
tick, so the script's state (a phase, a sample counter) sees it; its audio
is thrown away instead of sent (the track would drop it as stale), its
tick's events are sent (with the next result; the track applies them at
once, late). Only when more than L + 16 of a track's blocks are
waiting (CATCH_UP_BLOCKS in main.rs) are the oldest beyond that skipped
unseen; and a track whose ring is full sends none until there is room.

`ctx.skipped` tells the script: the number of this track's blocks it never
saw between the previous block it processed and this one (skipped by that
bound, or never sent). It is 0 normally, 0 for the first block after a
(re)load, and the same in a block's process and tick.

Every message about a track goes to the host's log as ONE stderr line (all
written by `emit`): the byte 0x1E, then compact JSON
{"track": <ctx.track, or null>, "level": "error"|"warning"|"info",
"text": <the whole message, newlines included>}, then "\n". Any other line a
worker writes is about the worker as a whole. Records: script errors
("error"; "outboard: script error in FILE:LINE (NAME, HOOK): ..." then the
traceback's last frames), their repeat counts ("warning"), reloads ("info"),
unreadable or oversized files ("error"), ctx.log(...) ("info", the ctx's
track) and outboard.log(...) ("info", the track whose code is running when
it is called: its import, setup, process or tick; null outside them).
"""

import collections
import importlib.util
import json
import math
import os
import re
import struct
import sys
import time
import traceback

import numpy as np

import outboard

PROCESSED, SCRIPT_ERROR, NO_PROCESS = 0, 1, 2
RELOAD_CHECK_SECONDS = 0.25
REPEAT_REPORT_SECONDS = 2.0
# Events a script may send per block (process and tick together); past
# this many the rest are dropped, with a report.
MAX_EVENTS_PER_BLOCK = 256
# Declared parameters a script may have (the plugin's slots).
MAX_DECLARED = 32
MAX_PARAM_NAME = 32
MAX_UNIT = 16
MAX_CHOICES = 128
# Event kinds, as the engine encodes them (outboard_engine::block::Event).
NOTE_ON, NOTE_OFF, NOTE_CHOKE, MIDI, PARAM_CHANGE, SET_PARAM = 1, 2, 3, 4, 5, 6
_KIND_NAMES = {NOTE_ON: "note_on", NOTE_OFF: "note_off", NOTE_CHOKE: "note_choke", MIDI: "midi"}
# Transport flags (outboard_engine::block::Transport).
_FROM_HOST, _MALFORMED, _PLAYING, _RECORDING, _LOOPING = 1, 2, 4, 8, 16
# A script is code; a bigger file is data pasted in by mistake, and compiling
# it would hold the worker, and every track on it, for seconds (a 50 MB list
# literal takes CPython 16 s): long past the heartbeat timeout, so the worker
# would be restarted, load the same file again, and be restarted again.
MAX_SCRIPT_BYTES = 512 << 10
# A report keeps the innermost frames of a traceback: where the error is.
MAX_TRACEBACK_FRAMES = 24
# The longest text of one record, in UTF-8 bytes: under what the engine keeps
# of a message (outboard_engine::wire::log::MAX_TEXT), so that what is cut
# here keeps the head line and the traceback's last frames.
MAX_RECORD_TEXT = 12 << 10
RECORD_MARK = "\x1e"
LEVELS = ("error", "warning", "info")

# The ctx of the track whose script code is running (its import, setup,
# process or tick), None between them: outboard.log attributes its messages
# to that track.
_current = None
_OWN_FILE = (lambda: 0).__code__.co_filename


def emit(track, level, text):
    """Writes one message on the host's log: ONE stderr line, the byte 0x1E
    followed by compact JSON and a newline,

        \\x1e{"track":7,"level":"error","text":"outboard: script error in ...\\nTraceback ..."}

    `track` is the track's id (ctx.track), or None for the worker as a
    whole; `level` is "error", "warning" or "info"; `text` is the whole
    message, newlines included (JSON escapes them), without a trailing
    newline. Non-ASCII text is escaped too, so the line is plain ASCII. A text
    over MAX_RECORD_TEXT bytes keeps its head line and its end. Every record
    this worker writes goes through here."""
    if level not in LEVELS:
        level = "info"
    track = int(track) if track is not None else None
    body = json.dumps({"track": track, "level": level, "text": _fit(str(text))},
                      ensure_ascii=True, separators=(",", ":"))
    try:
        sys.stderr.write(RECORD_MARK + body + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # the host stopped reading: nothing else to tell it with


def _fit(text):
    """`text` without a trailing newline, lone surrogates (from undecodable
    file names) spelt out, and cut to MAX_RECORD_TEXT bytes: the head line
    and the end are kept."""
    data = text.rstrip("\n").encode("utf-8", "backslashreplace")
    if len(data) <= MAX_RECORD_TEXT:
        return data.decode("utf-8")
    head = data.split(b"\n", 1)[0][:2048]
    tail = data[len(data) - (MAX_RECORD_TEXT - len(head) - 64):]
    left_out = len(data) - len(head) - len(tail)
    return (head.decode("utf-8", "ignore") + f"\n[... {left_out} bytes left out ...]\n"
            + tail.decode("utf-8", "ignore"))


def log_from_script(message):
    """outboard.log(message): an info record for the track whose code is running."""
    ctx = _current
    if ctx is None:
        emit(None, "info", f"[outboard worker {outboard.worker_index}] {message}")
    else:
        emit(ctx.track, "info", f"[{ctx.name}] {message}")


def emit_for_slot(slot, level, text):
    """A record about the track in `slot` (None if there is none)."""
    script = _scripts.get(slot)
    emit(script.ctx.track if script is not None else None, level, text)


ParamChange = collections.namedtuple("ParamChange", "offset name value")
ParamChange.__doc__ = """A host's change of a declared parameter inside the block: from frame
`offset` of the block on, `name` has `value` (in the declared units)."""


class Event:
    """A note or MIDI message the host sent, in this block (ctx.events).

    offset: its frame in the block; time: its sample on the track's timeline
    (ctx.time + offset); kind: "note_on", "note_off", "note_choke" or "midi";
    channel (0-15), key (0-127, -1 for a MIDI message that is not a note),
    velocity (0..1), note_id (-1 if none); data: the MIDI 1.0 bytes (for a
    CLAP note, the equivalent note on/off); port: the note port (0)."""

    __slots__ = ("offset", "time", "kind", "channel", "key", "velocity", "note_id", "data", "port")

    def __repr__(self):
        return (f"Event({self.kind} offset={self.offset} channel={self.channel} key={self.key} "
                f"velocity={self.velocity:.3f} note_id={self.note_id} data={self.data!r})")


class Transport:
    """The host's transport at the block's first sample (ctx.transport)."""

    __slots__ = ("playing", "recording", "tempo", "time_signature", "beats", "seconds", "bar_start",
                 "bar_number", "looping", "loop", "from_host", "malformed", "samples_per_beat")

    def __init__(self, raw=None, rate=48000.0):
        if raw is None:
            raw = (_PLAYING, 120.0, 0.0, 0.0, 0.0, 0, 0.0, 0.0, 4, 4)
        flags, tempo, beats, seconds, bar_start, bar_number, loop_start, loop_end, num, den = raw
        self.from_host = bool(flags & _FROM_HOST)
        self.malformed = bool(flags & _MALFORMED)
        self.playing = bool(flags & _PLAYING)
        self.recording = bool(flags & _RECORDING)
        self.looping = bool(flags & _LOOPING)
        self.tempo = float(tempo)
        self.time_signature = (int(num), int(den))
        self.beats = float(beats)
        self.seconds = float(seconds)
        self.bar_start = float(bar_start)
        self.bar_number = int(bar_number)
        self.loop = (float(loop_start), float(loop_end)) if self.looping else None
        self.samples_per_beat = float(rate) * 60.0 / self.tempo

    def __repr__(self):
        return (f"Transport(playing={self.playing} tempo={self.tempo} time_signature={self.time_signature} "
                f"beats={self.beats:.4f} bar={self.bar_number} from_host={self.from_host})")


class DeclarationError(ValueError):
    pass


class Param:
    """A declared parameter: its name, slot index on the wire and its range.
    Values travel as the host holds them: continuous ones normalised 0..1
    (linearly or logarithmically), stepped and choice ones as a step number
    0..count-1. `to_units` and `from_units` convert."""

    def __init__(self, name, spec):
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_PARAM_NAME:
            raise DeclarationError(f"parameter name {name!r}: a str of 1 to {MAX_PARAM_NAME} characters")
        if not isinstance(spec, dict):
            raise DeclarationError(f"{name!r}: expected a dict like dict(min=0.0, max=1.0, default=0.5), "
                                   f"got {type(spec).__name__}")
        known = {"min", "max", "default", "unit", "scale", "step", "choices"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise DeclarationError(f"{name!r}: unknown key(s) {', '.join(map(repr, unknown))}; "
                                   f"known: {', '.join(sorted(known))}")
        self.name = name
        self.index = None
        unit = spec.get("unit", "")
        if not isinstance(unit, str) or len(unit) > MAX_UNIT:
            raise DeclarationError(f"{name!r}: unit must be a str of at most {MAX_UNIT} characters")
        self.unit = unit
        self.choices = None
        self.step = None
        self.scale = "linear"
        if "choices" in spec:
            choices = spec["choices"]
            extra = sorted(k for k in ("min", "max", "step", "scale") if k in spec)
            if extra:
                raise DeclarationError(f"{name!r}: a parameter with choices has no {', '.join(extra)}")
            if (not isinstance(choices, (list, tuple)) or not 2 <= len(choices) <= MAX_CHOICES
                    or not all(isinstance(c, str) and c for c in choices) or len(set(choices)) != len(choices)):
                raise DeclarationError(f"{name!r}: choices must be a list of 2 to {MAX_CHOICES} distinct, "
                                       f"non-empty str")
            self.choices = [str(c) for c in choices]
            default = spec.get("default", self.choices[0])
            if default not in self.choices:
                raise DeclarationError(f"{name!r}: default {default!r} is not one of the choices")
            self.min, self.max, self.count = 0.0, float(len(choices) - 1), len(choices)
            self.default = default
            return
        lo, hi = spec.get("min", 0.0), spec.get("max", 1.0)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (lo, hi)):
            raise DeclarationError(f"{name!r}: min and max must be finite numbers")
        if not lo < hi:
            raise DeclarationError(f"{name!r}: min ({lo}) must be below max ({hi})")
        self.min, self.max = float(lo), float(hi)
        scale = spec.get("scale", "linear")
        if scale not in ("linear", "log"):
            raise DeclarationError(f"{name!r}: scale must be \"linear\" or \"log\", not {scale!r}")
        if scale == "log" and self.min <= 0:
            raise DeclarationError(f"{name!r}: a log scale needs min > 0")
        self.scale = scale
        if "step" in spec:
            step = spec["step"]
            if not isinstance(step, (int, float)) or isinstance(step, bool) or not (math.isfinite(step) and step > 0):
                raise DeclarationError(f"{name!r}: step must be a positive number")
            if scale != "linear":
                raise DeclarationError(f"{name!r}: a stepped parameter has a linear scale")
            self.step = float(step)
            self.count = int(math.floor((self.max - self.min) / self.step + 1e-9)) + 1
            if self.count < 2:
                raise DeclarationError(f"{name!r}: step {step} leaves a single value between min and max")
            if self.count > 1 << 20:
                raise DeclarationError(f"{name!r}: step {step} gives more than {1 << 20} values")
        else:
            self.count = 0
        default = spec.get("default", self.min)
        if (not isinstance(default, (int, float)) or isinstance(default, bool) or not math.isfinite(default)
                or not self.min <= default <= self.max):
            raise DeclarationError(f"{name!r}: default must be a number from min to max")
        if self.step is None:
            self.default = float(default)
        else:
            self.default = self.min + round((default - self.min) / self.step) * self.step
        # As it comes over the wire (f32): a value equal to it is the default.
        self._default_host = struct.unpack("f", struct.pack("f", self.from_units(self.default)))[0]

    def to_units(self, value):
        """The script's value for the host's `value` (NaN: not set yet, the
        default; the default's host value: exactly the declared default)."""
        if not math.isfinite(value) or (self.choices is None and value == self._default_host):
            return self.default
        if self.choices is not None or self.step is not None:
            k = int(round(min(max(value, 0.0), self.count - 1)))
            return self.choices[k] if self.choices is not None else self.min + k * self.step
        v = min(max(value, 0.0), 1.0)
        if self.scale == "log":
            return self.min * (self.max / self.min) ** v
        return self.min + v * (self.max - self.min)

    def from_units(self, value):
        """The host's value for the script's `value` (clamped to the range)."""
        if self.choices is not None:
            if value not in self.choices:
                raise ValueError(f"{value!r} is not one of {self.name!r}'s choices {self.choices}")
            return float(self.choices.index(value))
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{self.name!r}: {value} is not a finite number")
        value = min(max(value, self.min), self.max)
        if self.step is not None:
            return float(round((value - self.min) / self.step))
        if self.scale == "log":
            return math.log(value / self.min) / math.log(self.max / self.min)
        return (value - self.min) / (self.max - self.min)

    def describe(self):
        """The declaration as the host reads it (JSON-ready)."""
        return {"index": self.index, "name": self.name, "min": self.min, "max": self.max,
                "default": self.default if self.choices is None else self.choices.index(self.default),
                "unit": self.unit, "scale": self.scale, "step": self.step, "choices": self.choices}


def declare(params):
    """The parameters a module's PARAMS declares, in order (DeclarationError
    if the declaration breaks a rule)."""
    if not isinstance(params, dict):
        raise DeclarationError(f"PARAMS must be a dict of name -> dict(...), not {type(params).__name__}")
    if len(params) > MAX_DECLARED:
        raise DeclarationError(f"PARAMS declares {len(params)} parameters; at most {MAX_DECLARED}")
    return [Param(name, spec) for name, spec in params.items()]


class Context:
    """What a hook sees of its track. `state` is the script's own dict."""

    def __init__(self, track, name, channels, frames, rate, latency_blocks, param_names, param_values=(),
                 instrument=False, hints=()):
        self.track = track
        self.name = name
        self.channels = channels
        self.frames = frames
        self.rate = rate
        self.latency_blocks = latency_blocks
        self.instrument = bool(instrument)
        self.block = 0
        self.time = 0
        self.skipped = 0
        # Names by wire index: those the track gives (in the demo index 0
        # is the wet level), then the declared ones where they were placed.
        self._names = [str(n) for n in param_names]
        # Where declared names were placed before (by index): kept there.
        self._hints = [str(n) for n in hints]
        self._declared = {}  # name -> Param
        self._raw = [float(v) for v in param_values]
        self.params = {}
        self.param_changes = []
        self.events = []
        self.transport = Transport(None, rate)
        self.state = {}
        self._events = []
        self._next_note_id = 0
        self._refresh_params()

    # -- parameters ------------------------------------------------------

    def _declare(self, params):
        """Places declared parameters on wire indices (>= 1, below
        MAX_WIRE_PARAMS, not a name the track gives): a name goes back to
        the index its hint names (its host slot stays the same across
        reloads, restarts and edits); a new one takes the lowest index no
        other declared name is hinted to."""
        for p in self._declared.values():
            if p.index < len(self._names) and self._names[p.index] == p.name:
                self._names[p.index] = ""
        wanted = {p.name for p in params}
        hinted = {n: i for i, n in enumerate(self._hints) if n and 1 <= i < MAX_WIRE_PARAMS}
        reserved = {i for n, i in hinted.items() if n in wanted}

        def free(i):
            return i >= len(self._names) or self._names[i] == ""

        def take(p, i):
            while len(self._names) <= i:
                self._names.append("")
            p.index = i
            self._names[i] = p.name

        placed = []
        for p in params:
            i = hinted.get(p.name)
            if i is not None and free(i):
                take(p, i)
                placed.append(p)
        for p in params:
            if p in placed:
                continue
            i = next((i for i in range(1, MAX_WIRE_PARAMS) if free(i) and i not in reserved), None)
            if i is None:
                raise DeclarationError(f"no room for parameter {p.name!r}")
            take(p, i)
        for p in params:
            while len(self._hints) <= p.index:
                self._hints.append("")
            self._hints[p.index] = p.name
        self._declared = {p.name: p for p in params}
        self._refresh_params()

    def _value(self, index):
        return self._raw[index] if index < len(self._raw) else 0.0

    def _refresh_params(self):
        params = {}
        for i, n in enumerate(self._names):
            if n and n not in self._declared:
                params[n] = self._value(i)
        for n, p in self._declared.items():
            params[n] = p.to_units(self._value(p.index) if p.index < len(self._raw) else math.nan)
        self.params = params

    def _set_params(self, params):
        self._raw = list(params)
        self._refresh_params()

    def _take_events(self, raw):
        """The block's host events: notes and MIDI to ctx.events, parameter
        changes to ctx.param_changes."""
        events, changes = [], []
        by_index = {p.index: p for p in self._declared.values()}
        for time_, kind, channel, key, value, note_id, index, data in raw:
            offset = time_ - self.time
            if kind == PARAM_CHANGE:
                p = by_index.get(index)
                if p is not None:
                    changes.append(ParamChange(offset, p.name, p.to_units(value)))
                elif 0 <= index < len(self._names) and self._names[index]:
                    changes.append(ParamChange(offset, self._names[index], value))
                continue
            e = Event()
            e.offset, e.time, e.port = offset, time_, 0
            e.channel, e.key, e.velocity, e.note_id, e.data = channel, key, value, note_id, bytes(data)
            e.kind = _KIND_NAMES.get(kind, "midi")
            if kind == MIDI and len(e.data) == 3 and e.data[0] & 0xE0 == 0x80:
                # A MIDI 1.0 note (0x8n/0x9n): seen as a note, the bytes kept.
                status, e.channel, e.key = e.data[0] & 0xF0, e.data[0] & 0x0F, e.data[1]
                e.velocity = e.data[2] / 127.0
                e.kind = "note_on" if status == 0x90 and e.data[2] > 0 else "note_off"
            events.append(e)
        self.events = events
        self.param_changes = changes

    def segments(self):
        """Yields (start, end, params): runs of the block's frames with the
        same parameter values (params is a dict like ctx.params), covering
        0..ctx.frames in order."""
        params = dict(self.params)
        start = 0
        for change in self.param_changes:
            at = min(max(change.offset, 0), self.frames)
            if at > start:
                yield start, at, dict(params)
                start = at
            params[change.name] = change.value
        if start < self.frames:
            yield start, self.frames, params

    # -- output ----------------------------------------------------------

    def _when(self, at):
        return self.time if at is None else int(at)

    def _send(self, event):
        self._events.append(event)

    def _note_id(self, note_id):
        if note_id is not None:
            return int(note_id)
        self._next_note_id = (self._next_note_id + 1) % (1 << 31)
        return self._next_note_id

    def note(self, key, velocity=1.0, duration=0.25, at=None, channel=0):
        """Plays a note: note on at sample `at` (default ctx.time), note off
        `duration` seconds later (None: no note off; send ctx.note_off).
        Returns its note id."""
        when = self._when(at)
        note_id = self.note_on(key, velocity, at=when, channel=channel)
        if duration is not None:
            self.note_off(key, 0.0, at=when + max(1, int(round(float(duration) * self.rate))), channel=channel,
                          note_id=note_id)
        return note_id

    def note_on(self, key, velocity=1.0, at=None, channel=0, note_id=None):
        """Starts a note (MIDI key 0-127, velocity 0..1) at sample `at`.
        Returns its note id."""
        key, channel = _checked_key(key), _checked_channel(channel)
        note_id = self._note_id(note_id)
        self._send((self._when(at), NOTE_ON, channel, key, float(velocity), note_id, 0, b""))
        return note_id

    def note_off(self, key, velocity=0.0, at=None, channel=0, note_id=None):
        """Ends a note at sample `at`."""
        key, channel = _checked_key(key), _checked_channel(channel)
        self._send((self._when(at), NOTE_OFF, channel, key, float(velocity),
                    -1 if note_id is None else int(note_id), 0, b""))

    def midi(self, data, at=None):
        """Sends one MIDI 1.0 channel message (1-3 bytes, status first) at sample `at`."""
        data = bytes(data)
        expected = {0x80: 3, 0x90: 3, 0xA0: 3, 0xB0: 3, 0xC0: 2, 0xD0: 2, 0xE0: 3}.get(data[0] & 0xF0 if data else 0)
        if expected is None or len(data) != expected or any(b >= 0x80 for b in data[1:]):
            raise ValueError(f"not one MIDI 1.0 channel message: {data.hex(' ')}")
        self._send((self._when(at), MIDI, -1, -1, 0.0, -1, 0, data))

    def set_param(self, name, value, at=None):
        """Moves parameter `name` to `value` (declared units, or the choice)
        at sample `at`: the host sees the change (with a gesture) and the
        plugin takes it."""
        p = self._declared.get(name)
        if p is not None:
            self._send((self._when(at), SET_PARAM, -1, -1, p.from_units(value), -1, p.index, b""))
            return
        if name in self._names and name:
            self._send((self._when(at), SET_PARAM, -1, -1, float(value), -1, self._names.index(name), b""))
            return
        raise KeyError(f"no parameter {name!r}; this track has {sorted(self.params)}")

    def log(self, *parts):
        """Writes a message on the host's log, attributed to this track."""
        emit(self.track, "info", f"[{self.name}] " + " ".join(str(p) for p in parts))


# Parameter values one block carries (outboard_engine::block::MAX_PARAMS).
MAX_WIRE_PARAMS = 40


def _checked_key(key):
    key = int(key)
    if not 0 <= key <= 127:
        raise ValueError(f"MIDI key {key} is not 0-127")
    return key


def _checked_channel(channel):
    channel = int(channel)
    if not 0 <= channel <= 15:
        raise ValueError(f"MIDI channel {channel} is not 0-15")
    return channel


def _run(ctx, fn, *args):
    """Calls a script's code with `ctx` as the current track (for outboard.log)."""
    global _current
    previous = _current
    _current = ctx
    try:
        return fn(*args)
    finally:
        _current = previous


class _Reporter:
    """Reports each distinct error once, then how often it repeated."""

    def __init__(self):
        self.seen = {}  # key -> [count since last report, last report time]

    def report(self, key, track, text):
        now = time.monotonic()
        entry = self.seen.get(key)
        if entry is None:
            self.seen[key] = [0, now]
            emit(track, "error", text)
            return
        entry[0] += 1
        if now - entry[1] >= REPEAT_REPORT_SECONDS:
            emit(track, "warning", f"outboard: {key[0]}: the same error {entry[0]} more times")
            entry[0], entry[1] = 0, now

    def clear(self, slot):
        for key in [k for k in self.seen if k[1] == slot]:
            del self.seen[key]


_reporter = _Reporter()


def _where(exc, path):
    """file:line of the innermost frame in the user's script."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return exc.filename, exc.lineno
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if os.path.abspath(f.filename) == path]
    chosen = (own or frames or [None])[-1]
    return (chosen.filename, chosen.lineno) if chosen else (path, None)


def _traceback_text(exc):
    """The traceback without this runtime's frames (and importlib's) on top,
    and at most its last MAX_TRACEBACK_FRAMES frames."""
    tb = exc.__traceback__
    while tb is not None and (tb.tb_frame.f_code.co_filename == _OWN_FILE
                              or tb.tb_frame.f_code.co_filename.startswith("<frozen importlib")):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb, limit=-MAX_TRACEBACK_FRAMES))


def _report_exception(script, hook, exc):
    file, line = _where(exc, script.path)
    head = f"outboard: script error in {file}:{line} ({script.ctx.name}, {hook}): {type(exc).__name__}: {exc}"
    _reporter.report((f"{file}:{line}", script.slot, type(exc).__name__, str(exc)), script.ctx.track,
                     head + "\n" + _traceback_text(exc))


def _report_problem(script, hook, message):
    fn = getattr(script.module, hook, None)
    line = getattr(getattr(fn, "__code__", None), "co_firstlineno", None)
    head = f"outboard: script error in {script.path}:{line} ({script.ctx.name}, {hook}): {message}"
    _reporter.report((f"{script.path}:{line}", script.slot, message), script.ctx.track, head)


def _load_module(path, slot):
    name = f"outboard_track_{slot}_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec.loader.exec_module(module)
    return module


def _file_key(path):
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size)


class Script:
    def __init__(self, slot, path, ctx):
        self.slot = slot
        self.path = os.path.abspath(path)
        self.ctx = ctx
        self.module = None
        self.hooks = (None, None, None)
        self.key = None
        self.last_check = 0.0
        # The last block number the loaded script processed (None: none yet).
        self.last_seq = None
        # The script this one replaces in its slot (another file for the same
        # track): it keeps running until this one has loaded.
        self.fallback = None

    def try_load(self):
        """Loads (or reloads) the file and runs its setup. On failure the
        old module keeps running."""
        track = self.ctx.track
        try:
            key = _file_key(self.path)
        except OSError as e:
            _reporter.report((self.path, self.slot, "missing"), track,
                             f"outboard: script error in {self.path} ({self.ctx.name}): cannot read it: {e.strerror}"
                             + ("; the previous version keeps running" if self.module or self.fallback else ""))
            return False
        if key == self.key:
            return True
        self.key = key
        keep = "; the previous version keeps running" if self.module or self.fallback else ""
        size = key[1]
        if size > MAX_SCRIPT_BYTES:
            _reporter.report((self.path, self.slot, "size", size), track,
                             f"outboard: script error in {self.path} ({self.ctx.name}): it is {size / 2**20:.1f} MiB, "
                             f"larger than the {MAX_SCRIPT_BYTES >> 10} KiB a script may be (data belongs in a file "
                             f"the script reads){keep}")
            return False
        try:
            module = _run(self.ctx, _load_module, self.path, self.slot)
        except BaseException as exc:
            file, line = _where(exc, self.path)
            _reporter.report((f"{file}:{line}", self.slot, "load", str(exc)), track,
                             f"outboard: script error in {file}:{line} ({self.ctx.name}, loading): "
                             f"{type(exc).__name__}: {exc}{keep}\n{_traceback_text(exc)}")
            return False
        reloaded, replaced = self.module is not None, self.fallback is not None
        self.module = module
        self.fallback = None
        self.hooks = tuple(getattr(module, h, None) for h in ("setup", "process", "tick"))
        self.declare()
        self.last_seq = None
        _reporter.clear(self.slot)
        if not any(hasattr(module, h) for h in ("process", "tick", "setup")):
            _report_problem(self, "module", "defines none of the hooks setup, process, tick")
        if reloaded:
            emit(track, "info", f"outboard: reloaded {self.path} for {self.ctx.name}")
        elif replaced:
            emit(track, "info", f"outboard: now running {self.path} for {self.ctx.name}")
        self.setup()
        return True

    def declare(self):
        """Takes the module's PARAMS (none if it has none, or if they break a
        rule: then a script error with the file and line of PARAMS)."""
        params = []
        declared = getattr(self.module, "PARAMS", None)
        if declared is not None:
            try:
                params = declare(declared)
            except DeclarationError as exc:
                line = _assignment_line(self.path, "PARAMS")
                _reporter.report((f"{self.path}:{line}", self.slot, "PARAMS", str(exc)), self.ctx.track,
                                 f"outboard: script error in {self.path}:{line} ({self.ctx.name}, PARAMS): {exc}; "
                                 f"the script runs without declared parameters")
                params = []
        try:
            self.ctx._declare(params)
        except DeclarationError as exc:
            line = _assignment_line(self.path, "PARAMS")
            _reporter.report((f"{self.path}:{line}", self.slot, "PARAMS", str(exc)), self.ctx.track,
                             f"outboard: script error in {self.path}:{line} ({self.ctx.name}, PARAMS): {exc}")
            self.ctx._declare([])

    def declaration(self):
        """What the host needs to know of the script: its declared
        parameters (with their wire indices), whether it is an instrument
        script, its docstring."""
        module = self.module
        doc = (getattr(module, "__doc__", None) or "") if module is not None else ""
        return {"params": [p.describe() for p in self.ctx._declared.values()],
                "instrument": bool(getattr(module, "INSTRUMENT", False)) if module is not None else False,
                "doc": str(doc).strip()[:4096]}

    def setup(self):
        """Runs the script's setup hook, if it has one (see the module docs)."""
        ctx, hook = self.ctx, self.hooks[0]
        ctx.block, ctx.time, ctx.skipped = 0, 0, 0
        ctx.events, ctx.param_changes = [], []
        ctx._events = []
        if hook is not None:
            try:
                _run(ctx, hook, ctx)
            except BaseException as exc:
                _report_exception(self, "setup", exc)
        ctx._events = []

    def check_reload(self, now):
        """Reloads the file if it changed; True if a new version loaded."""
        if now - self.last_check >= RELOAD_CHECK_SECONDS:
            self.last_check = now
            module = self.module
            self.try_load()
            return self.module is not module
        return False


_scripts = {}


def _assignment_line(path, name):
    """The line where `name = ...` is assigned at the top of the file (None if not found)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                if re.match(rf"{name}\s*(:[^=]*)?=", line):
                    return number
    except OSError:
        pass
    return None


def load(slot, track, name, path, channels, frames, rate, latency_blocks, param_names, param_values=(),
         instrument=False, hints=()):
    """Loads a track's script and runs its setup; True if the file loaded.

    A slot that already runs a script (the track was given another file)
    keeps running it until the new one loads: now, or when its file is
    fixed. The new one starts with a fresh ctx.state, and with the old one's
    parameter values when none are sent."""
    old = _active(slot)
    if not param_values and old is not None:
        param_values = list(old.ctx._raw)
    ctx = Context(track, name, channels, frames, rate, latency_blocks, list(param_names), param_values, instrument,
                  hints or (old.ctx._hints if old is not None else ()))
    script = Script(slot, path, ctx)
    if old is not None and old.module is not None:
        script.fallback = old
    _scripts[slot] = script
    return bool(script.try_load())


def _active(slot):
    """The script that runs the slot's blocks: its own, or, until that has
    loaded, the one it replaces."""
    script = _scripts.get(slot)
    if script is not None and script.module is None and script.fallback is not None:
        return script.fallback
    return script


def unload(slot):
    _scripts.pop(slot, None)
    _reporter.clear(slot)


def check_reloads():
    """Reloads the scripts whose files changed; returns their slots."""
    now = time.monotonic()
    return [slot for slot, script in list(_scripts.items()) if script.check_reload(now)]


def declaration(slot):
    """The JSON body of the worker's ScriptDeclared message for `slot`
    (None if the slot is empty): {"slot", "params": [{"index", "name", "min",
    "max", "default", "unit", "scale", "step", "choices"}], "instrument",
    "doc"}. Defaults of choice parameters are choice numbers."""
    script = _active(slot)
    if script is None:
        return None
    body = script.declaration()
    body["slot"] = slot
    return json.dumps(body, ensure_ascii=True, separators=(",", ":"))


def report_bad_samples(slot, what):
    """Called when a processed block held samples that cannot be played
    (`what`: NaN or Inf, or beyond the track's range): reports it like any
    other wrong result, with the file and the line of `process`."""
    script = _active(slot)
    if script is not None and script.module is not None:
        _report_problem(script, "process", f"process() produced {what}")


def _checked(block, result):
    """The array to send for a process hook's `result` on `block`, or the
    problem with it (exactly one of the two is None)."""
    out = block if result is None else result
    if not isinstance(out, np.ndarray):
        return None, f"process() returned {type(out).__name__}, expected a numpy array or None"
    if out.shape != block.shape:
        return None, f"process() returned shape {out.shape}, expected {block.shape}"
    if out.dtype != np.float32:
        return None, f"process() returned dtype {out.dtype}, expected float32"
    # Sample values are checked by the caller on the copied samples (cheaper
    # there); it calls report_bad_samples when they fail.
    return np.ascontiguousarray(out), None


def process(slot, block, seq, sample_time, params, events=(), transport=None):
    """Runs process and tick for one block. `events` are the host's, as
    tuples (time, kind, channel, key, value, note_id, index, data);
    `transport` a tuple (see Transport). Returns (status, output array or
    None, events as the same tuples)."""
    script = _active(slot)
    if script is None or script.module is None:
        return SCRIPT_ERROR, None, []
    ctx = script.ctx
    ctx._set_params(params)
    last = script.last_seq
    ctx.skipped = seq - last - 1 if last is not None and seq > last + 1 else 0
    script.last_seq = seq
    ctx.block, ctx.time = seq, sample_time
    ctx.transport = Transport(transport, ctx.rate)
    ctx._take_events(events)
    ctx._events = []
    status, out = NO_PROCESS, None
    hook = script.hooks[1]
    if hook is not None:
        status = SCRIPT_ERROR
        try:
            out, problem = _checked(block, _run(ctx, hook, block, ctx))
            if problem is None:
                status = PROCESSED
            else:
                _report_problem(script, "process", problem)
        except BaseException as exc:
            out = None
            _report_exception(script, "process", exc)
    tick = script.hooks[2]
    if tick is not None:
        ctx.block = seq + ctx.latency_blocks
        ctx.time = ctx.block * ctx.frames
        try:
            _run(ctx, tick, ctx)
        except BaseException as exc:
            _report_exception(script, "tick", exc)
        ctx.block, ctx.time = seq, sample_time
    sent = ctx._events
    ctx._events = []
    if len(sent) > MAX_EVENTS_PER_BLOCK:
        _report_problem(script, "process" if tick is None else "tick",
                        f"the script sent {len(sent)} events for one block; the first {MAX_EVENTS_PER_BLOCK} are kept")
        sent = sent[:MAX_EVENTS_PER_BLOCK]
    return status, out, sent


def warm_up(slot, block, seq, sample_time, params, events=(), transport=None):
    """What `process` does for a block, on a throwaway block and context and
    WITHOUT calling any of the script's hooks: the parameter update and the
    result checks, as if process had returned the block. The Rust side calls
    it once after a load, through its own path for a block, so that the
    first calls of numpy and of this path are paid at load, not on the first
    real block. Returns what `process` returns."""
    script = _active(slot)
    if script is None:
        return SCRIPT_ERROR, None, []
    real = script.ctx
    ctx = Context(real.track, real.name, real.channels, real.frames, real.rate, real.latency_blocks,
                  list(real._names), instrument=real.instrument)
    ctx._set_params(params)
    ctx.block, ctx.time = seq, sample_time
    ctx.transport = Transport(transport, ctx.rate)
    ctx._take_events(events)
    list(ctx.segments())
    # The float32 operations most scripts start with (their first call costs
    # tens of microseconds), on a copy: the block itself stays silent.
    scratch = block.copy()
    scratch *= np.float32(0.5)
    scratch += np.sin(scratch + np.arange(scratch.shape[-1])).astype(np.float32)
    out, problem = _checked(block, None)
    return (PROCESSED if problem is None else SCRIPT_ERROR), out, []
