//! Control messages between the host and a worker, on the control rings
//! ([`super::rings::REQUEST_RING`], [`super::rings::REPLY_RING`]): framing,
//! reassembly with every length checked, and the typed messages of each
//! direction, [`Request`] (host → worker) and [`Reply`] (worker → host).
//!
//! A message is one or more ring slots ("fragments"). Each fragment starts with
//! a 16-byte little-endian header: kind (u16), flags (u16, bit 0 = more
//! fragments follow), reserved (u32), message id (u64); the rest of the slot is
//! body. A ring has one producer, so the fragments of one message are
//! contiguous. The reader checks that continuations match the first fragment's
//! kind and id and that the whole message stays under [`MAX_MESSAGE_BYTES`];
//! anything else is a [`ProtocolError`], never a panic.
//!
//! | kind | direction | message | body |
//! | --- | --- | --- | --- |
//! | 1 | host → worker | [`Request::Job`] | [`JobRequest`] JSON |
//! | 2 | worker → host | [`Reply::Job`] | [`JobReply`] JSON |
//! | 3 | host → worker | [`Request::Shutdown`] | empty |
//! | 4 | host → worker | [`Request::LoadScript`] | [`ScriptSpec`] JSON |
//! | 5 | host → worker | [`Request::UnloadScript`] | `{"slot": n}` |
//! | 6 | worker → host | [`Reply::ScriptLoaded`], [`Reply::Warm`] | `{"slot": n, "ok": bool}`, `{"warm": true}` |
//! | 7 | host → worker | [`Request::Warm`] | empty |
//! | 8 | worker → host | [`Reply::ScriptDeclared`] | [`Declaration`] JSON with its `slot` |
//!
//! Bodies are JSON (serde): the control rings are not realtime, and a job's
//! arguments and result are whatever JSON values the script takes and
//! returns. A job's request and reply are read and written by the worker's
//! Python runtime, so the worker passes them through as [`Json`] bytes; the
//! host encodes the one and decodes the other.

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::block::MAX_PARAMS;
use super::declared::Declaration;
use super::rings::CONTROL_RING;

/// Bytes of the fragment header.
pub const FRAGMENT_HEADER: usize = 16;
/// Largest message (all fragments) a reader accepts.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;
const FLAG_MORE: u16 = 1;

/// The kind number in a fragment header (see the table in the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
enum Kind {
    JobRequest = 1,
    JobReply = 2,
    Shutdown = 3,
    LoadScript = 4,
    UnloadScript = 5,
    ScriptLoaded = 6,
    Warm = 7,
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

    /// Whether messages of this kind go from the worker to the host.
    fn is_reply(self) -> bool {
        matches!(self, Kind::JobReply | Kind::ScriptLoaded | Kind::ScriptDeclared)
    }
}

/// A whole message, reassembled, not yet decoded: [`Request::decode`] or
/// [`Reply::decode`] makes it a message of its direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    kind: Kind,
    /// The message id: a job's, else 0.
    pub id: u64,
    body: Vec<u8>,
}

