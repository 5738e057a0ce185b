"""Realtime-mode runtime for outboard-scripts-host: one Script per track
slot, its hooks called once per block, every failure reported with file and
line on the host's log while the track falls back to dry.

Called from Rust with the GIL held. Hooks a script may define (all optional):

    setup(ctx)            once, when the script is (re)loaded for a track
    process(block, ctx)   block: numpy float32 (channels, frames); edit it in
                          place, or return an array of the same shape/dtype
    tick(ctx)             once per block, ahead of time: ctx.note(...) and
                          ctx.set_param(...) schedule events at ctx.time or later
"""

import importlib.util
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


class Context:
    """What a hook sees of its track. `state` is the script's own dict."""

    def __init__(self, track, name, channels, frames, rate, latency_blocks, param_names):
        self.track = track
        self.name = name
        self.channels = channels
        self.frames = frames
        self.rate = rate
        self.latency_blocks = latency_blocks
        self.block = 0
        self.time = 0
        self.params = {n: 0.0 for n in param_names}
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
        """Writes a line on the host's log, tagged with the track."""
        outboard.log(f"[{self.name}] " + " ".join(str(p) for p in parts))


class _Reporter:
    """Reports each distinct error once, then how often it repeated."""

    def __init__(self):
        self.seen = {}  # key -> [count since last report, last report time]

    def report(self, key, text):
        now = time.monotonic()
        entry = self.seen.get(key)
        if entry is None:
            self.seen[key] = [0, now]
            sys.stderr.write(text if text.endswith("\n") else text + "\n")
            sys.stderr.flush()
            return
        entry[0] += 1
        if now - entry[1] >= REPEAT_REPORT_SECONDS:
            sys.stderr.write(f"outboard: {key[0]}: the same error {entry[0]} more times\n")
            sys.stderr.flush()
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


def _report_exception(script, hook, exc):
    file, line = _where(exc, script.path)
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    head = f"outboard: script error in {file}:{line} ({script.ctx.name}, {hook}): {type(exc).__name__}: {exc}"
    _reporter.report((f"{file}:{line}", script.slot, type(exc).__name__, str(exc)), head + "\n" + text)


def _report_problem(script, hook, message):
    fn = getattr(script.module, hook, None)
    line = getattr(getattr(fn, "__code__", None), "co_firstlineno", None)
    head = f"outboard: script error in {script.path}:{line} ({script.ctx.name}, {hook}): {message}"
    _reporter.report((f"{script.path}:{line}", script.slot, message), head)


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
        self.needs_setup = False
        self.last_check = 0.0

    def try_load(self):
        """Loads (or reloads) the file. On failure the old module keeps running."""
        try:
            key = _file_key(self.path)
        except OSError as e:
            _reporter.report((self.path, self.slot, "missing"),
                             f"outboard: script error in {self.path} ({self.ctx.name}): cannot read it: {e.strerror}"
                             + ("; the previous version keeps running" if self.module else ""))
            return False
        if key == self.key:
            return True
        self.key = key
        keep = "; the previous version keeps running" if self.module else ""
        size = key[1]
        if size > MAX_SCRIPT_BYTES:
            _reporter.report((self.path, self.slot, "size", size),
                             f"outboard: script error in {self.path} ({self.ctx.name}): it is {size / 2**20:.1f} MiB, "
                             f"larger than the {MAX_SCRIPT_BYTES >> 10} KiB a script may be (data belongs in a file "
                             f"the script reads){keep}")
            return False
        try:
            module = _load_module(self.path, self.slot)
        except BaseException as exc:
            file, line = _where(exc, self.path)
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            _reporter.report((f"{file}:{line}", self.slot, "load", str(exc)),
                             f"outboard: script error in {file}:{line} ({self.ctx.name}, loading): "
                             f"{type(exc).__name__}: {exc}{keep}\n{text}")
            return False
        reloaded = self.module is not None
        self.module = module
        self.hooks = tuple(getattr(module, h, None) for h in ("setup", "process", "tick"))
        self.needs_setup = True
        _reporter.clear(self.slot)
        if not any(hasattr(module, h) for h in ("process", "tick", "setup")):
            _report_problem(self, "module", "defines none of the hooks setup, process, tick")
        if reloaded:
            sys.stderr.write(f"outboard: reloaded {self.path} for {self.ctx.name}\n")
            sys.stderr.flush()
        return True

    def check_reload(self, now):
        if now - self.last_check >= RELOAD_CHECK_SECONDS:
            self.last_check = now
            self.try_load()


