//! Messages between the host and a worker over the control rings: framing,
//! reassembly with every length checked, and the job request/reply bodies.
//!
//! A message is one or more ring slots ("fragments"). Each fragment starts with
//! a 16-byte little-endian header: kind (u16), flags (u16, bit 0 = more
//! fragments follow), reserved (u32), message id (u64); the rest of the slot is
//! body. A ring has one producer, so the fragments of one message are
//! contiguous. The reader checks that continuations match the first fragment's
//! kind and id and that the whole message stays under [`MAX_MESSAGE_BYTES`];
//! anything else is a [`ProtocolError`], never a panic.
//!
//! Job bodies are JSON: the host is not realtime here, and a job's arguments
//! and result are whatever JSON values the script takes and returns.

use std::fmt;
use std::path::PathBuf;

use serde_json::{Value, json};

/// Bytes of the fragment header.
pub const FRAGMENT_HEADER: usize = 16;
/// Largest message (all fragments) a reader accepts.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;
const FLAG_MORE: u16 = 1;

/// What a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Kind {
    /// Host → worker: run a job (body: [`JobRequest`] JSON).
    JobRequest = 1,
    /// Worker → host: a job's outcome (body: [`JobReply`] JSON).
    JobReply = 2,
    /// Host → worker: exit cleanly (empty body).
    Shutdown = 3,
    /// Host → worker: run a script on a track slot (body: [`ScriptSpec`] JSON).
    LoadScript = 4,
    /// Host → worker: stop a track slot's script (body: `{"slot": n}`).
    UnloadScript = 5,
    /// Worker → host: a slot's script was loaded (body: `{"slot": n, "ok": bool}`);
    /// the worker is ready to answer that track's blocks. In answer to
    /// [`Kind::Warm`], the body is `{"warm": true}`.
    ScriptLoaded = 6,
    /// Host → worker: start the realtime runtime (the interpreter, numpy,
    /// the Python environment) with no script, to stand by as a spare
    /// (empty body); answered with [`Kind::ScriptLoaded`].
    Warm = 7,
    /// Worker → host: what a slot's script declares (body: JSON
    /// `{"slot": n, "params": [...], "instrument": bool, "doc": str}`, read
    /// by [`crate::wire::declared::Declaration::from_json`]); sent after each load
    /// and reload, before [`Kind::ScriptLoaded`] for a load.
    ScriptDeclared = 8,
}

impl Kind {
    fn from_u16(value: u16) -> Option<Kind> {
        match value {
            1 => Some(Kind::JobRequest),
            2 => Some(Kind::JobReply),
            3 => Some(Kind::Shutdown),
            4 => Some(Kind::LoadScript),
            5 => Some(Kind::UnloadScript),
            6 => Some(Kind::ScriptLoaded),
            7 => Some(Kind::Warm),
            8 => Some(Kind::ScriptDeclared),
            _ => None,
        }
    }
}

/// A whole message, reassembled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub kind: Kind,
    pub id: u64,
    pub body: Vec<u8>,
}

/// A message that no well-behaved peer would send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// Splits a message into fragments of at most `slot_payload` bytes each.
pub fn fragments(kind: Kind, id: u64, body: &[u8], slot_payload: usize) -> Vec<Vec<u8>> {
    assert!(slot_payload > FRAGMENT_HEADER, "slots too small for a fragment header");
    let chunk = slot_payload - FRAGMENT_HEADER;
    let mut chunks: Vec<&[u8]> = body.chunks(chunk).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, part)| {
            let flags = if i < last { FLAG_MORE } else { 0 };
            let mut fragment = Vec::with_capacity(FRAGMENT_HEADER + part.len());
            fragment.extend_from_slice(&(kind as u16).to_le_bytes());
            fragment.extend_from_slice(&flags.to_le_bytes());
            fragment.extend_from_slice(&0u32.to_le_bytes());
            fragment.extend_from_slice(&id.to_le_bytes());
            fragment.extend_from_slice(part);
            fragment
        })
        .collect()
}

