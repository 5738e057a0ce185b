//! The plugin's saved state: the script and every parameter, versioned.
//!
//! A host stores these bytes in its project and hands them back, possibly to
//! another build of the plugin, possibly damaged. Loading is strict: anything
//! but a whole, checksummed state of a version we know is rejected with an
//! error (the instance keeps what it had), never a panic. Saving is
//! reproducible: the same script and values give the same bytes, so a
//! load-then-save round trip returns the state byte for byte (a version 1
//! or 2 state, which has no path or no declaration, loads and is saved as
//! version 3).
//!
//! Layout (little-endian):
//!
//! | field         | bytes          | rule                                   |
//! | ------------- | -------------- | -------------------------------------- |
//! | magic         | 8              | `OUTBOARD`                             |
//! | version       | u32            | 3 (1 and 2 are read too)               |
//! | flags         | u32            | 0 (reserved)                           |
//! | param count   | u32            | at most [`MAX_PARAMS`]                 |
//! | params        | (u32, f64) × n | ids distinct, ascending; values finite |
//! | name length   | u32            | at most [`MAX_NAME_BYTES`]             |
//! | name          | UTF-8          |                                        |
//! | script length | u32            | at most [`MAX_SCRIPT_BYTES`]           |
//! | script        | UTF-8          | Python source                          |
//! | path length   | u32            | at most [`MAX_PATH_BYTES`]; v2 and up  |
//! | path          | UTF-8          | the file the script came from, or none |
//! | env length    | u32            | at most [`MAX_PATH_BYTES`]; v2 and up  |
//! | env           | UTF-8          | the Python environment named, or none  |
//! | decl. length  | u32            | at most [`MAX_DECLARED_BYTES`]; v3     |
//! | declaration   | UTF-8          | what the script declared (the worker's |
//! |               |                | JSON, as it sent it), or none          |
//! | checksum      | u64            | FNV-1a 64 of every byte before it      |
//!
//! Parameter values are saved by id; the script slots' ids mean the names
//! the declaration gives them, so a state knows its parameters' names and
//! ranges before any script runs, and an edit that keeps a name keeps its
//! value (the plugin maps values by name when a new declaration comes).

use std::fmt;

/// The first 8 bytes of every state: what tells an Outboard state from anything else.
pub const MAGIC: &[u8; 8] = b"OUTBOARD";
/// The version this build writes (with the declaration); [`VERSION_1`] and [`VERSION_2`] are still read.
pub const VERSION: u32 = 3;
/// The first version, without the script's path: still read.
pub const VERSION_1: u32 = 1;
/// The second, without the declaration: still read.
pub const VERSION_2: u32 = 2;
/// The plugin's own parameters and its script slots.
pub const MAX_PARAMS: usize = 64;
/// The longest declaration (the worker's JSON) a state may hold, in bytes.
pub const MAX_DECLARED_BYTES: usize = 64 << 10;
/// The longest script name a state may hold, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 256;
/// The longest script source a state may hold, in bytes of UTF-8 (1 MiB); a longer script file is not taken.
pub const MAX_SCRIPT_BYTES: usize = 1 << 20;
/// The longest script path or Python environment path a state may hold, in bytes of UTF-8.
pub const MAX_PATH_BYTES: usize = 4096;
/// No valid state is longer than this; a reader stops here.
pub const MAX_STATE_BYTES: usize = 8
    + 4
    + 4
    + 4
    + MAX_PARAMS * 12
    + 4
    + MAX_NAME_BYTES
    + 4
    + MAX_SCRIPT_BYTES
    + 2 * (4 + MAX_PATH_BYTES)
    + 4
    + MAX_DECLARED_BYTES
    + 8;

/// What a state holds.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginState {
    /// (parameter id, plain value), ascending by id.
    pub params: Vec<(u32, f64)>,
    /// A name for the script (shown in logs), e.g. its file name.
    pub script_name: String,
    /// The script's Python source.
    pub script: String,
    /// The file the script came from (absolute), which the instance follows
    /// where it exists; empty for a script that never was a file.
    pub script_path: String,
    /// The Python environment (a virtual environment's folder) the instance
    /// names for its script; empty: the usual choice (see
    /// `outboard_engine::workers::python_env`).
    pub python_env: String,
    /// What the script declared, as its worker sent it (JSON, see
    /// `outboard_engine::wire::declared::Declaration::from_json`); empty if
    /// nothing was heard yet.
    pub declared: String,
}

