//! Notes, MIDI and parameter changes a run sends (`--notes`, `--param`),
//! and the record of the events a plugin sends back (`output_events`).
//!
//! Everything is parsed and resolved on the main thread before the run; the
//! audio threads only walk the sorted lists and push into preallocated
//! buffers (see [`crate::run()`]).
//!
//! `--notes FILE`: one event per line, `#` starts a comment:
//!
//! ```text
//! SAMPLE on KEY [VELOCITY] [CHANNEL]     # a note on (velocity 0..1, default 1; channel 0-15, default 0)
//! SAMPLE off KEY [VELOCITY] [CHANNEL]    # a note off (velocity default 0)
//! SAMPLE midi HEX HEX [HEX]              # one raw MIDI 1.0 message, status first (e.g. 4800 midi b0 07 64)
//! ```
//!
//! SAMPLE is the absolute sample on each instance's timeline, from the run's
//! start. Two patterns are built in: `pattern:chord` (C4, E4 and G4 on at 0,
//! velocity 0.8, held to the end) and `pattern:scale` (the C major scale
//! from C4 up to C5, one quarter note per beat at the run's tempo, each
//! held half a beat, looping to the end of the run).
//!
//! `--note-dialect clap` sends notes as CLAP note events, each note on with a
//! note id of its own (0, 1, 2, ...) that its note off repeats; `midi` sends
//! them as MIDI 1.0 messages (0x9n / 0x8n, velocity × 127 rounded, a note
//! on at least 1). Raw `midi` lines are MIDI events in both dialects. The
//! plugin's first note input port must support the dialect.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use clack_host::events::event_types::{MidiEvent, NoteOffEvent, NoteOnEvent};
use clack_host::events::spaces::CoreEventSpace;
use clack_host::events::{Match, Pckn, UnknownEvent};
use serde_json::{Value, json};

use crate::plugin_instance::{Instance, ParamInfo};
use crate::processor::Processor;

/// Output events kept per instance; later ones are counted, not kept.
pub const MAX_RECORDED_EVENTS: usize = 100_000;

/// How notes are sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum NoteDialect {
    /// CLAP note events (CLAP_EVENT_NOTE_ON / NOTE_OFF), with note ids.
    #[default]
    Clap,
    /// MIDI 1.0 messages (CLAP_EVENT_MIDI, 0x9n / 0x8n).
    Midi,
}

impl NoteDialect {
    /// The dialect as `--note-dialect` spells it (`clap`, `midi`).
    pub fn name(self) -> &'static str {
        match self {
            NoteDialect::Clap => "clap",
            NoteDialect::Midi => "midi",
        }
    }
}

/// What one line of a notes file sends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NoteKind {
    /// A note on (CLAP_EVENT_NOTE_ON, or MIDI 0x9n in the MIDI dialect).
    On,
    /// A note off (CLAP_EVENT_NOTE_OFF, or MIDI 0x8n in the MIDI dialect).
    Off,
    /// A raw MIDI 1.0 message: `len` bytes of `data`.
    Midi {
        /// The message, status byte first; bytes past `len` are 0.
        data: [u8; 3],
        /// How many bytes of `data` the message has: 1 to 3.
        len: u8,
    },
}

/// One note or MIDI event to send.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NoteEvent {
    /// Absolute sample from the run's start.
    pub sample: u64,
    /// A note on, a note off, or a raw MIDI message.
    pub kind: NoteKind,
    /// MIDI channel, 0-15 (for a raw MIDI message, its status byte's low nibble).
    pub channel: u8,
    /// MIDI key, 0-127 (60 is C4); 0 and unused for a raw MIDI message.
    pub key: u8,
    /// 0..1.
    pub velocity: f64,
    /// The CLAP note id (a note on's own; a note off's the note it ends;
    /// -1: none, a wildcard).
    pub note_id: i32,
}

/// The keys of `pattern:chord` and `pattern:scale`.
pub const CHORD: [u8; 3] = [60, 64, 67];
/// The keys of `pattern:scale`: the C major scale from C4 up to C5.
pub const SCALE: [u8; 8] = [60, 62, 64, 65, 67, 69, 71, 72];
/// The velocity of the patterns' notes.
pub const PATTERN_VELOCITY: f64 = 0.8;

