"""An arpeggiator: plays the keys you hold one at a time, on the host's beat.

Put it on a track before an instrument (Outboard Instrument with
polysynth.py, or any synth) and hold a chord. `pattern` (up, down, updown),
`rate` (a quarter, eighth or sixteenth note per step) and `gate` (the note's
length, as a fraction of a step) are the instance's parameters. Steps fall
on exact subdivisions of ctx.transport's beat and follow its tempo; with no
transport from the host, Outboard's default one (120 BPM, playing) drives
it. Nothing plays while the transport is stopped. Audio passes through
unchanged; MIDI other than notes (CC, pitch bend) is passed on.
"""
import math

PARAMS = {
    "pattern": dict(choices=["up", "down", "updown"], default="up"),
    "rate": dict(choices=["1/4", "1/8", "1/16"], default="1/8"),
    "gate": dict(min=0.1, max=1.0, default=0.5),
}

STEP_BEATS = {"1/4": 1.0, "1/8": 0.5, "1/16": 0.25}  # in quarter notes


def setup(ctx):
    ctx.state.setdefault("held", {})  # (channel, key) -> velocity, kept across a reload
    ctx.state.setdefault("count", 0)  # steps played since the first key went down
    ctx.state.setdefault("last_at", None)  # sample time of the last step played
    ctx.state["last_time"] = -1


def sequence(held, pattern):
    """The (key, channel, velocity) notes one cycle of `pattern` plays."""
    notes = sorted((key, channel, velocity) for (channel, key), velocity in held.items())
    if pattern == "down":
        return notes[::-1]
    if pattern == "updown":
        return notes + notes[-2:0:-1]  # C E G E, C E G E, ...
    return notes


def apply(event, ctx):
    held = ctx.state["held"]
    if event.kind == "note_on":
        held[(event.channel, event.key)] = event.velocity
    elif event.kind in ("note_off", "note_choke"):
        held.pop((event.channel, event.key), None)
        if not held:
            ctx.state["count"] = 0  # the next chord starts at its first note
    elif event.kind == "midi" and event.data and 0x80 <= event.data[0] < 0xF0:  # a channel message
        ctx.midi(event.data, at=event.time)


def process(block, ctx):
    # The audio is left alone: only notes go in and out.
    state = ctx.state
    if ctx.time < state["last_time"]:
        state["last_at"] = None  # the track's time started again (a reset)
    state["last_time"] = ctx.time

    transport = ctx.transport
    params = ctx.params
    step = STEP_BEATS[params["rate"]]  # beats per step
    per_beat = transport.samples_per_beat
    step_samples = step * per_beat
    step_seconds = step * 60.0 / transport.tempo

    # The block's steps: the frames where the song position crosses a
    # multiple of `step` beats (rounded to the nearest frame).
    steps = []
    if transport.playing:
        k = math.floor(transport.beats / step)
        while True:
            offset = math.floor((k * step - transport.beats) * per_beat + 0.5)
            if offset >= ctx.frames:
                break
            at = ctx.time + offset
            # A step on a block boundary is played once (a frame early or
            # late in the host's position is taken in either block); after
            # a loop jump the song position repeats, the track's time does not.
            if offset >= -1 and (state["last_at"] is None or at - state["last_at"] > step_samples / 2):
                steps.append(max(offset, 0))
                state["last_at"] = at
            k += 1

    # Keys and steps in time order: a key pressed on a step's frame plays in it.
    events = iter(ctx.events)
    pending = next(events, None)
    for offset in steps:
        while pending is not None and pending.offset <= offset:
            apply(pending, ctx)
            pending = next(events, None)
        notes = sequence(state["held"], params["pattern"])
        if notes:
            key, channel, velocity = notes[state["count"] % len(notes)]
            ctx.note(key, velocity, duration=params["gate"] * step_seconds, at=ctx.time + offset, channel=channel)
            state["count"] += 1
    while pending is not None:
        apply(pending, ctx)
        pending = next(events, None)
