//! The plugin's parameters: the plugin's own (Mix, DSP load, Bypass, the
//! read-only Late results) and a fixed bank of [`SLOTS`] script slots that
//! take the names, ranges and texts the script declares (`PARAMS`), their
//! values shared by the main and audio threads, and their text forms.
//!
//! Ids are stable forever (hosts store them in projects): a declared
//! parameter keeps its slot, and so its id, across edits and reloads while
//! its name stays (the worker places names; see `outboard_rt.Context`).
//! Slots the script does not use are hidden from the host.
//!
//! Values are what the host holds: the plugin's own in their units, a
//! script slot as 0..=1 (continuous) or a step number (stepped, choices);
//! see `outboard_engine::wire::declared`. They live in atomics: the audio thread
//! writes them as it meets parameter events, the main thread reads them for
//! the host (and writes them when a state is loaded, the host flushes while
//! inactive, or a script's declaration changes).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use outboard_engine::wire::declared::{DeclaredParam, Range};

/// Parameter ids: stable forever (hosts store them in projects).
pub const MIX: u32 = 0;
/// Id of DSP load: the stand-in DSP cost of the track, in partial-sum terms per 64-frame block.
pub const DSP_LOAD: u32 = 1;
/// Id of Bypass (the host's CLAP bypass parameter): plays the input dry, keeping the latency.
pub const BYPASS: u32 = 2;
/// Script slot k has id `FIRST_SLOT + k` (ids 3-6 were the knobs P1-P4:
/// an old project's values land on the first four slots).
pub const FIRST_SLOT: u32 = 3;
/// Script slots: as many as a script may declare.
pub const SLOTS: usize = outboard_engine::wire::declared::MAX_DECLARED;
/// Read-only: script results that were not back in time (dry played).
pub const LATE_RESULTS: u32 = 100;

/// The largest DSP load, in partial-sum terms per block: about 1 ms of one
/// core per 64-frame block here, far past any real-time budget.
pub const MAX_DSP_TERMS: f64 = 2_000_000.0;

/// The slot of parameter `id`, if it is a script slot.
pub fn slot_of(id: u32) -> Option<usize> {
    id.checked_sub(FIRST_SLOT).map(|k| k as usize).filter(|&k| k < SLOTS)
}

/// The id of script slot `k`.
pub fn slot_id(k: usize) -> u32 {
    FIRST_SLOT + k as u32
}

/// The value index a slot's parameter has on the wire to the script
/// (index 0 is the engine's wet level).
pub fn wire_index(k: usize) -> usize {
    k + 1
}

/// What a plugin parameter's value means, which decides its text form (see [`ParamSpec::format`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unit {
    /// A fraction 0..=1, shown as a percentage (Mix).
    Percent,
    /// A number of partial-sum terms per block (DSP load).
    Terms,
    /// Off (below 0.5) or On (Bypass).
    Switch,
    /// A count the plugin keeps, shown as a whole number; parameters in this unit are read-only (Late results).
    Count,
}

/// One of the plugin's own parameters.
#[derive(Clone, Copy, Debug)]
pub struct ParamSpec {
    /// The CLAP parameter id (one of the constants above); stable forever.
    pub id: u32,
    /// The name the host shows.
    pub name: &'static str,
    /// CLAP's `module` path, grouping parameters in a host's lists ("": top level).
    pub module: &'static str,
    /// The smallest value, in the parameter's unit.
    pub min: f64,
    /// The largest value, in the parameter's unit.
    pub max: f64,
    /// The value of a new instance.
    pub default: f64,
    /// Integer values only.
    pub stepped: bool,
    /// What the value means, and so its text form.
    pub unit: Unit,
}

/// The plugin's own parameters; the host lists them before the slots.
pub const FIXED: [ParamSpec; 4] = [
    ParamSpec {
        id: MIX,
        name: "Mix",
        module: "",
        min: 0.0,
        max: 1.0,
        default: 1.0,
        stepped: false,
        unit: Unit::Percent,
    },
    ParamSpec {
        id: DSP_LOAD,
        name: "DSP load",
        module: "",
        min: 0.0,
        max: MAX_DSP_TERMS,
        default: 0.0,
        stepped: true,
        unit: Unit::Terms,
    },
    ParamSpec {
        id: BYPASS,
        name: "Bypass",
        module: "",
        min: 0.0,
        max: 1.0,
        default: 0.0,
        stepped: true,
        unit: Unit::Switch,
    },
    ParamSpec {
        id: LATE_RESULTS,
        name: "Late results",
        module: "Diagnostics",
        min: 0.0,
        max: 1e15,
        default: 0.0,
        stepped: true,
        unit: Unit::Count,
    },
];

/// Parameters the host sees: the fixed ones, then the slots.
pub const COUNT: usize = FIXED.len() + SLOTS;

/// Index into [`FIXED`] of parameter `id`.
pub fn fixed_index(id: u32) -> Option<usize> {
    FIXED.iter().position(|p| p.id == id)
}