/// The events `--notes SPEC` names: a file, or a built-in pattern (the
/// scale at `tempo` BPM and `rate` Hz, up to `frames`). Sorted by sample
/// (lines at the same sample keep their order), note ids assigned.
pub fn load_notes(spec: &str, tempo: f64, rate: u32, frames: u64) -> Result<Vec<NoteEvent>, String> {
    let mut events = match spec {
        "pattern:chord" => CHORD.iter().map(|&key| note(0, NoteKind::On, key, PATTERN_VELOCITY)).collect(),
        "pattern:scale" => {
            let per_beat = 60.0 / tempo * f64::from(rate);
            let mut events = Vec::new();
            for k in 0u64.. {
                let on = (k as f64 * per_beat).round() as u64;
                if on >= frames {
                    break;
                }
                let key = SCALE[(k % SCALE.len() as u64) as usize];
                events.push(note(on, NoteKind::On, key, PATTERN_VELOCITY));
                events.push(note(((k as f64 + 0.5) * per_beat).round() as u64, NoteKind::Off, key, 0.0));
            }
            events
        }
        other if other.starts_with("pattern:") => {
            return Err(format!("--notes {other}: no such pattern; the patterns are pattern:chord and pattern:scale"));
        }
        path => {
            let text =
                std::fs::read_to_string(Path::new(path)).map_err(|e| format!("--notes {path}: cannot read it: {e}"))?;
            parse_notes(&text).map_err(|e| format!("--notes {path}:{e}"))?
        }
    };
    events.sort_by_key(|e| e.sample);
    assign_note_ids(&mut events);
    Ok(events)
}

fn note(sample: u64, kind: NoteKind, key: u8, velocity: f64) -> NoteEvent {
    NoteEvent { sample, kind, channel: 0, key, velocity, note_id: -1 }
}

/// Parses a notes file (see the module docs); an error starts with the
/// line number and a colon.
pub fn parse_notes(text: &str) -> Result<Vec<NoteEvent>, String> {
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let event = parse_line(line).map_err(|why| format!("{}: {why}: {line:?}", i + 1))?;
        events.push(event);
    }
    Ok(events)
}

fn parse_line(line: &str) -> Result<NoteEvent, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let sample = words[0].parse::<u64>().map_err(|_| format!("{:?} is not a sample number", words[0]))?;
    let kind = words.get(1).ok_or("a sample, then on, off or midi")?.to_ascii_lowercase();
    let rest = &words[2..];
    match kind.as_str() {
        "on" | "off" => {
            let on = kind == "on";
            if rest.is_empty() || rest.len() > 3 {
                return Err(format!("{kind} takes KEY [VELOCITY] [CHANNEL]"));
            }
            let key = rest[0].parse::<u8>().ok().filter(|&k| k < 128).ok_or("the key is not 0-127")?;
            let velocity = match rest.get(1) {
                Some(v) => {
                    v.parse::<f64>().ok().filter(|v| (0.0..=1.0).contains(v)).ok_or("the velocity is not 0..1")?
                }
                None if on => 1.0,
                None => 0.0,
            };
            let channel = match rest.get(2) {
                Some(c) => c.parse::<u8>().ok().filter(|&c| c < 16).ok_or("the channel is not 0-15")?,
                None => 0,
            };
            let kind = if on { NoteKind::On } else { NoteKind::Off };
            Ok(NoteEvent { sample, kind, channel, key, velocity, note_id: -1 })
        }
        "midi" => {
            if rest.is_empty() || rest.len() > 3 {
                return Err("midi takes 1 to 3 hexadecimal bytes, the status byte first".into());
            }
            let mut data = [0u8; 3];
            for (i, byte) in rest.iter().enumerate() {
                let byte = byte.trim_start_matches("0x");
                data[i] = u8::from_str_radix(byte, 16).map_err(|_| format!("{byte:?} is not a hexadecimal byte"))?;
            }
            if data[0] < 0x80 {
                return Err("the first byte is not a status byte (0x80-0xff)".into());
            }
            if data[1..rest.len()].iter().any(|&b| b >= 0x80) {
                return Err("a data byte is not 0x00-0x7f".into());
            }
            let channel = data[0] & 0x0f;
            Ok(NoteEvent {
                sample,
                kind: NoteKind::Midi { data, len: rest.len() as u8 },
                channel,
                key: 0,
                velocity: 0.0,
                note_id: -1,
            })
        }
        other => Err(format!("{other:?} is not on, off or midi")),
    }
}

