"""An 8-voice polyphonic synth: sine, saw or square voices with an ADSR envelope.

For Outboard Instrument (INSTRUMENT = True): play it from the host's notes,
or put arpeggiator.py or transposer.py on a track before it. `wave`,
`attack`, `decay` and `release` (seconds), `sustain` (a level, 0..1) and
`level` (each voice's peak) are the instance's parameters. Each note starts
and stops on its exact frame; a ninth note takes the oldest voice (one
already released if there is one). The pitch is exact equal temperament
(A4 = 440 Hz); the saw and square are band-limited with PolyBLEP. Both
channels get the same signal.
"""
import numpy as np

INSTRUMENT = True

PARAMS = {
    "wave": dict(choices=["sine", "saw", "square"], default="sine"),
    "attack": dict(min=0.001, max=2.0, default=0.005, unit="s", scale="log"),
    "decay": dict(min=0.001, max=2.0, default=0.2, unit="s", scale="log"),
    "sustain": dict(min=0.0, max=1.0, default=0.8),
    "release": dict(min=0.001, max=2.0, default=0.2, unit="s", scale="log"),
    "level": dict(min=0.0, max=1.0, default=0.5),
}

VOICES = 8
IDLE, ATTACK, DECAY, SUSTAIN, RELEASE = range(5)


class Voice:
    def __init__(self):
        self.stage = IDLE
        self.key = self.channel = -1
        self.note_id = -1
        self.velocity = 0.0
        self.increment = 0.0  # cycles per sample
        self.phase = 0.0  # cycles, in [0, 1)
        self.env = 0.0
        self.release_step = 0.0  # envelope fall per sample in release
        self.started = 0  # note-on order, for stealing the oldest

    def start(self, event, rate, order):
        self.key, self.channel, self.note_id = event.key, event.channel, event.note_id
        self.velocity = event.velocity
        self.increment = 440.0 * 2.0 ** ((event.key - 69) / 12.0) / rate
        if self.stage == IDLE:
            self.phase = 0.0
        self.stage = ATTACK  # from the current level: a stolen voice does not click
        self.started = order

    def render(self, n, params, rate):
        """The voice's next `n` samples (float64), before `level`."""
        env = self.envelope(n, params, rate)
        phase = self.phase + self.increment * np.arange(n)
        self.phase = (self.phase + self.increment * n) % 1.0
        wave = params["wave"]
        if wave == "sine":
            osc = np.sin(2.0 * np.pi * phase)
        else:
            t = phase % 1.0
            if wave == "saw":
                osc = 2.0 * t - 1.0 - poly_blep(t, self.increment)
            else:
                osc = np.where(t < 0.5, 1.0, -1.0) + poly_blep(t, self.increment) \
                    - poly_blep((t + 0.5) % 1.0, self.increment)
        return osc * env * self.velocity

    def envelope(self, n, params, rate):
        """The envelope for the next `n` samples: linear segments, each
        stage handing over to the next on its exact sample."""
        out = np.empty(n)
        done = 0
        while done < n:
            left = n - done
            if self.stage in (IDLE, SUSTAIN):
                level = 0.0 if self.stage == IDLE else params["sustain"]
                out[done:] = level
                self.env = level
                break
            if self.stage == ATTACK:
                step, target, following = 1.0 / (params["attack"] * rate), 1.0, DECAY
            elif self.stage == DECAY:
                step, target, following = -(1.0 - params["sustain"]) / (params["decay"] * rate), \
                    params["sustain"], SUSTAIN
            else:
                step, target, following = -self.release_step, 0.0, IDLE
            # Samples until the target is reached (the last one lands on it).
            if step == 0.0 or (target - self.env) / step <= 0.0:
                self.env, self.stage = target, following  # there already
                continue
            count = int(np.ceil((target - self.env) / step - 1e-9))
            run = min(count, left)
            ramp = self.env + step * np.arange(1, run + 1)
            if run == count:
                ramp[-1] = target
                self.stage = following
            out[done:done + run] = ramp
            self.env = float(ramp[-1])
            done += run
        return out

    def release(self, params, rate):
        if self.stage not in (IDLE, RELEASE):
            self.stage = RELEASE
            self.release_step = max(self.env, 1e-9) / (params["release"] * rate)


def poly_blep(t, dt):
    """The PolyBLEP correction of a unit step at phase 0, for phases `t`."""
    out = np.zeros_like(t)
    rising = t < dt
    x = t[rising] / dt
    out[rising] = 2.0 * x - x * x - 1.0
    falling = t > 1.0 - dt
    x = (t[falling] - 1.0) / dt
    out[falling] = x * x + 2.0 * x + 1.0
    return out


def setup(ctx):
    # ctx.state is kept across a reload: the sounding voices carry over into
    # this version's Voice class, so an edit does not cut them off.
    old = ctx.state.get("voices", [])
    ctx.state["voices"] = [Voice() for _ in range(VOICES)]
    for voice, previous in zip(ctx.state["voices"], old):
        voice.__dict__.update(previous.__dict__)
    ctx.state.setdefault("order", 0)


def note_on(event, ctx, params):
    voices = ctx.state["voices"]
    ctx.state["order"] += 1
    same = [v for v in voices if v.stage != IDLE and (v.channel, v.key) == (event.channel, event.key)]
    free = [v for v in voices if v.stage == IDLE]
    released = [v for v in voices if v.stage == RELEASE]
    voice = (same or free or [min(released or voices, key=lambda v: v.started)])[0]
    voice.start(event, ctx.rate, ctx.state["order"])


def note_off(event, ctx, params):
    for v in ctx.state["voices"]:
        if v.stage != IDLE and (v.channel, v.key) == (event.channel, event.key) \
                and event.note_id in (-1, v.note_id):
            if event.kind == "note_choke":
                v.stage, v.env = IDLE, 0.0
            else:
                v.release(params, ctx.rate)


def midi(event, ctx, params):
    data = event.data
    if len(data) == 3 and data[0] & 0xF0 == 0xB0 and data[1] in (120, 123):
        for v in ctx.state["voices"]:
            if data[1] == 120:  # all sound off
                v.stage, v.env = IDLE, 0.0
            else:  # all notes off
                v.release(params, ctx.rate)


HANDLERS = {"note_on": note_on, "note_off": note_off, "note_choke": note_off, "midi": midi}


def process(block, ctx):
    # block is zeroed, (channels, frames): fill it in place. Render in runs
    # between events and parameter changes, so that each takes effect on
    # its own frame.
    events = ctx.events
    i = 0
    for start, end, params in ctx.segments():
        level = params["level"]
        cut = start
        while cut < end:
            while i < len(events) and events[i].offset <= cut:
                HANDLERS[events[i].kind](events[i], ctx, params)
                i += 1
            stop = events[i].offset if i < len(events) and events[i].offset < end else end
            playing = [v for v in ctx.state["voices"] if v.stage != IDLE]
            if playing and stop > cut:
                mix = sum(v.render(stop - cut, params, ctx.rate) for v in playing)
                block[:, cut:stop] = (mix * level).astype(np.float32)
            cut = stop
    # Events at or after the end (none by the spec, but never lose a note).
    for event in events[i:]:
        HANDLERS[event.kind](event, ctx, params)