impl Message {
    /// Whether it is a worker → host message (a [`Reply`]).
    pub fn is_reply(&self) -> bool {
        self.kind.is_reply()
    }
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
fn fragments(kind: Kind, id: u64, body: &[u8], slot_payload: usize) -> Vec<Vec<u8>> {
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

/// A message body that travels as JSON.
pub trait JsonBody: Sized {
    /// Encodes the body as JSON bytes.
    fn to_json(&self) -> Vec<u8>;
    /// Reads a body a peer sent: any bytes give a value or an error.
    fn from_json(body: &[u8]) -> Result<Self, ProtocolError>;
}

/// A JSON body of type `T`, carried as its bytes: encoded by whoever
/// writes it, decoded by whoever reads it (for jobs: the host and the
/// worker's Python runtime; the worker itself passes them through).
pub struct Json<T> {
    bytes: Vec<u8>,
    body: PhantomData<fn() -> T>,
}

impl<T> Json<T> {
    /// Bytes written elsewhere in `T`'s shape (by the worker's Python
    /// runtime), not checked here: the reader decodes them.
    pub fn from_bytes(bytes: Vec<u8>) -> Json<T> {
        Json { bytes, body: PhantomData }
    }

    /// The JSON bytes, as carried.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl<T: JsonBody> Json<T> {
    /// Encodes `value`.
    pub fn new(value: &T) -> Json<T> {
        Json::from_bytes(value.to_json())
    }

    /// Decodes the bytes as a `T`; an error means whoever wrote them sent no valid `T`.
    pub fn decode(&self) -> Result<T, ProtocolError> {
        T::from_json(&self.bytes)
    }
}

impl<T> Clone for Json<T> {
    fn clone(&self) -> Self {
        Json::from_bytes(self.bytes.clone())
    }
}

impl<T> PartialEq for Json<T> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl<T> fmt::Debug for Json<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Json({})", String::from_utf8_lossy(&self.bytes))
    }
}

/// Host → worker.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// Run a job; answered by [`Reply::Job`] with the same id.
    Job {
        /// The job's id, which its reply carries back.
        id: u64,
        /// What to run: a [`JobRequest`], as JSON.
        body: Json<JobRequest>,
    },
    /// Exit cleanly.
    Shutdown,
    /// Run a script on a track slot; answered by [`Reply::ScriptDeclared`]
    /// (if it declares anything) and then [`Reply::ScriptLoaded`].
    LoadScript(ScriptSpec),
    /// Stop a track slot's script.
    UnloadScript {
        /// The track slot whose script stops.
        slot: usize,
    },
    /// Start the realtime runtime (the interpreter, numpy, the Python
    /// environment) with no script, to stand by as a spare; answered by
    /// [`Reply::Warm`].
    Warm,
}

/// Worker → host.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// A job's outcome.
    Job {
        /// The id of the job's request.
        id: u64,
        /// Its outcome: a [`JobReply`], as JSON.
        body: Json<JobReply>,
    },
    /// A slot's script was loaded (`ok`: cleanly; either way the worker now
    /// answers that track's blocks).
    ScriptLoaded {
        /// The track slot the script was loaded on.
        slot: usize,
        /// Whether it loaded without an error.
        ok: bool,
    },
    /// The runtime is started (the answer to [`Request::Warm`]).
    Warm,
    /// What a slot's script declares, sent after each load and reload
    /// (before [`Reply::ScriptLoaded`] for a load). The body is the
    /// worker's runtime's JSON, `slot` included.
    ScriptDeclared {
        /// The track slot whose script declared.
        slot: usize,
        /// The declaration: a [`Declaration`], as JSON.
        body: Json<Declaration>,
    },
}

/// The body of [`Request::UnloadScript`].
#[derive(Serialize, Deserialize)]
struct SlotBody {
    slot: usize,
}

/// The body of [`Reply::ScriptLoaded`] and [`Reply::Warm`].
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum LoadedBody {
    Script { slot: usize, ok: bool },
    Warm { warm: bool },
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("control bodies are JSON (paths must be UTF-8)")
}

fn from_json<'a, T: Deserialize<'a>>(what: &str, body: &'a [u8]) -> Result<T, ProtocolError> {
    serde_json::from_slice(body).map_err(|e| ProtocolError(format!("malformed {what}: {e}")))
}

impl Request {
    /// The fragments to push on the request ring, in order.
    pub fn fragments(&self) -> Vec<Vec<u8>> {
        let (kind, id, body) = match self {
            Request::Job { id, body } => (Kind::JobRequest, *id, body.as_bytes().to_vec()),
            Request::Shutdown => (Kind::Shutdown, 0, Vec::new()),
            Request::LoadScript(spec) => (Kind::LoadScript, 0, spec.to_json()),
            Request::UnloadScript { slot } => (Kind::UnloadScript, 0, to_json(&SlotBody { slot: *slot })),
            Request::Warm => (Kind::Warm, 0, Vec::new()),
        };
        fragments(kind, id, &body, CONTROL_RING.payload)
    }