_scripts = {}


def load(slot, track, name, path, channels, frames, rate, latency_blocks, param_names):
    ctx = Context(track, name, channels, frames, rate, latency_blocks, list(param_names))
    script = Script(slot, path, ctx)
    _scripts[slot] = script
    ok = bool(script.try_load())
    if ok:
        warm_up(slot)
    return ok


def warm_up(slot):
    """Runs setup, then process and tick once on a silent block at
    ctx.block == -1 (outputs and events discarded), so that first-call costs
    (imports, numpy's first use of a function) do not land on the first
    real audio block."""
    script = _scripts[slot]
    ctx = script.ctx
    block = np.zeros((ctx.channels, ctx.frames), dtype=np.float32)
    process(slot, block, -1, -ctx.frames, tuple(ctx.params.values()))
    ctx._events = []


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
    script = _scripts.get(slot)
    if script is not None and script.module is not None:
        _report_problem(script, "process", f"process() produced {what}")


def process(slot, block, seq, sample_time, params):
    """Runs setup (when due), process and tick for one block. Returns
    (status, output array or None, events)."""
    script = _scripts.get(slot)
    if script is None or script.module is None:
        return SCRIPT_ERROR, None, []
    ctx, module = script.ctx, script.module
    for name, index in ctx._param_index.items():
        if index < len(params):
            ctx.params[name] = params[index]
    ctx.block, ctx.time = seq, sample_time
    if script.needs_setup:
        script.needs_setup = False
        setup = script.hooks[0]
        if setup is not None:
            try:
                setup(ctx)
            except BaseException as exc:
                _report_exception(script, "setup", exc)
    status, out = NO_PROCESS, None
    hook = script.hooks[1]
    if hook is not None:
        status = SCRIPT_ERROR
        try:
            result = hook(block, ctx)
            out = block if result is None else result
            if not isinstance(out, np.ndarray):
                _report_problem(script, "process", f"process() returned {type(out).__name__}, expected a numpy array or None")
            elif out.shape != block.shape:
                _report_problem(script, "process", f"process() returned shape {out.shape}, expected {block.shape}")
            elif out.dtype != np.float32:
                _report_problem(script, "process", f"process() returned dtype {out.dtype}, expected float32")
            else:
                # Sample values are checked by the caller on the copied samples
                # (cheaper there); it calls report_bad_samples when they fail.
                status = PROCESSED
                out = np.ascontiguousarray(out)
        except BaseException as exc:
            _report_exception(script, "process", exc)
        if status != PROCESSED:
            out = None
    events = []
    tick = script.hooks[2]
    if tick is not None:
        ctx._events = []
        ctx.block = seq + ctx.latency_blocks
        ctx.time = ctx.block * ctx.frames
        try:
            tick(ctx)
            events = ctx._events[:MAX_EVENTS_PER_TICK]
            if len(ctx._events) > MAX_EVENTS_PER_TICK:
                _report_problem(script, "tick", f"tick() scheduled {len(ctx._events)} events; the first {MAX_EVENTS_PER_TICK} are kept")
        except BaseException as exc:
            _report_exception(script, "tick", exc)
        ctx._events = []
        ctx.block, ctx.time = seq, sample_time
    return status, out, events