/// Reassembles fragments into messages, validating as it goes.
#[derive(Default)]
pub struct Reassembler {
    partial: Option<Message>,
}

impl Reassembler {
    /// Feeds one fragment; returns a message when its last fragment arrives.
    pub fn push(&mut self, fragment: &[u8]) -> Result<Option<Message>, ProtocolError> {
        if fragment.len() < FRAGMENT_HEADER {
            return Err(ProtocolError(format!("fragment of {} bytes, shorter than its header", fragment.len())));
        }
        let raw_kind = u16::from_le_bytes([fragment[0], fragment[1]]);
        let flags = u16::from_le_bytes([fragment[2], fragment[3]]);
        let id = u64::from_le_bytes(fragment[8..16].try_into().expect("8 bytes"));
        let kind = Kind::from_u16(raw_kind).ok_or_else(|| ProtocolError(format!("unknown message kind {raw_kind}")))?;
        let body = &fragment[FRAGMENT_HEADER..];
        let message = match self.partial.take() {
            None => Message { kind, id, body: body.to_vec() },
            Some(mut message) => {
                if message.kind != kind || message.id != id {
                    return Err(ProtocolError(format!(
                        "fragment of {kind:?} {id} inside {:?} {}",
                        message.kind, message.id
                    )));
                }
                if message.body.len() + body.len() > MAX_MESSAGE_BYTES {
                    return Err(ProtocolError(format!("message longer than {MAX_MESSAGE_BYTES} bytes")));
                }
                message.body.extend_from_slice(body);
                message
            }
        };
        if flags & FLAG_MORE != 0 {
            self.partial = Some(message);
            Ok(None)
        } else {
            Ok(Some(message))
        }
    }
}

/// A script to run on one track slot of a worker, with the track's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ScriptSpec {
    /// Which pair of rings in the worker's region the track uses.
    pub slot: usize,
    pub track: u32,
    pub name: String,
    pub path: PathBuf,
    pub channels: usize,
    pub frames: usize,
    pub rate: f64,
    pub latency_blocks: usize,
    /// Names of the track's own parameters, by index (index 0 is "mix").
    pub params: Vec<String>,
    /// Where the script's declared parameters were placed before (names by
    /// index, empty where none): a name declared again goes back there.
    pub hints: Vec<String>,
    /// Their current values, by index, for `setup` to see (missing: 0).
    pub values: Vec<f32>,
    /// The track is an instrument (`ctx.instrument`): no audio comes in.
    pub instrument: bool,
}

impl ScriptSpec {
    pub fn to_json(&self) -> Vec<u8> {
        json!({
            "slot": self.slot, "track": self.track, "name": self.name, "path": self.path,
            "channels": self.channels, "frames": self.frames, "rate": self.rate,
            "latency_blocks": self.latency_blocks, "params": self.params, "hints": self.hints, "values": self.values,
            "instrument": self.instrument,
        })
        .to_string()
        .into_bytes()
    }

    pub fn from_json(body: &[u8]) -> Result<ScriptSpec, ProtocolError> {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| ProtocolError(format!("script spec is not JSON: {e}")))?;
        let num = |key: &str| v[key].as_u64().ok_or_else(|| ProtocolError(format!("script spec without {key}")));
        Ok(ScriptSpec {
            slot: num("slot")? as usize,
            track: u32::try_from(num("track")?).map_err(|_| ProtocolError("track id out of range".into()))?,
            name: v["name"].as_str().unwrap_or_default().to_string(),
            path: v["path"].as_str().ok_or_else(|| ProtocolError("script spec without path".into()))?.into(),
            channels: num("channels")? as usize,
            frames: num("frames")? as usize,
            rate: v["rate"].as_f64().ok_or_else(|| ProtocolError("script spec without rate".into()))?,
            latency_blocks: num("latency_blocks")? as usize,
            params: v["params"]
                .as_array()
                .map(|a| a.iter().filter_map(|p| p.as_str().map(str::to_string)).collect())
                .unwrap_or_default(),
            hints: v["hints"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .take(crate::wire::block::MAX_PARAMS)
                        .map(|p| p.as_str().unwrap_or_default().to_string())
                        .collect()
                })
                .unwrap_or_default(),
            values: v["values"]
                .as_array()
                // JSON has no NaN (a value not set yet): it comes as null, and stays NaN.
                .map(|a| {
                    a.iter()
                        .take(crate::wire::block::MAX_PARAMS)
                        .map(|x| x.as_f64().map_or(f32::NAN, |x| x as f32))
                        .collect()
                })
                .unwrap_or_default(),
            instrument: v["instrument"].as_bool().unwrap_or(false),
        })
    }
}

