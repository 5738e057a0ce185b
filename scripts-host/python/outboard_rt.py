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
                          shape/dtype. ctx.block is the block's number, ctx.time
                          its first sample, ctx.params the values sent with it.
    tick(ctx)             once per block, right after process (whether or not
                          there is one), with ctx.block and ctx.time set L
                          blocks ahead (L = ctx.latency_blocks): ctx.note(...)
                          and ctx.set_param(...) schedule events at ctx.time or
                          later. ctx.block and ctx.time are restored after.

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

import importlib.util
import json
import os
import sys
import time
import traceback

import numpy as np

import outboard

PROCESSED, SCRIPT_ERROR, NO_PROCESS = 0, 1, 2
RELOAD_CHECK_SECONDS = 0.25
REPEAT_REPORT_SECONDS = 2.0
MAX_EVENTS_PER_TICK = 128
# A script is code; a bigger file is data pasted in by mistake, and compiling
# it would hold the worker, and every track on it, for seconds (a 50 MB list
# literal takes CPython 16 s): long past the heartbeat timeout, so the worker
# would be restarted, load the same file again, and be restarted again.
MAX_SCRIPT_BYTES = 512 << 10
# A report keeps the innermost frames of a traceback: where the error is.
MAX_TRACEBACK_FRAMES = 24
# The longest text of one record, in UTF-8 bytes: under what the engine keeps
# of a message (outboard_engine::script_log::MAX_TEXT), so that what is cut
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


class Context:
    """What a hook sees of its track. `state` is the script's own dict."""

    def __init__(self, track, name, channels, frames, rate, latency_blocks, param_names, param_values=()):
        self.track = track
        self.name = name
        self.channels = channels
        self.frames = frames
        self.rate = rate
        self.latency_blocks = latency_blocks
        self.block = 0
        self.time = 0
        self.skipped = 0
        values = list(param_values)
        self.params = {n: float(values[i]) if i < len(values) else 0.0 for i, n in enumerate(param_names)}
        self.state = {}
        self._param_index = {n: i for i, n in enumerate(param_names)}
        self._events = []

    def note(self, pitch, velocity=1.0, duration=0.25, at=None):
        """Plays a note (MIDI pitch) on the track's voice at sample `at`
        (default: ctx.time), for `duration` seconds."""
        when = self.time if at is None else int(at)
        self._events.append((1, when, float(pitch), float(velocity), float(duration)))

    def set_param(self, name, value, at=None):
        """Sets the track parameter `name` to `value` at sample `at`."""
        if name not in self._param_index:
            raise KeyError(f"no parameter {name!r}; this track has {sorted(self._param_index)}")
        when = self.time if at is None else int(at)
        self._events.append((2, when, self._param_index[name], float(value), 0.0))

    def log(self, *parts):
        """Writes a message on the host's log, attributed to this track."""
        emit(self.track, "info", f"[{self.name}] " + " ".join(str(p) for p in parts))

    def _set_params(self, params):
        for name, index in self._param_index.items():
            if index < len(params):
                self.params[name] = params[index]


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

    def setup(self):
        """Runs the script's setup hook, if it has one (see the module docs)."""
        ctx, hook = self.ctx, self.hooks[0]
        ctx.block, ctx.time, ctx.skipped = 0, 0, 0
        ctx._events = []
        if hook is not None:
            try:
                _run(ctx, hook, ctx)
            except BaseException as exc:
                _report_exception(self, "setup", exc)
        ctx._events = []

    def check_reload(self, now):
        if now - self.last_check >= RELOAD_CHECK_SECONDS:
            self.last_check = now
            self.try_load()


_scripts = {}


def load(slot, track, name, path, channels, frames, rate, latency_blocks, param_names, param_values=()):
    """Loads a track's script and runs its setup; True if the file loaded.

    A slot that already runs a script (the track was given another file)
    keeps running it until the new one loads: now, or when its file is
    fixed. The new one starts with a fresh ctx.state, and with the old one's
    parameter values when none are sent."""
    old = _active(slot)
    if not param_values and old is not None:
        param_values = [old.ctx.params.get(n, 0.0) for n in param_names]
    ctx = Context(track, name, channels, frames, rate, latency_blocks, list(param_names), param_values)
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
    now = time.monotonic()
    for script in list(_scripts.values()):
        script.check_reload(now)


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


def process(slot, block, seq, sample_time, params):
    """Runs process and tick for one block. Returns (status, output array or
    None, events)."""
    script = _active(slot)
    if script is None or script.module is None:
        return SCRIPT_ERROR, None, []
    ctx = script.ctx
    ctx._set_params(params)
    last = script.last_seq
    ctx.skipped = seq - last - 1 if last is not None and seq > last + 1 else 0
    script.last_seq = seq
    ctx.block, ctx.time = seq, sample_time
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
    events = []
    tick = script.hooks[2]
    if tick is not None:
        ctx._events = []
        ctx.block = seq + ctx.latency_blocks
        ctx.time = ctx.block * ctx.frames
        try:
            _run(ctx, tick, ctx)
            events = ctx._events[:MAX_EVENTS_PER_TICK]
            if len(ctx._events) > MAX_EVENTS_PER_TICK:
                _report_problem(script, "tick", f"tick() scheduled {len(ctx._events)} events; the first {MAX_EVENTS_PER_TICK} are kept")
        except BaseException as exc:
            _report_exception(script, "tick", exc)
        ctx._events = []
        ctx.block, ctx.time = seq, sample_time
    return status, out, events


def warm_up(slot, block, seq, sample_time, params):
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
                  list(real._param_index))
    ctx._set_params(params)
    ctx.block, ctx.time = seq, sample_time
    # The float32 operations most scripts start with (their first call costs
    # tens of microseconds), on a copy: the block itself stays silent.
    scratch = block.copy()
    scratch *= np.float32(0.5)
    scratch += np.sin(scratch + np.arange(scratch.shape[-1])).astype(np.float32)
    out, problem = _checked(block, None)
    return (PROCESSED if problem is None else SCRIPT_ERROR), out, []