/// Gives every note on a note id (in time order, from 0) and every note off
/// the id of the oldest held note on its channel and key (-1 if none).
fn assign_note_ids(events: &mut [NoteEvent]) {
    let mut held: Vec<(u8, u8, i32)> = Vec::new();
    let mut next = 0;
    for e in events {
        match e.kind {
            NoteKind::On => {
                e.note_id = next;
                held.push((e.channel, e.key, next));
                next += 1;
            }
            NoteKind::Off => {
                e.note_id = match held.iter().position(|&(c, k, _)| (c, k) == (e.channel, e.key)) {
                    Some(i) => held.remove(i).2,
                    None => -1,
                };
            }
            NoteKind::Midi { .. } => {}
        }
    }
}

impl NoteEvent {
    /// Queues this event on `processor` at `offset` in the next block, in
    /// `dialect`. Realtime-safe. False if the list was full.
    pub fn push(&self, processor: &mut Processor, offset: u32, dialect: NoteDialect) -> bool {
        let vel7 = |v: f64, min: f64| (v * 127.0).round().clamp(min, 127.0) as u8;
        let pckn = || {
            let id = if self.note_id >= 0 { Match::Specific(self.note_id as u32) } else { Match::All };
            Pckn::new(0u16, u16::from(self.channel), u16::from(self.key), id)
        };
        match (self.kind, dialect) {
            (NoteKind::Midi { data, .. }, _) => processor.push_event(&MidiEvent::new(offset, 0, data)),
            (NoteKind::On, NoteDialect::Clap) => processor.push_event(&NoteOnEvent::new(offset, pckn(), self.velocity)),
            (NoteKind::Off, NoteDialect::Clap) => {
                processor.push_event(&NoteOffEvent::new(offset, pckn(), self.velocity))
            }
            (NoteKind::On, NoteDialect::Midi) => processor.push_event(&MidiEvent::new(
                offset,
                0,
                [0x90 | self.channel, self.key, vel7(self.velocity, 1.0)],
            )),
            (NoteKind::Off, NoteDialect::Midi) => processor.push_event(&MidiEvent::new(
                offset,
                0,
                [0x80 | self.channel, self.key, vel7(self.velocity, 0.0)],
            )),
        }
    }
}

/// `--param NAME=VALUE@SAMPLE`: a parameter change to send, as typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSet {
    /// A parameter's name (case-insensitive) or its id.
    pub name: String,
    /// Text for the plugin's `text_to_value`, else a plain host value.
    pub value: String,
    /// Absolute sample from the run's start.
    pub sample: u64,
}

impl ParamSet {
    /// Parses `NAME=VALUE@SAMPLE` (split at the last `@` and the first `=`, each part trimmed); the error shows the
    /// expected form.
    pub fn parse(text: &str) -> Result<ParamSet, String> {
        let usage = || format!("{text:?}: expected NAME=VALUE@SAMPLE (e.g. cutoff=500 Hz@4800)");
        let (setting, sample) = text.rsplit_once('@').ok_or_else(usage)?;
        let (name, value) = setting.split_once('=').ok_or_else(usage)?;
        let sample = sample.trim().parse::<u64>().map_err(|_| format!("{}: the sample is not a number", usage()))?;
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() || value.is_empty() {
            return Err(usage());
        }
        Ok(ParamSet { name: name.to_string(), value: value.to_string(), sample })
    }