/// A job for a worker: call `function(*args)` from the Python file `file`.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRequest {
    pub file: PathBuf,
    pub function: String,
    pub args: Vec<Value>,
}

impl JobRequest {
    pub fn new(file: impl Into<PathBuf>, function: impl Into<String>, args: Vec<Value>) -> Self {
        JobRequest { file: file.into(), function: function.into(), args }
    }

    pub fn to_json(&self) -> Vec<u8> {
        json!({"file": self.file, "function": self.function, "args": self.args}).to_string().into_bytes()
    }

    pub fn from_json(body: &[u8]) -> Result<JobRequest, ProtocolError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| ProtocolError(format!("job request is not JSON: {e}")))?;
        let file = value["file"].as_str().ok_or_else(|| ProtocolError("job request without a file".into()))?;
        let function =
            value["function"].as_str().ok_or_else(|| ProtocolError("job request without a function".into()))?;
        let args = match &value["args"] {
            Value::Array(args) => args.clone(),
            Value::Null => Vec::new(),
            _ => return Err(ProtocolError("job request args is not a list".into())),
        };
        Ok(JobRequest { file: file.into(), function: function.into(), args })
    }
}

/// Why a job failed: a Python error with where it happened, or the worker's death.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobError {
    /// The Python exception type (`ZeroDivisionError`, `SyntaxError`, ...), or
    /// `ScriptNotFound`, `MissingFunction`, `WorkerDied`, `ProtocolError`.
    pub kind: String,
    pub message: String,
    /// The script file the error points into, when there is one.
    pub file: Option<String>,
    /// The line in `file`, when there is one.
    pub line: Option<u32>,
    /// The Python traceback, formatted as Python prints it (may be empty).
    pub traceback: String,
}

impl JobError {
    pub fn new(kind: &str, message: impl Into<String>) -> Self {
        JobError { kind: kind.into(), message: message.into(), file: None, line: None, traceback: String::new() }
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{file}:{line}: ")?,
            (Some(file), None) => write!(f, "{file}: ")?,
            _ => {}
        }
        write!(f, "{}: {}", self.kind, self.message)?;
        if !self.traceback.is_empty() {
            write!(f, "\n{}", self.traceback.trim_end())?;
        }
        Ok(())
    }
}

impl std::error::Error for JobError {}

/// A job's outcome as the worker reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct JobReply {
    pub result: Result<Value, JobError>,
    /// Seconds the worker spent on the job (loading the script included).
    pub seconds: f64,
}

impl JobReply {
    pub fn to_json(&self) -> Vec<u8> {
        let value = match &self.result {
            Ok(value) => json!({"ok": true, "value": value, "seconds": self.seconds}),
            Err(e) => json!({
                "ok": false, "seconds": self.seconds, "kind": e.kind, "message": e.message,
                "file": e.file, "line": e.line, "traceback": e.traceback,
            }),
        };
        value.to_string().into_bytes()
    }