    /// Decodes a message read off the request ring.
    pub fn decode(message: Message) -> Result<Request, ProtocolError> {
        Ok(match message.kind {
            Kind::JobRequest => Request::Job { id: message.id, body: Json::from_bytes(message.body) },
            Kind::Shutdown => Request::Shutdown,
            Kind::LoadScript => Request::LoadScript(ScriptSpec::from_json(&message.body)?),
            Kind::UnloadScript => {
                Request::UnloadScript { slot: from_json::<SlotBody>("unload request", &message.body)?.slot }
            }
            Kind::Warm => Request::Warm,
            other => return Err(ProtocolError(format!("{other:?} is not a request"))),
        })
    }
}

impl Reply {
    /// The fragments to push on the reply ring, in order.
    pub fn fragments(&self) -> Vec<Vec<u8>> {
        let (kind, id, body) = match self {
            Reply::Job { id, body } => (Kind::JobReply, *id, body.as_bytes().to_vec()),
            Reply::ScriptLoaded { slot, ok } => {
                (Kind::ScriptLoaded, 0, to_json(&LoadedBody::Script { slot: *slot, ok: *ok }))
            }
            Reply::Warm => (Kind::ScriptLoaded, 0, to_json(&LoadedBody::Warm { warm: true })),
            Reply::ScriptDeclared { body, .. } => (Kind::ScriptDeclared, 0, body.as_bytes().to_vec()),
        };
        fragments(kind, id, &body, CONTROL_RING.payload)
    }

    /// Decodes a message read off the reply ring.
    pub fn decode(message: Message) -> Result<Reply, ProtocolError> {
        Ok(match message.kind {
            Kind::JobReply => Reply::Job { id: message.id, body: Json::from_bytes(message.body) },
            Kind::ScriptLoaded => match from_json::<LoadedBody>("load reply", &message.body)? {
                LoadedBody::Script { slot, ok } => Reply::ScriptLoaded { slot, ok },
                LoadedBody::Warm { .. } => Reply::Warm,
            },
            Kind::ScriptDeclared => {
                let slot = from_json::<SlotBody>("declaration", &message.body)?.slot;
                Reply::ScriptDeclared { slot, body: Json::from_bytes(message.body) }
            }
            other => return Err(ProtocolError(format!("{other:?} is not a reply"))),
        })
    }
}

/// A script to run on one track slot of a worker, with the track's shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScriptSpec {
    /// Which pair of rings in the worker's region the track uses.
    pub slot: usize,
    /// The track's id, which every block header of the slot carries.
    pub track: u32,
    /// The track's name, for messages (may be empty).
    #[serde(default)]
    pub name: String,
    /// The script file to run.
    pub path: PathBuf,
    /// Channels per block.
    pub channels: usize,
    /// Frames per channel in each block.
    pub frames: usize,
    /// Sample rate, in Hz.
    pub rate: f64,
    /// L: the track plays a block's result L blocks after pushing the block.
    pub latency_blocks: usize,
    /// Names of the track's own parameters, by index (index 0 is "mix").
    #[serde(default)]
    pub params: Vec<String>,
    /// Where the script's declared parameters were placed before (names by
    /// index, empty where none): a name declared again goes back there.
    #[serde(default)]
    pub hints: Vec<String>,
    /// Their current values, by index, for `setup` to see (missing: 0). A
    /// value not set yet is NaN, which JSON carries as null.
    #[serde(default, with = "nan_as_null")]
    pub values: Vec<f32>,
    /// The track is an instrument (`ctx.instrument`): no audio comes in.
    #[serde(default)]
    pub instrument: bool,
}

