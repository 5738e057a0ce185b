//! What a script declares: its parameters (`PARAMS`), whether it is an
//! instrument script, its description, as the worker reports them
//! ([`super::control::Reply::ScriptDeclared`]).
//!
//! The worker is untrusted: [`Declaration::from_json`] checks every field
//! (sizes, ranges, indices, text lengths) and refuses the whole declaration
//! if one is wrong. Nothing here is realtime: declarations are read on the
//! supervisor's thread and a plugin's main thread.
//!
//! Values travel as a host holds them: a continuous parameter as 0..=1
//! (mapped linearly or logarithmically onto min..=max), a stepped or choice
//! parameter as its step number 0..count-1. The script sees them in its own
//! units (the worker's runtime converts the same way, `outboard_rt.Param`).

use serde_json::Value;

use super::block::MAX_PARAMS;
use super::control::{JsonBody, ProtocolError};

/// Declared parameters a script may have.
pub const MAX_DECLARED: usize = 32;
/// Characters a parameter's name may have.
pub const MAX_NAME_CHARS: usize = 32;
/// Characters a parameter's unit may have.
pub const MAX_UNIT_CHARS: usize = 16;
/// Choices a choice parameter may have (it needs at least two).
pub const MAX_CHOICES: usize = 128;
/// Characters one choice may have.
pub const MAX_CHOICE_CHARS: usize = 64;
/// Characters of the script's docstring kept (the rest is cut off).
pub const MAX_DOC_CHARS: usize = 4096;
/// Steps a stepped parameter may have.
pub const MAX_STEPS: usize = 1 << 20;

/// How a parameter's values run.
#[derive(Clone, Debug, PartialEq)]
pub enum Range {
    /// min..=max, shown to the host as 0..=1.
    Continuous {
        /// The lowest value, in the parameter's units.
        min: f64,
        /// The highest value, above `min`.
        max: f64,
        /// Mapped logarithmically (`min` is then positive), else linearly.
        log: bool,
    },
    /// min, min + step, ... (`count` values), shown as 0..count-1.
    Stepped {
        /// The first value, in the parameter's units.
        min: f64,
        /// The distance between neighbouring values (positive).
        step: f64,
        /// How many values there are, 2..=[`MAX_STEPS`].
        count: usize,
    },
    /// One of the names, shown as 0..count-1.
    Choices(Vec<String>),
}

/// One declared parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct DeclaredParam {
    /// Its index among the values a block carries (1..[`MAX_PARAMS`]).
    pub index: usize,
    /// Its name, unique in the declaration: what the script looks it up by
    /// (at most [`MAX_NAME_CHARS`] characters).
    pub name: String,
    /// Its unit (empty when none; at most [`MAX_UNIT_CHARS`] characters).
    pub unit: String,
    /// How its values run.
    pub range: Range,
    /// The default, as the host holds it (0..=1, or a step number).
    pub default: f64,
    /// The default as declared, in its units (numbers only).
    pub default_units: Option<f64>,
}

/// What one script declares. Two are equal when they declare the same
/// (their JSON texts may differ: spacing, key order, the worker's slot).
#[derive(Clone, Debug, Default)]
pub struct Declaration {
    /// The declared parameters, at most [`MAX_DECLARED`], no two with the same index or name.
    pub params: Vec<DeclaredParam>,
    /// The script says it is for Outboard Instrument (`INSTRUMENT = True`).
    pub instrument: bool,
    /// The module's docstring.
    pub doc: String,
    /// The JSON this was read from, as the worker sent it (what a plugin
    /// saves, so that a saved state round-trips byte for byte).
    pub source: String,
}

impl PartialEq for Declaration {
    fn eq(&self, other: &Declaration) -> bool {
        self.params == other.params && self.instrument == other.instrument && self.doc == other.doc
    }
}

impl JsonBody for Declaration {
    /// The canonical text it was read from (without the worker's slot).
    fn to_json(&self) -> Vec<u8> {
        self.source.clone().into_bytes()
    }

    fn from_json(body: &[u8]) -> Result<Declaration, ProtocolError> {
        Declaration::from_json(body).map_err(ProtocolError)
    }
}