/// Why a state was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateError {
    /// The host passed no bytes.
    Empty,
    /// The bytes do not start with [`MAGIC`].
    NotOutboard,
    /// The bytes end before a field, or before the checksum, does.
    Truncated,
    /// There are bytes past the checksum, or more than [`MAX_STATE_BYTES`] in all.
    TooLong,
    /// A version this build does not read (a newer build's state, say).
    UnknownVersion(u32),
    /// Reserved flags that are not 0.
    UnknownFlags(u32),
    /// The checksum does not match the bytes: the state is damaged.
    BadChecksum,
    /// Well-formed bytes whose content breaks a rule (which one is said): too many parameters, ids not
    /// ascending, a value not finite, a text too long or not UTF-8, a declaration that cannot be read.
    Invalid(&'static str),
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::Empty => write!(f, "the state is empty"),
            StateError::NotOutboard => write!(f, "not an Outboard state"),
            StateError::Truncated => write!(f, "the state is truncated"),
            StateError::TooLong => write!(f, "the state has bytes past its end"),
            StateError::UnknownVersion(v) => {
                write!(f, "state version {v} is not known to this build (it reads {VERSION})")
            }
            StateError::UnknownFlags(v) => write!(f, "state flags {v:#x} are not known to this build"),
            StateError::BadChecksum => write!(f, "the state's checksum does not match (damaged)"),
            StateError::Invalid(what) => write!(f, "invalid state: {what}"),
        }
    }
}

impl std::error::Error for StateError {}

/// FNV-1a, 64 bits: enough to catch a damaged or random state (this is not
/// about adversaries: a hostile state can only set values we accept anyway).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