    pub fn from_json(body: &[u8]) -> Result<JobReply, ProtocolError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| ProtocolError(format!("job reply is not JSON: {e}")))?;
        let seconds = value["seconds"].as_f64().filter(|s| s.is_finite() && *s >= 0.0).unwrap_or(0.0);
        let result = match value["ok"].as_bool() {
            Some(true) => Ok(value["value"].clone()),
            Some(false) => {
                let text = |key: &str| value[key].as_str().unwrap_or_default().to_string();
                Err(JobError {
                    kind: text("kind"),
                    message: text("message"),
                    file: value["file"].as_str().map(str::to_string),
                    line: value["line"].as_u64().and_then(|l| u32::try_from(l).ok()),
                    traceback: text("traceback"),
                })
            }
            None => return Err(ProtocolError("job reply without ok".into())),
        };
        Ok(JobReply { result, seconds })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_reassemble_to_the_message() {
        let body: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        for payload in [17, 64, 4096, 20_000] {
            let mut reader = Reassembler::default();
            let frags = fragments(Kind::JobReply, 77, &body, payload);
            assert!(frags.iter().all(|f| f.len() <= payload));
            let mut got = None;
            for (i, f) in frags.iter().enumerate() {
                let out = reader.push(f).unwrap();
                assert_eq!(out.is_some(), i == frags.len() - 1);
                got = out;
            }
            assert_eq!(got, Some(Message { kind: Kind::JobReply, id: 77, body: body.clone() }));
        }
        let empty = fragments(Kind::Shutdown, 1, &[], 64);
        assert_eq!(Reassembler::default().push(&empty[0]).unwrap().unwrap().body, Vec::<u8>::new());
    }

    #[test]
    fn bad_fragments_are_errors() {
        let mut reader = Reassembler::default();
        assert!(reader.push(&[1, 2, 3]).is_err());
        let mut unknown = fragments(Kind::JobReply, 1, b"x", 64).remove(0);
        unknown[0] = 99;
        assert!(reader.push(&unknown).is_err());
        let frags = fragments(Kind::JobReply, 1, &[0; 100], 32);
        let mut reader = Reassembler::default();
        reader.push(&frags[0]).unwrap();
        let intruder = fragments(Kind::JobReply, 2, b"x", 64).remove(0);
        assert!(reader.push(&intruder).unwrap_err().0.contains("inside"));
    }

    #[test]
    fn endless_messages_are_cut_off() {
        let mut reader = Reassembler::default();
        let more = fragments(Kind::JobReply, 5, &[0; 8192], 4096 + FRAGMENT_HEADER).remove(0);
        let mut result = Ok(None);
        for _ in 0..(MAX_MESSAGE_BYTES / 4096 + 2) {
            result = reader.push(&more);
            if result.is_err() {
                break;
            }
        }
        assert!(result.is_err());
    }

    #[test]
    fn job_bodies_round_trip() {
        let request = JobRequest::new("/tmp/x.py", "f", vec![json!(1), json!("two")]);
        assert_eq!(JobRequest::from_json(&request.to_json()).unwrap(), request);
        let ok = JobReply { result: Ok(json!([1.5])), seconds: 0.25 };
        assert_eq!(JobReply::from_json(&ok.to_json()).unwrap(), ok);
        let err = JobReply {
            result: Err(JobError {
                kind: "ValueError".into(),
                message: "bad".into(),
                file: Some("/tmp/x.py".into()),
                line: Some(3),
                traceback: "Traceback ...".into(),
            }),
            seconds: 0.0,
        };
        assert_eq!(JobReply::from_json(&err.to_json()).unwrap(), err);
        assert!(JobReply::from_json(b"{}").is_err());
        assert!(JobRequest::from_json(b"[1]").is_err());
    }
}

#[cfg(test)]
mod proptests {
    //! Whatever fragments a worker sends, in whatever order, the reassembler
    //! returns errors or messages made of one message's fragments only, and
    //! the JSON bodies parse to a value or an error: never a panic.
    use proptest::prelude::*;

    use super::*;

    const KINDS: [Kind; 6] =
        [Kind::JobRequest, Kind::JobReply, Kind::Shutdown, Kind::LoadScript, Kind::UnloadScript, Kind::ScriptLoaded];

    fn kind() -> impl Strategy<Value = Kind> {
        prop::sample::select(KINDS.to_vec())
    }