impl Declaration {
    /// Reads a worker's `ScriptDeclared` body (the `slot` field is the
    /// caller's business). Refuses anything out of bounds.
    pub fn from_json(body: &[u8]) -> Result<Declaration, String> {
        let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
        let v = match v {
            Value::Object(_) => v,
            _ => return Err("not a JSON object".into()),
        };
        let params = v["params"].as_array().ok_or("no params list")?;
        if params.len() > MAX_DECLARED {
            return Err(format!("{} parameters (at most {MAX_DECLARED})", params.len()));
        }
        let mut out = Vec::with_capacity(params.len());
        for p in params {
            let param = DeclaredParam::from_json(p)?;
            if out.iter().any(|q: &DeclaredParam| q.index == param.index || q.name == param.name) {
                return Err(format!("parameter {:?} repeats an index or a name", param.name));
            }
            out.push(param);
        }
        let doc = v["doc"].as_str().unwrap_or_default();
        Ok(Declaration {
            params: out,
            instrument: v["instrument"].as_bool().unwrap_or(false),
            doc: doc.chars().take(MAX_DOC_CHARS).collect(),
            source: canonical(v),
        })
    }

    /// The declared parameter named `name`, if there is one.
    pub fn param(&self, name: &str) -> Option<&DeclaredParam> {
        self.params.iter().find(|p| p.name == name)
    }

    /// The docstring's first paragraph on one line (what a preset browser
    /// or a host shows as the description).
    pub fn summary(&self) -> String {
        summary(&self.doc)
    }
}

/// The declaration's JSON in one canonical form: without the worker's
/// `slot` (where the track sits in its worker, which changes with every
/// placement), keys sorted (serde_json's map is ordered), numbers as they
/// round-trip. Two reads of the same declaration give the same text, so a
/// saved state stays byte for byte the same, and reading a canonical text
/// gives it back unchanged.
fn canonical(mut v: Value) -> String {
    if let Some(map) = v.as_object_mut() {
        map.remove("slot");
    }
    v.to_string()
}

/// The first paragraph of a docstring, on one line.
pub fn summary(doc: &str) -> String {
    let paragraph: Vec<&str> = doc.trim().lines().map(str::trim).take_while(|l| !l.is_empty()).collect();
    paragraph.join(" ")
}

fn text(v: &Value, key: &str, max: usize) -> Result<String, String> {
    match &v[key] {
        Value::Null => Ok(String::new()),
        Value::String(s) if s.chars().count() <= max && !s.contains('\0') => Ok(s.clone()),
        _ => Err(format!("{key} is not a text of at most {max} characters")),
    }
}

fn finite(v: &Value, key: &str) -> Result<f64, String> {
    v[key].as_f64().filter(|x| x.is_finite() && x.abs() < 1e15).ok_or_else(|| format!("{key} is not a finite number"))
}

impl DeclaredParam {
    fn from_json(v: &Value) -> Result<DeclaredParam, String> {
        let name = text(v, "name", MAX_NAME_CHARS)?;
        if name.is_empty() {
            return Err("a parameter without a name".into());
        }
        let index = v["index"].as_u64().filter(|&i| (1..MAX_PARAMS as u64).contains(&i));
        let index = index.ok_or_else(|| format!("{name:?}: index out of 1..{MAX_PARAMS}"))? as usize;
        let unit = text(v, "unit", MAX_UNIT_CHARS)?;
        let range = if let Some(choices) = v["choices"].as_array() {
            if !(2..=MAX_CHOICES).contains(&choices.len()) {
                return Err(format!("{name:?}: {} choices", choices.len()));
            }
            let choices: Vec<String> = choices
                .iter()
                .map(|c| c.as_str().filter(|c| !c.is_empty() && c.chars().count() <= MAX_CHOICE_CHARS))
                .map(|c| c.map(str::to_string).ok_or_else(|| format!("{name:?}: a choice that is not a short text")))
                .collect::<Result<_, _>>()?;
            if (1..choices.len()).any(|i| choices[..i].contains(&choices[i])) {
                return Err(format!("{name:?}: repeated choices"));
            }
            Range::Choices(choices)
        } else {
            let (min, max) = (finite(v, "min")?, finite(v, "max")?);
            if min >= max {
                return Err(format!("{name:?}: min {min} is not below max {max}"));
            }
            match v["step"].as_f64() {
                Some(step) => {
                    if !(step.is_finite() && step > 0.0) {
                        return Err(format!("{name:?}: step {step}"));
                    }
                    let count = ((max - min) / step + 1e-9).floor() + 1.0;
                    if !(2.0..=MAX_STEPS as f64).contains(&count) {
                        return Err(format!("{name:?}: {count} steps"));
                    }
                    Range::Stepped { min, step, count: count as usize }
                }
                None => {
                    let log = v["scale"].as_str() == Some("log");
                    if log && min <= 0.0 {
                        return Err(format!("{name:?}: a log scale from {min}"));
                    }
                    Range::Continuous { min, max, log }
                }
            }
        };
        let mut param = DeclaredParam { index, name, unit, range, default: 0.0, default_units: None };
        let default = finite(v, "default")?;
        // A choice's default comes as its number; a number's in its units.
        param.default = match param.range {
            Range::Choices(_) => param.clamp(default).round(),
            _ => param.from_units(default),
        };
        if !matches!(param.range, Range::Choices(_)) {
            param.default_units = Some(default.clamp(param.to_units(0.0), param.to_units(param.host_max())));
        }
        Ok(param)
    }