/// The id of the parameter the host lists at `index`.
pub fn id_at(index: usize) -> Option<u32> {
    match index {
        i if i < FIXED.len() => Some(FIXED[i].id),
        i if i < COUNT => Some(slot_id(i - FIXED.len())),
        _ => None,
    }
}

impl ParamSpec {
    /// Whether only the plugin sets this parameter (CLAP `IS_READONLY`): true for counters ([`Unit::Count`]).
    pub fn read_only(&self) -> bool {
        self.unit == Unit::Count
    }

    /// The value the plugin uses for `value`: in range, integer if stepped,
    /// `None` when it is not a number.
    pub fn sanitize(&self, value: f64) -> Option<f64> {
        if value.is_nan() {
            return None;
        }
        let value = value.clamp(self.min, self.max);
        Some(if self.stepped { value.round() } else { value })
    }

    /// Writes `value`'s text form, with its unit ("50.0 %", "1000 terms", "On"); [`parse`](Self::parse) reads it
    /// back.
    pub fn format(&self, value: f64, out: &mut impl std::fmt::Write) -> std::fmt::Result {
        match self.unit {
            Unit::Percent => write!(out, "{:.1} %", value * 100.0),
            Unit::Terms => write!(out, "{value:.0} terms"),
            Unit::Switch => write!(out, "{}", if value >= 0.5 { "On" } else { "Off" }),
            Unit::Count => write!(out, "{value:.0}"),
        }
    }

    /// Parses what a user typed, with or without the unit; `None` if it is
    /// not a value of this parameter.
    pub fn parse(&self, text: &str) -> Option<f64> {
        let text = text.trim();
        let value = match self.unit {
            Unit::Percent => text.strip_suffix('%').unwrap_or(text).trim().parse::<f64>().ok()? / 100.0,
            Unit::Terms => text.strip_suffix("terms").unwrap_or(text).trim().parse::<f64>().ok()?,
            Unit::Switch => match text.to_ascii_lowercase().as_str() {
                "on" | "1" | "true" | "yes" | "bypassed" => 1.0,
                "off" | "0" | "false" | "no" | "active" => 0.0,
                _ => return None,
            },
            Unit::Count => text.parse::<f64>().ok()?,
        };
        if !value.is_finite() {
            return None;
        }
        self.sanitize(value)
    }
}

/// A slot's range as the audio thread needs it to take a host value.
#[derive(Default)]
struct SlotRange {
    /// f64 bits of the largest value (1.0 for continuous and unused slots).
    max: AtomicU64,
    stepped: AtomicBool,
}

/// The current value of every parameter. A slot the script does not use
/// holds NaN ("not set": the script sees the declared default) until the
/// host or a state sets it.
pub struct ParamValues {
    fixed: [AtomicU64; FIXED.len()],
    slots: [AtomicU64; SLOTS],
    ranges: [SlotRange; SLOTS],
}

impl Default for ParamValues {
    fn default() -> Self {
        let values = ParamValues {
            fixed: std::array::from_fn(|i| AtomicU64::new(FIXED[i].default.to_bits())),
            slots: std::array::from_fn(|_| AtomicU64::new(f64::NAN.to_bits())),
            ranges: std::array::from_fn(|_| SlotRange::default()),
        };
        for k in 0..SLOTS {
            values.set_range(k, None);
        }
        values
    }
}

impl ParamValues {
    /// The value of parameter `id` (a fixed one or a slot; NaN for a slot not set); `None` for an unknown id.
    /// Any thread; realtime-safe.
    pub fn get(&self, id: u32) -> Option<f64> {
        match (fixed_index(id), slot_of(id)) {
            (Some(i), _) => Some(self.get_fixed(i)),
            (_, Some(k)) => Some(self.slot(k)),
            _ => None,
        }
    }

    /// The value of the plugin's own parameter at `index` in [`FIXED`] (see [`fixed_index`]). Any thread;
    /// realtime-safe. Panics if `index` is out of range.
    pub fn get_fixed(&self, index: usize) -> f64 {
        f64::from_bits(self.fixed[index].load(Ordering::Relaxed))
    }

    /// Slot k's value (NaN: not set).
    pub fn slot(&self, k: usize) -> f64 {
        f64::from_bits(self.slots[k].load(Ordering::Relaxed))
    }

    /// Slot k's range: a declared parameter's, or 0..=1 for an unused slot
    /// (main thread, when a declaration comes).
    pub fn set_range(&self, k: usize, param: Option<&DeclaredParam>) {
        let (max, stepped) = param.map_or((1.0, false), |p| (p.host_max(), p.stepped()));
        self.ranges[k].max.store(f64::to_bits(max), Ordering::Relaxed);
        self.ranges[k].stepped.store(stepped, Ordering::Relaxed);
    }

    /// Sets slot k outright (main thread: NaN unsets it).
    pub fn put_slot(&self, k: usize, value: f64) {
        self.slots[k].store(value.to_bits(), Ordering::Relaxed);
    }

    /// What slot k takes for the host value `value`: in its range, on a
    /// step if stepped; `None` for NaN. Realtime-safe.
    pub fn slot_value_for(&self, k: usize, value: f64) -> Option<f64> {
        if value.is_nan() {
            return None;
        }
        let max = f64::from_bits(self.ranges[k].max.load(Ordering::Relaxed));
        let v = value.clamp(0.0, max);
        Some(if self.ranges[k].stepped.load(Ordering::Relaxed) { v.round() } else { v })
    }

