//! The plugin's parameters: their table, their values (shared by the main
//! and audio threads), and their text forms.
//!
//! Values are plain (not normalised): what the host automates is what the
//! plugin uses. They live in atomics: the audio thread writes them as it
//! meets parameter events, the main thread reads them for the host (and
//! writes them when a state is loaded or the host flushes while inactive).

use std::sync::atomic::{AtomicU64, Ordering};

/// Parameter ids: stable forever (hosts store them in projects).
pub const MIX: u32 = 0;
pub const DSP_LOAD: u32 = 1;
pub const BYPASS: u32 = 2;
/// Four free knobs a script reads as `ctx.params["p1"]` ... `["p4"]`.
pub const SCRIPT_KNOBS: [u32; 4] = [3, 4, 5, 6];
/// Read-only: script results that were not back in time (dry played).
pub const LATE_RESULTS: u32 = 100;

/// The largest DSP load, in partial-sum terms per block: about 1 ms of one
/// core per 64-frame block here, far past any real-time budget.
pub const MAX_DSP_TERMS: f64 = 2_000_000.0;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unit {
    Percent,
    Terms,
    Switch,
    Plain,
    Count,
}

#[derive(Clone, Copy, Debug)]
pub struct ParamSpec {
    pub id: u32,
    pub name: &'static str,
    pub module: &'static str,
    pub min: f64,
    pub max: f64,
    pub default: f64,
    /// Integer values only.
    pub stepped: bool,
    pub unit: Unit,
}

/// Script knob `k` (0-3): 0 to 1, read by the script as `ctx.params["p{k+1}"]`.
const fn script_knob(k: usize, name: &'static str) -> ParamSpec {
    ParamSpec {
        id: SCRIPT_KNOBS[k],
        name,
        module: "Script",
        min: 0.0,
        max: 1.0,
        default: 0.0,
        stepped: false,
        unit: Unit::Plain,
    }
}

/// Every parameter, in the order the host lists them. Only the writable
/// ones are saved in the state.
pub const PARAMS: [ParamSpec; 8] = [
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
    script_knob(0, "P1"),
    script_knob(1, "P2"),
    script_knob(2, "P3"),
    script_knob(3, "P4"),
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

/// Index into [`PARAMS`] of parameter `id`.
pub fn index_of(id: u32) -> Option<usize> {
    PARAMS.iter().position(|p| p.id == id)
}

impl ParamSpec {
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

    pub fn format(&self, value: f64, out: &mut impl std::fmt::Write) -> std::fmt::Result {
        match self.unit {
            Unit::Percent => write!(out, "{:.1} %", value * 100.0),
            Unit::Terms => write!(out, "{value:.0} terms"),
            Unit::Switch => write!(out, "{}", if value >= 0.5 { "On" } else { "Off" }),
            Unit::Plain => write!(out, "{value:.3}"),
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
            Unit::Plain | Unit::Count => text.parse::<f64>().ok()?,
        };
        if !value.is_finite() {
            return None;
        }
        self.sanitize(value)
    }
}

/// The current value of every parameter.
pub struct ParamValues {
    values: [AtomicU64; PARAMS.len()],
}

impl Default for ParamValues {
    fn default() -> Self {
        ParamValues { values: std::array::from_fn(|i| AtomicU64::new(PARAMS[i].default.to_bits())) }
    }
}

impl ParamValues {
    pub fn get(&self, id: u32) -> Option<f64> {
        index_of(id).map(|i| self.get_index(i))
    }

    pub fn get_index(&self, index: usize) -> f64 {
        f64::from_bits(self.values[index].load(Ordering::Relaxed))
    }

    /// Sets a writable parameter from a host value (sanitised); false if the
    /// id is unknown, read-only, or the value is not a number. Realtime-safe.
    pub fn set(&self, id: u32, value: f64) -> bool {
        let Some(index) = index_of(id) else { return false };
        let spec = &PARAMS[index];
        match spec.sanitize(value) {
            Some(value) if !spec.read_only() => {
                self.values[index].store(value.to_bits(), Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Sets a read-only (diagnostic) value. Realtime-safe.
    pub fn report(&self, id: u32, value: f64) {
        if let Some(index) = index_of(id) {
            self.values[index].store(value.to_bits(), Ordering::Relaxed);
        }
    }

    /// (id, value) of every writable parameter, ascending by id: what a state saves.
    pub fn saved(&self) -> Vec<(u32, f64)> {
        PARAMS.iter().enumerate().filter(|(_, p)| !p.read_only()).map(|(i, p)| (p.id, self.get_index(i))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_are_stable_for_every_parameter() {
        for spec in PARAMS {
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
        assert_eq!(values.saved().len(), PARAMS.len() - 1);
        assert!(values.saved().windows(2).all(|w| w[0].0 < w[1].0));
    }
}