    /// The largest value a host may set (1 for continuous parameters).
    pub fn host_max(&self) -> f64 {
        match &self.range {
            Range::Continuous { .. } => 1.0,
            Range::Stepped { count, .. } => (*count - 1) as f64,
            Range::Choices(c) => (c.len() - 1) as f64,
        }
    }

    /// Whether the host sees whole steps.
    pub fn stepped(&self) -> bool {
        !matches!(self.range, Range::Continuous { .. })
    }

    /// A host value brought into range (and onto a step).
    pub fn clamp(&self, value: f64) -> f64 {
        let v = if value.is_nan() { self.default } else { value.clamp(0.0, self.host_max()) };
        if self.stepped() { v.round() } else { v }
    }

    /// The value in the script's units for a host value (choices: the
    /// choice's number).
    pub fn to_units(&self, value: f64) -> f64 {
        let v = self.clamp(value);
        if v == self.default {
            // Exactly the declared default, not its log round trip.
            if let Some(units) = self.default_units {
                return units;
            }
        }
        match &self.range {
            Range::Continuous { min, max, log: true } => min * (max / min).powf(v),
            Range::Continuous { min, max, log: false } => min + v * (max - min),
            Range::Stepped { min, step, .. } => min + v * step,
            Range::Choices(_) => v,
        }
    }

    /// The host value for a value in the script's units (clamped).
    pub fn from_units(&self, units: f64) -> f64 {
        let v = match &self.range {
            Range::Continuous { min, max, log } => {
                let u = units.clamp(*min, *max);
                if *log { (u / min).ln() / (max / min).ln() } else { (u - min) / (max - min) }
            }
            Range::Stepped { min, step, .. } => (units - min) / step,
            Range::Choices(_) => units,
        };
        self.clamp(v)
    }

    /// The value as text, in its units ("1.200 kHz", "250.0 Hz", "lowpass").
    pub fn format(&self, value: f64, out: &mut impl std::fmt::Write) -> std::fmt::Result {
        let units = self.to_units(value);
        if let Range::Choices(choices) = &self.range {
            return write!(out, "{}", choices[units as usize]);
        }
        let integral =
            matches!(self.range, Range::Stepped { min, step, .. } if min.fract() == 0.0 && step.fract() == 0.0);
        // kHz from what shows as 1000.0 Hz on (a log default's round trip
        // may land a hair below it).
        let (shown, unit) = if self.unit == "Hz" && (units.abs() * 10.0).round() >= 10_000.0 {
            (units / 1000.0, "kHz")
        } else {
            (units, self.unit.as_str())
        };
        if integral {
            write!(out, "{shown:.0}")?;
        } else {
            // Three significant digits or more.
            let decimals = match shown.abs() {
                a if a >= 100.0 => 1,
                a if a >= 10.0 => 2,
                _ => 3,
            };
            write!(out, "{shown:.decimals$}")?;
        }
        if !unit.is_empty() {
            write!(out, " {unit}")?;
        }
        Ok(())
    }