    /// The parameter this names among `params`: by name (case-insensitive;
    /// a visible parameter before a hidden one; then ignoring spaces and
    /// underscores), else by id.
    pub fn find<'a>(&self, params: &'a [ParamInfo]) -> Option<&'a ParamInfo> {
        let key = |s: &str| s.chars().filter(|c| c.is_alphanumeric()).collect::<String>().to_lowercase();
        let named = |exact: bool, hidden: bool| {
            params.iter().find(|p| {
                p.is_hidden() == hidden
                    && if exact { p.name.eq_ignore_ascii_case(&self.name) } else { key(&p.name) == key(&self.name) }
            })
        };
        named(true, false)
            .or_else(|| named(true, true))
            .or_else(|| named(false, false))
            .or_else(|| named(false, true))
            .or_else(|| self.name.parse::<u32>().ok().and_then(|id| params.iter().find(|p| p.id == id)))
    }

    /// The parameter and host value this names on `instance` (whose
    /// parameters are `params`): the parameter as [`ParamSet::find`] finds
    /// it, the value through the plugin's `text_to_value`, else as a plain
    /// number. Read-only parameters are refused.
    pub fn resolve(&self, instance: &mut Instance, params: &[ParamInfo]) -> Result<ParamEvent, String> {
        let param = self.find(params).ok_or_else(|| {
            let names: Vec<String> =
                params.iter().filter(|p| !p.is_hidden()).map(|p| format!("{:?} (id {})", p.name, p.id)).collect();
            format!("--param {:?}: no such parameter; the plugin has {}", self.name, names.join(", "))
        })?;
        if param.is_readonly() {
            return Err(format!("--param {:?}: {:?} is read-only", self.name, param.name));
        }
        let value = instance
            .text_to_value(param.id, &self.value)
            .or_else(|| self.value.parse::<f64>().ok().filter(|v| v.is_finite()))
            .ok_or_else(|| {
                format!(
                    "--param {}={}: {:?} takes no such value (not as text, not as a number)",
                    self.name, self.value, param.name
                )
            })?;
        Ok(ParamEvent { sample: self.sample, id: param.id, value })
    }
}

impl FromStr for ParamSet {
    type Err = String;

    fn from_str(s: &str) -> Result<ParamSet, String> {
        ParamSet::parse(s)
    }
}

/// A resolved `--param`: a parameter value event at an absolute sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ParamEvent {
    /// Absolute sample from the run's start.
    pub sample: u64,
    /// The CLAP parameter id.
    pub id: u32,
    /// The plain value (in the parameter's own range, as `text_to_value` gives it), not normalised.
    pub value: f64,
}

/// What an output event is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputKind {
    /// CLAP_EVENT_NOTE_ON.
    NoteOn,
    /// CLAP_EVENT_NOTE_OFF.
    NoteOff,
    /// CLAP_EVENT_NOTE_CHOKE.
    NoteChoke,
    /// CLAP_EVENT_NOTE_END: the plugin says a voice has ended.
    NoteEnd,
    /// CLAP_EVENT_MIDI: a MIDI 1.0 message.
    Midi,
    /// CLAP_EVENT_PARAM_VALUE: the plugin changed a parameter (e.g. from its editor).
    ParamValue,
    /// CLAP_EVENT_PARAM_GESTURE_BEGIN: the user started adjusting a parameter.
    GestureBegin,
    /// CLAP_EVENT_PARAM_GESTURE_END: the user finished adjusting a parameter.
    GestureEnd,
    /// Any other event (another CLAP type or another event space), recorded without details.
    #[default]
    Other,
}

impl OutputKind {
    /// The kind as the report's JSON spells it (`note_on`, `param_value`, ...).
    pub fn name(self) -> &'static str {
        match self {
            OutputKind::NoteOn => "note_on",
            OutputKind::NoteOff => "note_off",
            OutputKind::NoteChoke => "note_choke",
            OutputKind::NoteEnd => "note_end",
            OutputKind::Midi => "midi",
            OutputKind::ParamValue => "param_value",
            OutputKind::GestureBegin => "gesture_begin",
            OutputKind::GestureEnd => "gesture_end",
            OutputKind::Other => "other",
        }
    }
}