impl JsonBody for ScriptSpec {
    fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }

    fn from_json(body: &[u8]) -> Result<ScriptSpec, ProtocolError> {
        let mut spec: ScriptSpec = from_json("script spec", body)?;
        spec.hints.truncate(MAX_PARAMS);
        spec.values.truncate(MAX_PARAMS);
        Ok(spec)
    }
}

/// f32 values with NaN as JSON null (JSON has no NaN).
mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(values: &[f32], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(values.iter().map(|v| (!v.is_nan()).then_some(*v)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<f32>, D::Error> {
        let values = Vec::<Option<f64>>::deserialize(deserializer)?;
        Ok(values.into_iter().map(|v| v.map_or(f32::NAN, |v| v as f32)).collect())
    }
}

/// A job for a worker: call `function(*args)` from the Python file `file`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRequest {
    /// The Python file that defines the function.
    pub file: PathBuf,
    /// The name of the function to call.
    pub function: String,
    /// Its positional arguments, as JSON values (none when missing).
    #[serde(default)]
    pub args: Vec<Value>,
}

impl JobRequest {
    /// A job that calls `function(*args)` from `file`.
    pub fn new(file: impl Into<PathBuf>, function: impl Into<String>, args: Vec<Value>) -> Self {
        JobRequest { file: file.into(), function: function.into(), args }
    }
}

impl JsonBody for JobRequest {
    fn to_json(&self) -> Vec<u8> {
        to_json(self)
    }

    fn from_json(body: &[u8]) -> Result<JobRequest, ProtocolError> {
        from_json("job request", body)
    }
}

/// Why a job failed: a Python error with where it happened, or the worker's death.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobError {
    /// The Python exception type (`ZeroDivisionError`, `SyntaxError`, ...), or
    /// `ScriptNotFound`, `MissingFunction`, `WorkerDied`, `ProtocolError`.
    pub kind: String,
    /// What went wrong, in words (the exception's message).
    pub message: String,
    /// The script file the error points into, when there is one.
    pub file: Option<String>,
    /// The line in `file`, when there is one.
    pub line: Option<u32>,
    /// The Python traceback, formatted as Python prints it (may be empty).
    pub traceback: String,
}

impl JobError {
    /// An error of `kind` saying `message`, pointing at no file and with no traceback.
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
    /// The function's return value, as JSON, or why the job failed.
    pub result: Result<Value, JobError>,
    /// Seconds the worker spent on the job (loading the script included).
    pub seconds: f64,
}

/// [`JobReply`] as JSON (`scripts-host/python/outboard_jobs.py` writes the
/// same): `{"ok": true, "value", "seconds"}` or `{"ok": false, "seconds",
/// "kind", "message", "file", "line", "traceback"}`.
#[derive(Serialize, Deserialize)]
struct ReplyBody {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<Value>,
    #[serde(default)]
    seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    traceback: Option<String>,
}

impl JsonBody for JobReply {
    fn to_json(&self) -> Vec<u8> {
        let body = match &self.result {
            Ok(value) => ReplyBody {
                ok: true,
                value: Some(value.clone()),
                seconds: self.seconds,
                kind: None,
                message: None,
                file: None,
                line: None,
                traceback: None,
            },
            Err(e) => ReplyBody {
                ok: false,
                value: None,
                seconds: self.seconds,
                kind: Some(e.kind.clone()),
                message: Some(e.message.clone()),
                file: e.file.clone(),
                line: e.line,
                traceback: Some(e.traceback.clone()),
            },
        };
        to_json(&body)
    }