    /// Sets a writable parameter from a host value (sanitised); false if the
    /// id is unknown, read-only, or the value is not a number. Realtime-safe.
    pub fn set(&self, id: u32, value: f64) -> bool {
        if value.is_nan() {
            return false;
        }
        if let Some(k) = slot_of(id) {
            let Some(v) = self.slot_value_for(k, value) else { return false };
            self.slots[k].store(v.to_bits(), Ordering::Relaxed);
            return true;
        }
        let Some(index) = fixed_index(id) else { return false };
        let spec = &FIXED[index];
        match spec.sanitize(value) {
            Some(value) if !spec.read_only() => {
                self.fixed[index].store(value.to_bits(), Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Sets a read-only (diagnostic) value. Realtime-safe.
    pub fn report(&self, id: u32, value: f64) {
        if let Some(index) = fixed_index(id) {
            self.fixed[index].store(value.to_bits(), Ordering::Relaxed);
        }
    }

    /// (id, value) of every writable parameter that has a value, ascending
    /// by id: what a state saves.
    pub fn saved(&self) -> Vec<(u32, f64)> {
        let mut saved: Vec<(u32, f64)> = FIXED
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.read_only())
            .map(|(i, p)| (p.id, self.get_fixed(i)))
            .chain((0..SLOTS).map(|k| (slot_id(k), self.slot(k))).filter(|(_, v)| !v.is_nan()))
            .collect();
        saved.sort_by_key(|&(id, _)| id);
        saved
    }
}

/// Text for a slot's value: the declared parameter's, or a plain number.
pub fn format_slot(param: Option<&DeclaredParam>, value: f64, out: &mut impl std::fmt::Write) -> std::fmt::Result {
    match param {
        Some(p) => p.format(value, out),
        None => write!(out, "{value:.3}"),
    }
}

/// A slot's value from text.
pub fn parse_slot(param: Option<&DeclaredParam>, text: &str) -> Option<f64> {
    match param {
        Some(p) => p.parse(text),
        None => text.trim().parse::<f64>().ok().filter(|v| v.is_finite()).map(|v| v.clamp(0.0, 1.0)),
    }
}

/// Whether the host sees the slot's parameter as a list of names.
pub fn is_enum(param: &DeclaredParam) -> bool {
    matches!(param.range, Range::Choices(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_are_stable_for_every_fixed_parameter() {
        for spec in FIXED {
            for step in 0..=20 {
                let value = spec.sanitize(spec.min + (spec.max - spec.min) * step as f64 / 20.0).unwrap();
                let mut text = String::new();
                spec.format(value, &mut text).unwrap();
                let parsed = spec.parse(&text).unwrap_or_else(|| panic!("{} cannot parse {text:?}", spec.name));
                let mut again = String::new();
                spec.format(parsed, &mut again).unwrap();
                assert_eq!(text, again, "{}: {value} -> {text:?} -> {parsed} -> {again:?}", spec.name);
                assert!((parsed - value).abs() <= (spec.max - spec.min) * 1e-3, "{}: {value} vs {parsed}", spec.name);
            }
            assert_eq!(spec.parse("not a number"), None);
            assert_eq!(spec.parse("nan"), None);
            assert_eq!(spec.parse("inf"), None);
        }
    }

    #[test]
    fn values_are_sanitised_and_read_only_ones_refused() {
        let values = ParamValues::default();
        assert!(values.set(MIX, 7.0));
        assert_eq!(values.get(MIX), Some(1.0));
        assert!(values.set(DSP_LOAD, 10.4));
        assert_eq!(values.get(DSP_LOAD), Some(10.0));
        assert!(!values.set(MIX, f64::NAN));
        assert!(!values.set(LATE_RESULTS, 3.0));
        assert!(!values.set(77, 1.0));
        // Slots: unset until set, clamped to their range, saved once set.
        assert!(values.get(slot_id(0)).unwrap().is_nan());
        assert_eq!(values.saved().len(), 3);
        assert!(values.set(slot_id(0), 3.0));
        assert_eq!(values.get(slot_id(0)), Some(1.0));
        let body = br#"{"params":[{"index":1,"name":"n","choices":["a","b","c"],"default":1}]}"#;
        let d = outboard_engine::wire::declared::Declaration::from_json(body).unwrap();
        values.set_range(1, Some(&d.params[0]));
        assert!(values.set(slot_id(1), 1.6));
        assert_eq!(values.get(slot_id(1)), Some(2.0));
        let saved = values.saved();
        assert_eq!(saved.len(), 5);
        assert!(saved.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(slot_of(slot_id(SLOTS - 1)), Some(SLOTS - 1));
        assert_eq!(slot_of(slot_id(SLOTS)), None);
        assert_eq!(slot_of(LATE_RESULTS), None);
        assert_eq!(id_at(FIXED.len()), Some(FIRST_SLOT));
    }
}