/// One event the plugin pushed to the output list, compact (a few tens of
/// bytes) and `Copy`, so the audio thread records it into a preallocated
/// Vec. Absent fields hold a sentinel; the accessors give `Option`s.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OutputEvent {
    /// Absolute sample: the block's first frame plus the event's time.
    pub sample: u64,
    /// What kind of event it was.
    pub kind: OutputKind,
    key: i16,
    channel: i16,
    note_id: i64,
    param_id: i64,
    /// A note's velocity or a parameter's value; NaN: absent.
    number: f64,
    data: [u8; 3],
    data_len: u8,
}

impl OutputEvent {
    /// The record of `event`, which the plugin pushed in the block that
    /// starts at absolute sample `block_start`.
    pub fn from_event(block_start: u64, event: &UnknownEvent) -> OutputEvent {
        let mut out = OutputEvent {
            sample: block_start + u64::from(event.header().time()),
            kind: OutputKind::Other,
            key: -1,
            channel: -1,
            note_id: -1,
            param_id: -1,
            number: f64::NAN,
            data: [0; 3],
            data_len: 0,
        };
        let mut note = |kind, pckn: Pckn, velocity: Option<f64>| {
            out.kind = kind;
            out.key = pckn.key.into_specific().map_or(-1, |k| k.min(i16::MAX as u16) as i16);
            out.channel = pckn.channel.into_specific().map_or(-1, |c| c.min(i16::MAX as u16) as i16);
            out.note_id = pckn.note_id.into_specific().map_or(-1, i64::from);
            out.number = velocity.unwrap_or(f64::NAN);
        };
        match event.as_core_event() {
            Some(CoreEventSpace::NoteOn(e)) => note(OutputKind::NoteOn, e.pckn(), Some(e.velocity())),
            Some(CoreEventSpace::NoteOff(e)) => note(OutputKind::NoteOff, e.pckn(), Some(e.velocity())),
            Some(CoreEventSpace::NoteChoke(e)) => note(OutputKind::NoteChoke, e.pckn(), None),
            Some(CoreEventSpace::NoteEnd(e)) => note(OutputKind::NoteEnd, e.pckn(), None),
            Some(CoreEventSpace::Midi(e)) => {
                out.kind = OutputKind::Midi;
                out.data = e.data();
                out.data_len = midi_len(out.data[0]);
            }
            Some(CoreEventSpace::ParamValue(e)) => {
                out.kind = OutputKind::ParamValue;
                out.param_id = e.param_id().map_or(-1, |id| i64::from(id.get()));
                out.number = e.value();
            }
            Some(CoreEventSpace::ParamGestureBegin(e)) => {
                out.kind = OutputKind::GestureBegin;
                out.param_id = e.param_id().map_or(-1, |id| i64::from(id.get()));
            }
            Some(CoreEventSpace::ParamGestureEnd(e)) => {
                out.kind = OutputKind::GestureEnd;
                out.param_id = e.param_id().map_or(-1, |id| i64::from(id.get()));
            }
            _ => {}
        }
        out
    }

    /// A note event's key, where the event names one (not a wildcard).
    pub fn key(&self) -> Option<u16> {
        (self.key >= 0).then_some(self.key as u16)
    }

    /// A note event's channel, where the event names one (not a wildcard).
    pub fn channel(&self) -> Option<u16> {
        (self.channel >= 0).then_some(self.channel as u16)
    }

    /// A note event's note id, where the event names one (not a wildcard).
    pub fn note_id(&self) -> Option<u32> {
        (self.note_id >= 0).then_some(self.note_id as u32)
    }

    /// A parameter event's parameter id (value, gesture begin or end), where it names one.
    pub fn param_id(&self) -> Option<u32> {
        (self.param_id >= 0).then_some(self.param_id as u32)
    }

    /// A note's velocity (note on, note off).
    pub fn velocity(&self) -> Option<f64> {
        matches!(self.kind, OutputKind::NoteOn | OutputKind::NoteOff).then_some(self.number)
    }

    /// A parameter value event's value.
    pub fn value(&self) -> Option<f64> {
        (self.kind == OutputKind::ParamValue).then_some(self.number)
    }