    /// Parses what a user typed (with or without the unit; "1.2 kHz" too);
    /// `None` if it is not a value of this parameter.
    pub fn parse(&self, text: &str) -> Option<f64> {
        let text = text.trim();
        if let Range::Choices(choices) = &self.range {
            return choices
                .iter()
                .position(|c| c.eq_ignore_ascii_case(text))
                .map(|i| i as f64)
                .or_else(|| text.parse::<f64>().ok().filter(|v| v.is_finite()).map(|v| self.clamp(v)));
        }
        let (number, scale) = if let Some(n) = text.strip_suffix("kHz").filter(|_| self.unit == "Hz") {
            (n, 1000.0)
        } else {
            (text.strip_suffix(self.unit.as_str()).filter(|_| !self.unit.is_empty()).unwrap_or(text), 1.0)
        };
        let units = number.trim().parse::<f64>().ok().filter(|v| v.is_finite())? * scale;
        Some(self.from_units(units))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declaration() -> Declaration {
        let body = br#"{"slot":0,"instrument":true,"doc":"A filter.\nWith two knobs.\n\nMore.","params":[
            {"index":1,"name":"cutoff","min":20,"max":20000,"default":1000,"unit":"Hz","scale":"log","step":null,"choices":null},
            {"index":3,"name":"mode","min":0,"max":1,"default":1,"unit":"","scale":"linear","step":null,"choices":["lowpass","highpass"]},
            {"index":2,"name":"steps","min":1,"max":16,"default":4,"unit":"","scale":"linear","step":1,"choices":null},
            {"index":4,"name":"drive","min":0,"max":1,"default":0.2,"unit":"","scale":"linear","step":null,"choices":null}]}"#;
        Declaration::from_json(body).unwrap()
    }

    #[test]
    fn a_declaration_is_read_with_its_ranges_and_defaults() {
        let d = declaration();
        assert!(d.instrument);
        assert_eq!(d.summary(), "A filter. With two knobs.");
        let cutoff = d.param("cutoff").unwrap();
        assert!((cutoff.to_units(cutoff.default) - 1000.0).abs() < 1e-6);
        assert_eq!(cutoff.to_units(0.0), 20.0);
        assert!((cutoff.to_units(1.0) - 20000.0).abs() < 1e-6);
        let mode = d.param("mode").unwrap();
        assert_eq!((mode.default, mode.host_max()), (1.0, 1.0));
        let steps = d.param("steps").unwrap();
        assert_eq!((steps.default, steps.host_max(), steps.to_units(15.0)), (3.0, 15.0, 16.0));
    }

    #[test]
    fn the_saved_text_is_canonical_and_leaves_out_the_slot() {
        let d = declaration();
        assert!(!d.source.contains("\"slot\""), "{}", d.source);
        let again = Declaration::from_json(d.source.as_bytes()).unwrap();
        assert_eq!(again, d, "reading the canonical text gives the same declaration");
        assert_eq!(again.source, d.source, "and the same text");
        // The same declaration from another slot is the same declaration.
        let moved = d.source.replacen('{', "{\"slot\":7,", 1);
        assert_eq!(Declaration::from_json(moved.as_bytes()).unwrap(), d);
    }

    #[test]
    fn text_round_trips_are_stable() {
        let d = declaration();
        for p in &d.params {
            for i in 0..=20 {
                let value = p.clamp(p.host_max() * i as f64 / 20.0);
                let mut text = String::new();
                p.format(value, &mut text).unwrap();
                let parsed = p.parse(&text).unwrap_or_else(|| panic!("{}: cannot parse {text:?}", p.name));
                let mut again = String::new();
                p.format(parsed, &mut again).unwrap();
                assert_eq!(text, again, "{}", p.name);
            }
            assert_eq!(p.parse("nonsense"), None);
        }
        let cutoff = d.param("cutoff").unwrap();
        let mut text = String::new();
        cutoff.format(cutoff.from_units(1200.0), &mut text).unwrap();
        assert_eq!(text, "1.200 kHz");
        assert!((cutoff.to_units(cutoff.parse("250 Hz").unwrap()) - 250.0).abs() < 1e-9);
        assert_eq!(d.param("mode").unwrap().parse("HighPass"), Some(1.0));
    }

    #[test]
    fn hostile_declarations_are_refused() {
        let ok = r#"{"index":1,"name":"a","min":0,"max":1,"default":0}"#;
        assert!(Declaration::from_json(format!(r#"{{"params":[{ok}]}}"#).as_bytes()).is_ok());
        for bad in [
            r#"{"index":0,"name":"a","min":0,"max":1,"default":0}"#,
            r#"{"index":40,"name":"a","min":0,"max":1,"default":0}"#,
            r#"{"index":1,"name":"","min":0,"max":1,"default":0}"#,
            r#"{"index":1,"name":"a","min":1,"max":1,"default":0}"#,
            r#"{"index":1,"name":"a","min":0,"max":1e400,"default":0}"#,
            r#"{"index":1,"name":"a","min":-1,"max":1,"default":0,"scale":"log"}"#,
            r#"{"index":1,"name":"a","min":0,"max":1e9,"default":0,"step":1e-9}"#,
            r#"{"index":1,"name":"a","choices":["x"],"default":0}"#,
            r#"{"index":1,"name":"a","choices":["x","x"],"default":0}"#,
            r#"{"index":1,"name":"a","min":0,"max":1}"#,
            r#"{"index":1,"name":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","min":0,"max":1,"default":0}"#,
        ] {
            let body = format!(r#"{{"params":[{bad}]}}"#);
            assert!(Declaration::from_json(body.as_bytes()).is_err(), "{bad}");
        }
        let twice = format!(r#"{{"params":[{ok},{ok}]}}"#);
        assert!(Declaration::from_json(twice.as_bytes()).is_err());
        let many: Vec<String> = (1..=33)
            .map(|i| format!(r#"{{"index":{},"name":"p{i}","min":0,"max":1,"default":0}}"#, i.min(39)))
            .collect();
        assert!(Declaration::from_json(format!(r#"{{"params":[{}]}}"#, many.join(",")).as_bytes()).is_err());
        assert!(Declaration::from_json(b"[1,2").is_err());
    }
}
