//! A small native synth voice: what a track plays when a script's `tick`
//! sends it notes. Eight-note polyphony, fixed at creation; rendering is
//! realtime-safe (no allocation, bounded time).

/// The voice's sound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waveform {
    /// A pure sine.
    Sine,
    /// A band-unlimited sawtooth, softened by the envelope: bright on purpose.
    Saw,
    /// White noise (xorshift), pitched notes only gate it.
    Noise,
    /// A decaying sine, like a plucked string.
    Pluck,
}

const NOTES: usize = 8;

#[derive(Clone, Copy, Debug, Default)]
struct Note {
    active: bool,
    phase: f64,
    step: f64,
    velocity: f32,
    /// Samples since the note started.
    age: u64,
    /// Samples the note is held before its release.
    length: u64,
    /// The MIDI pitch it was started with (what a note off names).
    pitch: f32,
}

/// A polyphonic voice.
#[derive(Clone, Debug)]
pub struct Voice {
    waveform: Waveform,
    rate: f64,
    notes: [Note; NOTES],
    next: usize,
    noise: u32,
    gain: f32,
}

/// Attack, and release, in seconds.
const ATTACK: f64 = 0.003;
const RELEASE: f64 = 0.05;

impl Voice {
    /// A voice with no note sounding, at sample rate `rate` (Hz); each note's
    /// samples are scaled by its velocity and by `gain` (linear).
    pub fn new(waveform: Waveform, rate: f64, gain: f32) -> Voice {
        Voice { waveform, rate, notes: [Note::default(); NOTES], next: 0, noise: 0x9e37_79b9, gain }
    }

    /// Starts a note (MIDI pitch, may be fractional) for `duration` seconds
    /// (infinite: until [`Voice::note_off`]). Steals the oldest note when
    /// all eight sound.
    pub fn note_on(&mut self, pitch: f32, velocity: f32, duration: f32) {
        let freq = 440.0 * 2f64.powf((f64::from(pitch) - 69.0) / 12.0);
        let note = &mut self.notes[self.next];
        *note = Note {
            active: true,
            // Start at the crest so the onset sample is not zero: a note is
            // audible, and testable, from its first sample.
            phase: 0.25,
            step: (freq / self.rate).clamp(0.0, 0.5),
            velocity,
            age: 0,
            // Saturates: an infinite duration holds until the note off.
            length: (f64::from(duration.max(0.0)) * self.rate) as u64,
            pitch,
        };
        self.next = (self.next + 1) % NOTES;
    }

    /// Releases the held notes of `pitch` (from now on they fade out).
    pub fn note_off(&mut self, pitch: f32) {
        for note in self.notes.iter_mut().filter(|n| n.active && n.pitch == pitch && n.length > n.age) {
            note.length = note.age;
        }
    }

    /// Adds `out.len()` samples of the voice into `out`.
    pub fn render_add(&mut self, out: &mut [f32]) {
        let attack = (ATTACK * self.rate).max(1.0);
        let release = (RELEASE * self.rate).max(1.0);
        for note in self.notes.iter_mut().filter(|n| n.active) {
            for sample in out.iter_mut() {
                let age = note.age as f64;
                let env = if age < attack {
                    (age + 1.0) / attack
                } else if note.age < note.length {
                    1.0
                } else {
                    let r = 1.0 - (age - note.length as f64) / release;
                    if r <= 0.0 {
                        note.active = false;
                        break;
                    }
                    r
                };
                let p = note.phase;
                let raw = match self.waveform {
                    Waveform::Sine => (std::f64::consts::TAU * p).sin(),
                    Waveform::Saw => 1.0 - 2.0 * ((p + 0.25) % 1.0),
                    Waveform::Noise => {
                        self.noise ^= self.noise << 13;
                        self.noise ^= self.noise >> 17;
                        self.noise ^= self.noise << 5;
                        f64::from(self.noise) / f64::from(u32::MAX) * 2.0 - 1.0
                    }
                    Waveform::Pluck => (std::f64::consts::TAU * p).sin() * (-age / (0.15 * self.rate)).exp(),
                };
                *sample += (raw * env) as f32 * note.velocity * self.gain;
                note.phase = (p + note.step) % 1.0;
                note.age += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_sounds_from_its_first_sample_and_ends() {
        let mut voice = Voice::new(Waveform::Sine, 48_000.0, 1.0);
        let mut silent = [0.0f32; 64];
        voice.render_add(&mut silent);
        assert!(silent.iter().all(|&s| s == 0.0));
        voice.note_on(69.0, 1.0, 0.01);
        let mut out = vec![0.0f32; 48_000];
        voice.render_add(&mut out);
        assert!(out[0] > 0.0, "audible at once");
        let end = (0.01 + RELEASE) * 48_000.0;
        assert!(out[end as usize + 10..].iter().all(|&s| s == 0.0), "released");
        assert!(out.iter().all(|s| s.abs() <= 1.0));
        // Held until its note off, then released.
        voice.note_on(60.0, 1.0, f32::INFINITY);
        let mut held = vec![0.0f32; 4800];
        voice.render_add(&mut held);
        assert!(held[4000..].iter().any(|&s| s != 0.0));
        voice.note_off(60.0);
        let mut tail = vec![0.0f32; 4800];
        voice.render_add(&mut tail);
        assert!(tail[(RELEASE * 48_000.0) as usize + 10..].iter().all(|&s| s == 0.0));
    }
}