    /// What a fragment claims: kind, id, and whether more follow.
    fn parse(fragment: &[u8]) -> Option<(Kind, u64, bool)> {
        let header = fragment.get(..FRAGMENT_HEADER)?;
        let kind = Kind::from_u16(u16::from_le_bytes([header[0], header[1]]))?;
        let more = u16::from_le_bytes([header[2], header[3]]) & FLAG_MORE != 0;
        Some((kind, u64::from_le_bytes(header[8..16].try_into().unwrap()), more))
    }

    /// JSON values of every type, nested a few levels (no floats: serde_json
    /// does not promise to read every float back bit for bit).
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(".{0,6}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A JSON object with the keys the parsers look for, holding values of any type.
    fn body_with_keys(keys: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
        let value = prop_oneof![
            json(),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            (0u64..=u32::MAX as u64 + 1).prop_map(Value::from),
            (-2i64..3).prop_map(Value::from),
        ];
        prop::collection::vec(prop::option::of(value), keys.len()).prop_map(move |values| {
            let map = keys.iter().zip(values).filter_map(|(k, v)| Some((k.to_string(), v?))).collect();
            Value::Object(map).to_string().into_bytes()
        })
    }

    proptest! {
        #![proptest_config(crate::proptest_config::cases(256))]

        #[test]
        fn fragments_reassemble_to_the_message(
            kind in kind(),
            id in any::<u64>(),
            body in prop::collection::vec(any::<u8>(), 0..3000),
            payload in FRAGMENT_HEADER + 1..300,
        ) {
            let frags = fragments(kind, id, &body, payload);
            let mut reader = Reassembler::default();
            let last = frags.len() - 1;
            for (i, f) in frags.iter().enumerate() {
                prop_assert!(f.len() <= payload);
                let out = reader.push(f).unwrap();
                if i < last {
                    prop_assert!(out.is_none());
                } else {
                    prop_assert_eq!(out, Some(Message { kind, id, body: body.clone() }));
                }
            }
        }

        /// Fragments of several messages (distinct ids) interleaved, with
        /// garbage between: every message returned is one message's run of
        /// consecutive fragments, never a mix; without interleaving or
        /// garbage, every message comes out whole and nothing is an error.
        #[test]
        fn interleaved_and_garbage_fragments_never_mix_messages(
            messages in prop::collection::vec((kind(), prop::collection::vec(any::<u8>(), 0..200)), 1..4),
            payload in FRAGMENT_HEADER + 1..64,
            order in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
            garbage in prop::collection::vec(
                prop::option::weighted(0.15, prop::collection::vec(any::<u8>(), 0..40)), 0..40),
            contiguous in any::<bool>(),
        ) {
            let messages: Vec<(Kind, u64, Vec<u8>)> =
                messages.into_iter().enumerate().map(|(id, (kind, body))| (kind, id as u64, body)).collect();
            let mut queues: Vec<std::collections::VecDeque<Vec<u8>>> = messages
                .iter()
                .map(|(kind, id, body)| fragments(*kind, *id, body, payload).into())
                .collect();
            let mut feed: Vec<Vec<u8>> = Vec::new();
            if contiguous {
                feed = queues.iter_mut().flat_map(|q| q.drain(..)).collect();
            } else {
                for (pick, junk) in order.iter().zip(garbage.iter().chain(std::iter::repeat(&None))) {
                    if let Some(junk) = junk {
                        feed.push(junk.clone());
                    }
                    let live: Vec<usize> = (0..queues.len()).filter(|&i| !queues[i].is_empty()).collect();
                    if live.is_empty() {
                        break;
                    }
                    let q = live[pick.index(live.len())];
                    feed.push(queues[q].pop_front().unwrap());
                }
            }
            let mut reader = Reassembler::default();
            let mut whole = Vec::new();
            for (i, fragment) in feed.iter().enumerate() {
                match reader.push(fragment) {
                    Ok(None) => {}
                    Ok(Some(m)) => {
                        prop_assert!(m.body.len() <= MAX_MESSAGE_BYTES);
                        // Fragments up to i of this kind and id (all but i saying
                        // more follow; fragments too short or of no known kind
                        // are refused without disturbing a message in progress):
                        // the body is one such run's bodies.
                        let same = |f: &Vec<u8>| parse(f).is_some_and(|(k, id, _)| k == m.kind && id == m.id);
                        prop_assert!(same(fragment) && !parse(fragment).unwrap().2);
                        let known: Vec<&Vec<u8>> = feed[..i].iter().filter(|f| parse(f).is_some()).collect();
                        let mut run = vec![fragment];
                        for f in known.iter().rev().take_while(|f| same(f) && parse(f).unwrap().2) {
                            run.insert(0, f);
                        }
                        let body = |s: usize| run[s..].iter().flat_map(|f| f[FRAGMENT_HEADER..].iter().copied());
                        prop_assert!((0..run.len()).any(|s| body(s).eq(m.body.iter().copied())), "mixed message");
                        whole.push((m.kind, m.id, m.body));
                    }
                    Err(e) => prop_assert!(!contiguous, "{}", e),
                }
            }
            if contiguous {
                prop_assert_eq!(whole, messages);
            }
        }

        #[test]
        fn any_bytes_are_a_fragment_or_an_error(
            fragments in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..20)
        ) {
            let mut reader = Reassembler::default();
            for fragment in &fragments {
                if let Ok(Some(m)) = reader.push(fragment) {
                    prop_assert!(parse(fragment).is_some_and(|(k, id, more)| k == m.kind && id == m.id && !more));
                }
            }
        }

        #[test]
        fn any_bytes_parse_or_fail_cleanly(body in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = JobRequest::from_json(&body);
            let _ = JobReply::from_json(&body);
            let _ = ScriptSpec::from_json(&body);
        }

        #[test]
        fn any_json_parses_or_fails_cleanly(value in json()) {
            let body = value.to_string().into_bytes();
            let _ = JobRequest::from_json(&body);
            let _ = JobReply::from_json(&body);
            let _ = ScriptSpec::from_json(&body);
        }

        /// Replies with the right keys holding values of any type: what parses
        /// holds only sane values.
        #[test]
        fn job_replies_hold_sane_values(
            body in body_with_keys(&["ok", "value", "seconds", "kind", "message", "file", "line", "traceback"])
        ) {
            if let Ok(reply) = JobReply::from_json(&body) {
                prop_assert!(reply.seconds.is_finite() && reply.seconds >= 0.0);
            }
        }

        #[test]
        fn script_specs_and_requests_hold_sane_values(
            spec in body_with_keys(&["slot", "track", "name", "path", "channels", "frames", "rate", "latency_blocks", "params"]),
            request in body_with_keys(&["file", "function", "args"]),
        ) {
            let _ = ScriptSpec::from_json(&spec);
            let _ = JobRequest::from_json(&request);
        }

        #[test]
        fn job_bodies_round_trip(
            file in ".{0,20}",
            function in ".{0,12}",
            args in prop::collection::vec(json(), 0..4),
            value in json(),
            error in prop::option::of((".{0,8}", ".{0,20}", prop::option::of(".{0,10}"), prop::option::of(any::<u32>()), ".{0,30}")),
            seconds in prop_oneof![Just(0.0), Just(0.25), Just(1.5)],
        ) {
            let request = JobRequest::new(file, function, args);
            prop_assert_eq!(JobRequest::from_json(&request.to_json()).unwrap(), request);
            let result = match error {
                None => Ok(value),
                Some((kind, message, file, line, traceback)) => Err(JobError { kind, message, file, line, traceback }),
            };
            let reply = JobReply { result, seconds };
            prop_assert_eq!(JobReply::from_json(&reply.to_json()).unwrap(), reply);
        }
    }

    /// JSON nested past serde_json's recursion limit is an error, not a stack overflow.
    #[test]
    fn deeply_nested_json_is_refused() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(JobReply::from_json(deep.as_bytes()).is_err());
        let deep = format!("{{\"ok\": true, \"value\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(JobReply::from_json(deep.as_bytes()).is_err());
    }
}