impl PluginState {
    /// The state's bytes, in the layout above at [`VERSION`]: the same state always gives the same bytes.
    /// Assumes the limits hold (as for any state the plugin made); [`decode`](Self::decode) checks them.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.params.len() * 12 + self.script_name.len() + self.script.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(self.params.len() as u32).to_le_bytes());
        for &(id, value) in &self.params {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&value.to_le_bytes());
        }
        for text in [&self.script_name, &self.script, &self.script_path, &self.python_env, &self.declared] {
            out.extend_from_slice(&(text.len() as u32).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        let checksum = fnv1a(&out);
        out.extend_from_slice(&checksum.to_le_bytes());
        out
    }

    /// Decodes a whole state, checking every length against what is left
    /// before using it.
    pub fn decode(bytes: &[u8]) -> Result<PluginState, StateError> {
        if bytes.is_empty() {
            return Err(StateError::Empty);
        }
        if bytes.len() > MAX_STATE_BYTES {
            return Err(StateError::TooLong);
        }
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(StateError::NotOutboard);
        }
        let mut reader = Reader { bytes, at: MAGIC.len() };
        let version = reader.u32()?;
        if version != VERSION && version != VERSION_1 && version != VERSION_2 {
            return Err(StateError::UnknownVersion(version));
        }
        let flags = reader.u32()?;
        if flags != 0 {
            return Err(StateError::UnknownFlags(flags));
        }
        // The checksum is checked before the body is trusted for anything
        // but lengths: a damaged state is reported as damaged.
        if bytes.len() < reader.at + 8 {
            return Err(StateError::Truncated);
        }
        let (body, sum) = bytes.split_at(bytes.len() - 8);
        let count = reader.u32()? as usize;
        if count > MAX_PARAMS {
            return Err(StateError::Invalid("too many parameters"));
        }
        let mut params = Vec::with_capacity(count);
        for _ in 0..count {
            let id = reader.u32()?;
            let value = f64::from_le_bytes(reader.take(8)?.try_into().expect("8 bytes"));
            if !value.is_finite() {
                return Err(StateError::Invalid("a parameter value is not finite"));
            }
            if params.last().is_some_and(|&(last, _)| last >= id) {
                return Err(StateError::Invalid("parameter ids are not ascending"));
            }
            params.push((id, value));
        }
        let script_name = reader.text(MAX_NAME_BYTES)?;
        let script = reader.text(MAX_SCRIPT_BYTES)?;
        let (script_path, python_env) = if version == VERSION_1 {
            (String::new(), String::new())
        } else {
            (reader.text(MAX_PATH_BYTES)?, reader.text(MAX_PATH_BYTES)?)
        };
        let declared = if version == VERSION { reader.text(MAX_DECLARED_BYTES)? } else { String::new() };
        if reader.at + 8 > bytes.len() {
            return Err(StateError::Truncated);
        }
        if reader.at + 8 < bytes.len() {
            // Either trailing garbage or a length field that is too short;
            // either way the checksum would be read from the wrong place.
            return if fnv1a(body) == u64::from_le_bytes(sum.try_into().expect("8 bytes")) {
                Err(StateError::TooLong)
            } else {
                Err(StateError::BadChecksum)
            };
        }
        if fnv1a(body) != u64::from_le_bytes(sum.try_into().expect("8 bytes")) {
            return Err(StateError::BadChecksum);
        }
        if !declared.is_empty() && outboard_engine::wire::declared::Declaration::from_json(declared.as_bytes()).is_err()
        {
            return Err(StateError::Invalid("the declared parameters cannot be read"));
        }
        Ok(PluginState { params, script_name, script, script_path, python_env, declared })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StateError> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.bytes.len()).ok_or(StateError::Truncated)?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u32(&mut self) -> Result<u32, StateError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn text(&mut self, max: usize) -> Result<String, StateError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(StateError::Invalid("a text field is longer than allowed"));
        }
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| StateError::Invalid("a text field is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PluginState {
        PluginState {
            params: vec![(0, 0.75), (1, 1000.0), (2, 0.0)],
            script_name: "gain.py".into(),
            script: "def process(block, ctx):\n    block *= 0.5\n".into(),
            script_path: "/home/user/scripts/gain.py".into(),
            python_env: "/home/user/venvs/audio".into(),
            declared:
                r#"{"params":[{"index":1,"name":"gain","min":0,"max":2,"default":1}],"instrument":false,"doc":""}"#
                    .into(),
        }
    }

    #[test]
    fn reads_version_1_and_2_states_and_saves_them_as_version_3() {
        let v3 = sample().encode();
        let declared = 4 + sample().declared.len();
        // A version 2 state: no declaration, its own checksum.
        let mut v2 = v3[..v3.len() - 8 - declared].to_vec();
        v2[8..12].copy_from_slice(&VERSION_2.to_le_bytes());
        let sum = fnv1a(&v2);
        v2.extend_from_slice(&sum.to_le_bytes());
        let decoded = PluginState::decode(&v2).unwrap();
        assert_eq!(decoded, PluginState { declared: String::new(), ..sample() });
        assert_eq!(PluginState::decode(&decoded.encode()).unwrap(), decoded);
        // A version 1 state: no path either.
        let mut v1 =
            v3[..v3.len() - 8 - declared - 8 - sample().script_path.len() - sample().python_env.len()].to_vec();
        v1[8..12].copy_from_slice(&VERSION_1.to_le_bytes());
        let sum = fnv1a(&v1);
        v1.extend_from_slice(&sum.to_le_bytes());
        let decoded = PluginState::decode(&v1).unwrap();
        let bare =
            PluginState { script_path: String::new(), python_env: String::new(), declared: String::new(), ..sample() };
        assert_eq!(decoded, bare);
        assert_eq!(PluginState::decode(&decoded.encode()).unwrap(), decoded);
    }

    #[test]
    fn round_trips_byte_for_byte() {
        let bytes = sample().encode();
        let decoded = PluginState::decode(&bytes).unwrap();
        assert_eq!(decoded, sample());
        assert_eq!(decoded.encode(), bytes);
    }

    #[test]
    fn rejects_empty_short_foreign_and_damaged_states() {
        let bytes = sample().encode();
        assert_eq!(PluginState::decode(&[]), Err(StateError::Empty));
        assert_eq!(PluginState::decode(b"OUT"), Err(StateError::NotOutboard));
        assert_eq!(PluginState::decode(b"RIFF\0\0\0\0WAVE"), Err(StateError::NotOutboard));
        for cut in 1..bytes.len() {
            assert!(PluginState::decode(&bytes[..cut]).is_err(), "accepted a state cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(PluginState::decode(&longer).is_err());
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x10;
            assert!(PluginState::decode(&flipped).is_err(), "accepted a state with byte {at} flipped");
        }
        let mut newer = bytes.clone();
        newer[8] = 4;
        assert_eq!(PluginState::decode(&newer), Err(StateError::UnknownVersion(4)));
    }

    #[test]
    fn rejects_random_bytes_without_panicking() {
        // xorshift: reproducible noise of every length up to a few hundred bytes,
        // some of it starting with the magic so the deeper checks run too.
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for len in 0..600 {
            let mut bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            if len % 2 == 0 && len >= 16 {
                bytes[..8].copy_from_slice(MAGIC);
                bytes[8..12].copy_from_slice(&VERSION.to_le_bytes());
                bytes[12..16].fill(0);
            }
            assert!(PluginState::decode(&bytes).is_err());
        }
    }
}
