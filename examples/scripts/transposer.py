"""A MIDI transposer: shifts every note by `semitones`, on the sample it came in.

Put it on a track before an instrument. `semitones` (-24 to +24, default an
octave up) is the instance's parameter, read at each note's own frame. A key
released after `semitones` changed still releases the note it started, and a
note shifted beyond the MIDI range (0-127) is dropped, its release too. Other
MIDI (CC, pitch bend, aftertouch) is passed on unchanged, as is the audio.
"""

PARAMS = {
    "semitones": dict(min=-24, max=24, default=12, step=1),
}


def setup(ctx):
    # (channel, key) -> [(key sent, note id), ...] for each note still held,
    # oldest first; kept across a reload so held notes are still released.
    ctx.state.setdefault("held", {})


def semitones_at(ctx, offset):
    """The `semitones` parameter at frame `offset` of this block."""
    value = ctx.params["semitones"]
    for change in ctx.param_changes:
        if change.offset > offset:
            break
        if change.name == "semitones":
            value = change.value
    return int(round(value))


def process(block, ctx):
    # The audio is left alone: only notes go in and out.
    held = ctx.state["held"]
    for e in ctx.events:
        if e.kind == "note_on":
            key = e.key + semitones_at(ctx, e.offset)
            sent = None
            if 0 <= key <= 127:
                note_id = ctx.note_on(key, e.velocity, at=e.time, channel=e.channel)
                sent = (key, note_id)
            held.setdefault((e.channel, e.key), []).append(sent)
        elif e.kind in ("note_off", "note_choke"):
            notes = held.get((e.channel, e.key))
            if notes:
                sent = notes.pop(0)
                if not notes:
                    del held[(e.channel, e.key)]
            else:
                # Not started here (held before this script was loaded):
                # release it where the current shift would have put it.
                key = e.key + semitones_at(ctx, e.offset)
                sent = (key, None) if 0 <= key <= 127 else None
            if sent is not None:
                key, note_id = sent
                ctx.note_off(key, e.velocity, at=e.time, channel=e.channel, note_id=note_id)
        elif e.kind == "midi" and e.data and 0x80 <= e.data[0] < 0xF0:  # a channel message
            ctx.midi(e.data, at=e.time)