    /// A MIDI event's bytes (the message's length, by its status byte).
    pub fn data(&self) -> Option<&[u8]> {
        (self.kind == OutputKind::Midi).then(|| &self.data[..usize::from(self.data_len)])
    }

    /// The event as a JSON object for the report's `output_events`; absent fields are null.
    pub fn to_json(&self) -> Value {
        json!({
            "sample": self.sample,
            "kind": self.kind.name(),
            "key": self.key(),
            "channel": self.channel(),
            "velocity": self.velocity(),
            "note_id": self.note_id(),
            "param_id": self.param_id(),
            "value": self.value(),
            "data": self.data(),
        })
    }
}

impl fmt::Display for OutputEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

/// The length of a MIDI 1.0 message by its status byte (3 for what is not
/// a channel message: the whole CLAP MIDI event).
fn midi_len(status: u8) -> u8 {
    match status & 0xf0 {
        0xc0 | 0xd0 => 2,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_files_parse_with_defaults_comments_and_note_ids() {
        let text = "# a test\n\
                    100 on 60\n\
                    50 on 64 0.5 3   # channel 3\n\
                    \n\
                    200 OFF 60 0.25\n\
                    300 off 64 0 3\n\
                    300 midi b0 07 64\n\
                    310 midi 0xc0 05\n\
                    400 off 61\n";
        let mut events = parse_notes(text).unwrap();
        events.sort_by_key(|e| e.sample);
        assign_note_ids(&mut events);
        let on = |sample, key, velocity, channel, note_id| NoteEvent {
            sample,
            kind: NoteKind::On,
            channel,
            key,
            velocity,
            note_id,
        };
        assert_eq!(events[0], on(50, 64, 0.5, 3, 0));
        assert_eq!(events[1], on(100, 60, 1.0, 0, 1));
        assert_eq!(
            (events[2].kind, events[2].key, events[2].velocity, events[2].note_id),
            (NoteKind::Off, 60, 0.25, 1)
        );
        assert_eq!((events[3].kind, events[3].channel, events[3].note_id), (NoteKind::Off, 3, 0));
        assert_eq!(events[4].kind, NoteKind::Midi { data: [0xb0, 0x07, 0x64], len: 3 });
        assert_eq!(events[5].kind, NoteKind::Midi { data: [0xc0, 0x05, 0], len: 2 });
        assert_eq!((events[6].key, events[6].note_id), (61, -1), "a note off for no held note: a wildcard");
        for (bad, why) in [
            ("x on 60", "not a sample"),
            ("1 on 128", "0-127"),
            ("1 on 60 1.5", "0..1"),
            ("1 on 60 1 16", "0-15"),
            ("1 hold 60", "not on, off or midi"),
            ("1 midi 3c 64", "status"),
            ("1 midi 90 80 10", "data byte"),
            ("1 midi 90 zz", "hexadecimal"),
            ("1", "on, off or midi"),
        ] {
            let err = parse_notes(&format!("# first\n{bad}\n")).unwrap_err();
            assert!(err.starts_with("2: ") && err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn patterns_are_a_held_chord_and_a_looping_scale_on_the_beat() {
        let chord = load_notes("pattern:chord", 120.0, 48_000, 48_000).unwrap();
        assert_eq!(
            chord.iter().map(|e| (e.sample, e.key, e.kind)).collect::<Vec<_>>(),
            [(0, 60, NoteKind::On), (0, 64, NoteKind::On), (0, 67, NoteKind::On)]
        );
        // 120 BPM: a beat every 24000 samples; 5 s = 10 beats.
        let scale = load_notes("pattern:scale", 120.0, 48_000, 240_000).unwrap();
        let ons: Vec<(u64, u8)> = scale.iter().filter(|e| e.kind == NoteKind::On).map(|e| (e.sample, e.key)).collect();
        assert_eq!(ons.len(), 10);
        assert_eq!(ons[..3], [(0, 60), (24_000, 62), (48_000, 64)]);
        assert_eq!(ons[8], (192_000, 60), "it loops");
        let offs: Vec<u64> = scale.iter().filter(|e| e.kind == NoteKind::Off).map(|e| e.sample).collect();
        assert_eq!(offs[..2], [12_000, 36_000]);
        assert!(scale.windows(2).all(|w| w[0].sample <= w[1].sample));
        let err = load_notes("pattern:arp", 120.0, 48_000, 1).unwrap_err();
        assert!(err.contains("pattern:chord"), "{err}");
        let err = load_notes("/nonexistent/notes.txt", 120.0, 48_000, 1).unwrap_err();
        assert!(err.contains("--notes /nonexistent/notes.txt"), "{err}");
    }

    #[test]
    fn param_settings_parse() {
        assert_eq!(
            ParamSet::parse("cutoff=500 Hz@4800").unwrap(),
            ParamSet { name: "cutoff".into(), value: "500 Hz".into(), sample: 4800 }
        );
        assert_eq!(ParamSet::parse("3=0.5@0").unwrap(), ParamSet { name: "3".into(), value: "0.5".into(), sample: 0 });
        assert_eq!(ParamSet::parse("a=b=c@1").unwrap().value, "b=c");
        for bad in ["cutoff=500", "cutoff@5", "=1@2", "x=@2", "x=1@-1", "x=1@y"] {
            assert!(ParamSet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn params_are_found_by_name_visible_first_then_by_id() {
        let hidden = clack_extensions::params::ParamInfoFlags::IS_HIDDEN.bits();
        let info = |id, name: &str, flags| ParamInfo { id, name: name.into(), flags, ..Default::default() };
        let params = [
            info(0, "Mix", 0),
            info(3, "Script 1", hidden),
            info(4, "cutoff", 0),
            info(5, "Dry Level", 0),
            info(6, "mix", hidden),
        ];
        let find =
            |name: &str| ParamSet { name: name.into(), value: "0".into(), sample: 0 }.find(&params).map(|p| p.id);
        assert_eq!(find("CUTOFF"), Some(4));
        assert_eq!(find("mix"), Some(0), "a visible parameter before a hidden one of the same name");
        assert_eq!(find("script 1"), Some(3), "hidden ones can be named");
        assert_eq!(find("dry_level"), Some(5), "spaces and underscores ignored");
        assert_eq!(find("5"), Some(5), "an id");
        assert_eq!(find("resonance"), None);
        assert_eq!(find("99"), None);
    }

    #[test]
    fn output_events_record_what_the_plugin_sent() {
        use clack_host::events::event_types::{ParamGestureBeginEvent, ParamValueEvent};
        use clack_host::prelude::ClapId;
        let on = NoteOnEvent::new(5, Pckn::new(0u16, 2u16, 72u16, Match::Specific(9u32)), 0.5);
        let e = OutputEvent::from_event(1000, on.as_ref());
        assert_eq!(
            (e.sample, e.kind, e.key(), e.channel(), e.note_id()),
            (1005, OutputKind::NoteOn, Some(72), Some(2), Some(9))
        );
        assert_eq!((e.velocity(), e.value(), e.param_id(), e.data()), (Some(0.5), None, None, None));
        let off = NoteOffEvent::new(0, Pckn::new(0u16, 0u16, 60u16, Match::All), 0.0);
        let e = OutputEvent::from_event(0, off.as_ref());
        assert_eq!((e.kind, e.note_id()), (OutputKind::NoteOff, None));
        let midi = MidiEvent::new(1, 0, [0xc1, 7, 0]);
        let e = OutputEvent::from_event(0, midi.as_ref());
        assert_eq!(e.data(), Some(&[0xc1, 7][..]));
        let v = ParamValueEvent::new(3, ClapId::new(4), Pckn::match_all(), 0.25);
        let e = OutputEvent::from_event(10, v.as_ref());
        assert_eq!((e.sample, e.kind, e.param_id(), e.value()), (13, OutputKind::ParamValue, Some(4), Some(0.25)));
        let g = ParamGestureBeginEvent::new(0, ClapId::new(4));
        let json = OutputEvent::from_event(0, g.as_ref()).to_json();
        assert_eq!(json["kind"], "gesture_begin");
        assert_eq!(json["param_id"], 4);
        assert!(json["value"].is_null() && json["key"].is_null() && json["data"].is_null());
    }
}