    fn from_json(body: &[u8]) -> Result<JobReply, ProtocolError> {
        let body: ReplyBody = from_json("job reply", body)?;
        let seconds = Some(body.seconds).filter(|s| s.is_finite() && *s >= 0.0).unwrap_or(0.0);
        let result = if body.ok {
            Ok(body.value.unwrap_or(Value::Null))
        } else {
            Err(JobError {
                kind: body.kind.unwrap_or_default(),
                message: body.message.unwrap_or_default(),
                file: body.file,
                line: body.line,
                traceback: body.traceback.unwrap_or_default(),
            })
        };
        Ok(JobReply { result, seconds })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

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

    /// One message through the framing: its fragments, reassembled.
    fn through_the_ring(fragments: Vec<Vec<u8>>) -> Message {
        let mut reader = Reassembler::default();
        let last = fragments.len() - 1;
        for (i, fragment) in fragments.iter().enumerate() {
            assert!(fragment.len() <= CONTROL_RING.payload);
            let out = reader.push(fragment).unwrap();
            if i == last {
                return out.expect("the last fragment ends the message");
            }
            assert!(out.is_none());
        }
        unreachable!()
    }

    #[test]
    fn requests_and_replies_decode_to_what_was_sent_and_only_in_their_direction() {
        let spec = ScriptSpec {
            slot: 2,
            track: 7,
            name: "t".into(),
            path: "/tmp/s.py".into(),
            channels: 2,
            frames: 64,
            rate: 48_000.0,
            latency_blocks: 2,
            params: vec!["mix".into()],
            hints: vec![String::new(), "gain".into()],
            values: vec![1.0, f32::NAN],
            instrument: true,
        };
        let job = JobRequest::new("/tmp/x.py", "f", vec![json!(1), json!("x".repeat(10_000))]);
        let requests = [
            Request::Job { id: 9, body: Json::new(&job) },
            Request::Shutdown,
            Request::LoadScript(spec),
            Request::UnloadScript { slot: 3 },
            Request::Warm,
        ];
        for request in &requests {
            let message = through_the_ring(request.fragments());
            assert!(!message.is_reply());
            // NaN is not equal to itself: compare what goes on the wire.
            let decoded = Request::decode(message.clone()).unwrap();
            assert_eq!(decoded.fragments(), request.fragments(), "{request:?}");
            assert!(Reply::decode(message).is_err(), "{request:?} is no reply");
        }
        let Request::LoadScript(spec) = Request::decode(through_the_ring(requests[2].fragments())).unwrap() else {
            unreachable!()
        };
        assert!(spec.values[1].is_nan(), "a value not set yet stays NaN");
        let declared = br#"{"slot":4,"params":[],"instrument":true,"doc":"d"}"#.to_vec();
        let replies = [
            Reply::Job { id: 9, body: Json::new(&JobReply { result: Ok(json!([1])), seconds: 0.5 }) },
            Reply::ScriptLoaded { slot: 1, ok: false },
            Reply::Warm,
            Reply::ScriptDeclared { slot: 4, body: Json::from_bytes(declared) },
        ];
        for reply in &replies {
            let message = through_the_ring(reply.fragments());
            assert!(message.is_reply());
            assert_eq!(&Reply::decode(message.clone()).unwrap(), reply);
            assert!(Request::decode(message).is_err(), "{reply:?} is no request");
        }
        let Reply::ScriptDeclared { body, .. } = &replies[3] else { unreachable!() };
        assert!(body.decode().unwrap().instrument);
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let load = fragments(Kind::LoadScript, 0, br#"{"slot": 1}"#, 4096).remove(0);
        assert!(Request::decode(Reassembler::default().push(&load).unwrap().unwrap()).is_err());
        let unload = fragments(Kind::UnloadScript, 0, b"{}", 4096).remove(0);
        assert!(Request::decode(Reassembler::default().push(&unload).unwrap().unwrap()).is_err());
        let loaded = fragments(Kind::ScriptLoaded, 0, br#"{"slot": -1, "ok": true}"#, 4096).remove(0);
        assert!(Reply::decode(Reassembler::default().push(&loaded).unwrap().unwrap()).is_err());
        let declared = fragments(Kind::ScriptDeclared, 0, br#"{"params": []}"#, 4096).remove(0);
        assert!(Reply::decode(Reassembler::default().push(&declared).unwrap().unwrap()).is_err(), "no slot");
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
