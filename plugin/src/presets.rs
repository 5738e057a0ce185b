//! The preset-discovery factory: every Python script a host can find is a
//! preset (spec, "Presets").
//!
//! One provider, `dev.outboard.scripts`. Its `init` declares one file type
//! (`py`) and the folders to index:
//!
//! - the example scripts shipped in the bundle, `scripts/` beside the
//!   loaded library (found with `dladdr`, as the scripts host is), and each
//!   folder of `$OUTBOARD_PRESET_DIRS` (colon-separated; tests and dev
//!   builds point it at the repository's examples): factory content,
//!   declared where they exist;
//! - the user's folder, `$XDG_DATA_HOME/outboard/scripts` (by default
//!   `~/.local/share/outboard/scripts`): user content, declared even where
//!   it does not exist yet (a host may watch it).
//!
//! The host walks those folders itself and asks `get_metadata` about each
//! `*.py` file: one preset per file, named by its stem, described by the
//! first paragraph of its module docstring, for the instrument if the file has a
//! top-level `INSTRUMENT = True` line, else for the effect. A preset is
//! loaded by its path (preset-load's `from_location(FILE, path, NULL)`,
//! checked by [`preset_file`]); there is no load key.
//!
//! Written against clap-sys's raw types (clack 0.2 has a plugin-side
//! wrapper, but behind a `preset-discovery` feature of clack-extensions and
//! a factory type clack's `SinglePluginEntry` does not serve; the guard's
//! entry hands this factory out directly). Every function the host calls
//! checks its pointers and catches panics: a host gets `false` or null,
//! never an unwind.

use std::ffi::{CStr, CString, OsStr, OsString, c_char, c_void};
use std::io::Read as _;
use std::os::unix::ffi::OsStrExt as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::ptr::null;
use std::time::{SystemTime, UNIX_EPOCH};

use clap_sys::factory::preset_discovery::*;
use clap_sys::timestamp::{CLAP_TIMESTAMP_UNKNOWN, clap_timestamp};
use clap_sys::universal_plugin_id::clap_universal_plugin_id;
use clap_sys::version::{CLAP_VERSION, clap_version_is_compatible};

/// The provider's id.
pub const PROVIDER_ID: &CStr = c"dev.outboard.scripts";
/// The effect's plugin id (lib.rs's `PLUGIN_ID`).
pub const EFFECT_ID: &str = crate::PLUGIN_ID;
/// The instrument's plugin id.
pub const INSTRUMENT_ID: &str = crate::INSTRUMENT_ID;
/// Extra folders of factory presets, colon-separated.
pub const PRESET_DIRS_ENV: &str = "OUTBOARD_PRESET_DIRS";
/// The folder of example scripts beside the library.
pub const BUNDLED_DIR_NAME: &str = "scripts";
/// The presets' file extension (without its dot).
pub const EXTENSION: &str = "py";

/// The most of a script read to describe it: a preset's facts are at its
/// top, and a host may hand any file that ends in `.py`.
const MAX_READ: u64 = 1 << 20;
/// The longest description passed on, in characters.
const MAX_DESCRIPTION: usize = 256;

/// Whether `id` names the preset-discovery factory (the released id, or
/// the draft one older hosts ask for).
pub fn is_factory_id(id: &CStr) -> bool {
    id == CLAP_PRESET_DISCOVERY_FACTORY_ID || id == CLAP_PRESET_DISCOVERY_FACTORY_ID_COMPAT
}

/// The factory, for the entry's `get_factory` to return.
pub fn factory() -> *const c_void {
    &FACTORY as *const clap_preset_discovery_factory as *const c_void
}

static FACTORY: clap_preset_discovery_factory = clap_preset_discovery_factory {
    count: Some(factory_count),
    get_descriptor: Some(factory_get_descriptor),
    create: Some(factory_create),
};

static DESCRIPTOR: clap_preset_discovery_provider_descriptor = clap_preset_discovery_provider_descriptor {
    clap_version: CLAP_VERSION,
    id: PROVIDER_ID.as_ptr(),
    name: c"Outboard scripts".as_ptr(),
    vendor: c"Outboard".as_ptr(),
};

static FILETYPE: clap_preset_discovery_filetype = clap_preset_discovery_filetype {
    name: c"Python script".as_ptr(),
    description: c"An Outboard track script".as_ptr(),
    file_extension: c"py".as_ptr(),
};

/// What a script says about itself as a preset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresetInfo {
    /// The file's stem.
    pub name: String,
    /// The first paragraph of its module docstring (on one line), if it has one.
    pub description: Option<String>,
    /// [`INSTRUMENT_ID`] or [`EFFECT_ID`].
    pub plugin_id: &'static str,
    /// The file is in the user's folder.
    pub user: bool,
    /// The file is in a folder of factory presets (the bundle's, or one of
    /// `$OUTBOARD_PRESET_DIRS`).
    pub factory: bool,
    /// The file's last modification.
    pub modified: Option<SystemTime>,
    /// The file's creation, where the file system keeps it.
    pub created: Option<SystemTime>,
}

/// Describes the script at `path` as a preset; `None` if it is not a
/// readable `.py` file.
pub fn describe(path: &Path) -> Option<PresetInfo> {
    describe_in(path, &Roots::from_env()).ok()
}

/// The plugin's preset-load extension's check: the script a
/// `from_location` call names, or why it cannot be loaded. Only file
/// locations naming a readable `.py` file are accepted.
pub fn preset_file(location_kind: u32, location: Option<&CStr>) -> Result<PathBuf, String> {
    if location_kind != CLAP_PRESET_DISCOVERY_LOCATION_FILE {
        return Err(format!("preset location kind {location_kind} is not a file; Outboard presets are script files"));
    }
    let location = location.ok_or("the preset location names no file")?;
    let path = Path::new(OsStr::from_bytes(location.to_bytes()));
    check_script(path).map_err(|(_, message)| message)?;
    std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The folders of example scripts (factory presets): the bundle's
/// `scripts/` and each of `$OUTBOARD_PRESET_DIRS`, those that exist.
pub fn example_dirs() -> Vec<PathBuf> {
    Roots::from_env().factory.into_iter().filter(|d| d.is_dir()).collect()
}

/// The user's script folder, `$XDG_DATA_HOME/outboard/scripts` (by default
/// `~/.local/share/outboard/scripts`), whether or not it exists yet.
pub fn user_dir() -> Option<PathBuf> {
    Roots::from_env().user
}

/// The folders presets come from.
#[derive(Clone, Debug, Default, PartialEq)]
struct Roots {
    /// Factory content, in declaration order, without repeats.
    factory: Vec<PathBuf>,
    /// The user's folder, if a home can be found.
    user: Option<PathBuf>,
}

impl Roots {
    fn from_env() -> Roots {
        let bundled =
            crate::scripting::library_path().and_then(|library| library.parent().map(|dir| dir.join(BUNDLED_DIR_NAME)));
        Roots::new(
            bundled,
            std::env::var_os(PRESET_DIRS_ENV),
            std::env::var_os("XDG_DATA_HOME"),
            std::env::var_os("HOME"),
        )
    }

    fn new(
        bundled: Option<PathBuf>,
        preset_dirs: Option<OsString>,
        xdg_data_home: Option<OsString>,
        home: Option<OsString>,
    ) -> Roots {
        let mut factory: Vec<PathBuf> = Vec::new();
        let extra = preset_dirs.as_deref().map(std::env::split_paths).into_iter().flatten();
        for dir in bundled.into_iter().chain(extra) {
            if !dir.as_os_str().is_empty() && !factory.contains(&dir) {
                factory.push(dir);
            }
        }
        // XDG: a relative $XDG_DATA_HOME is invalid and ignored.
        let data_home = xdg_data_home
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| home.map(PathBuf::from).filter(|p| p.is_absolute()).map(|h| h.join(".local/share")));
        let user = data_home.map(|d| d.join("outboard").join("scripts"));
        Roots { factory, user }
    }

    /// The locations to declare: factory folders that exist, then the
    /// user's folder whether or not it exists.
    fn locations(&self) -> Vec<(u32, String, PathBuf)> {
        let mut out = Vec::new();
        for (i, dir) in self.factory.iter().filter(|d| d.is_dir()).enumerate() {
            let name =
                if i == 0 { "Outboard examples".to_string() } else { format!("Outboard examples ({})", dir.display()) };
            out.push((CLAP_PRESET_DISCOVERY_IS_FACTORY_CONTENT, name, dir.clone()));
        }
        if let Some(user) = &self.user {
            out.push((CLAP_PRESET_DISCOVERY_IS_USER_CONTENT, "My Outboard scripts".to_string(), user.clone()));
        }
        out
    }
}

/// Whether `path` is inside `root` (as given, or both resolved).
fn is_under(path: &Path, root: &Path) -> bool {
    if path.starts_with(root) {
        return true;
    }
    match (path.canonicalize(), root.canonicalize()) {
        (Ok(path), Ok(root)) => path.starts_with(root),
        _ => false,
    }
}

/// The file at `path`, open for reading, if it is a `.py` file; else the
/// OS error (0 if none) and a message for the host.
fn check_script(path: &Path) -> Result<std::fs::File, (i32, String)> {
    let is_py = path.extension().is_some_and(|e| e.eq_ignore_ascii_case(EXTENSION));
    if !is_py {
        return Err((0, format!("{} is not a Python script (.py)", path.display())));
    }
    let os_error = |e: std::io::Error| (e.raw_os_error().unwrap_or(0), format!("{}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(os_error)?;
    match file.metadata() {
        Ok(meta) if meta.is_file() => Ok(file),
        Ok(_) => Err((0, format!("{} is not a file", path.display()))),
        Err(e) => Err(os_error(e)),
    }
}

/// [`describe`] against given folders; the error is the OS error (0 if
/// none) and a message for the host.
fn describe_in(path: &Path, roots: &Roots) -> Result<PresetInfo, (i32, String)> {
    let file = check_script(path)?;
    let os_error = |e: std::io::Error| (e.raw_os_error().unwrap_or(0), format!("{}: {e}", path.display()));
    let meta = file.metadata().map_err(os_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_READ).read_to_end(&mut bytes).map_err(os_error)?;
    let text = String::from_utf8_lossy(&bytes);
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(PresetInfo {
        name,
        description: docstring_line(&text),
        plugin_id: if declares_instrument(&text) { INSTRUMENT_ID } else { EFFECT_ID },
        user: roots.user.as_deref().is_some_and(|user| is_under(path, user)),
        factory: roots.factory.iter().any(|root| is_under(path, root)),
        modified: meta.modified().ok(),
        created: meta.created().ok(),
    })
}

/// Whether a line at the top level, outside triple-quoted strings, reads
/// `INSTRUMENT = True` (`^INSTRUMENT\s*=\s*True\b`).
fn declares_instrument(text: &str) -> bool {
    let mut open: Option<&str> = None;
    for line in text.lines() {
        if open.is_none() && is_instrument_line(line) {
            return true;
        }
        open = after_triple_quotes(line, open);
    }
    false
}

fn is_instrument_line(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("INSTRUMENT") else { return false };
    let Some(rest) = rest.trim_start().strip_prefix('=') else { return false };
    let Some(rest) = rest.trim_start().strip_prefix("True") else { return false };
    !rest.starts_with(|c: char| c.is_alphanumeric() || c == '_')
}

/// Which triple-quoted string (if any) is open after `line`, given the one
/// open before it. A simple scan: quotes inside comments count too.
fn after_triple_quotes<'a>(line: &str, mut open: Option<&'a str>) -> Option<&'a str> {
    let mut rest = line;
    loop {
        match open {
            Some(delim) => match rest.find(delim) {
                Some(at) => {
                    rest = &rest[at + 3..];
                    open = None;
                }
                None => return open,
            },
            None => {
                let next = [r#"""""#, "'''"].into_iter().filter_map(|d| rest.find(d).map(|at| (at, d))).min();
                match next {
                    Some((at, delim)) => {
                        rest = &rest[at + 3..];
                        open = Some(delim);
                    }
                    None => return None,
                }
            }
        }
    }
}

/// The first paragraph of the module docstring, on one line: the first statement,
/// after blank and comment lines, if it is a triple-quoted string.
fn docstring_line(text: &str) -> Option<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines().map(str::trim).skip_while(|l| l.is_empty() || l.starts_with('#'));
    let first = lines.next()?;
    let first = first.trim_start_matches(['r', 'R', 'u', 'U']);
    let (delim, body) = [r#"""""#, "'''"].into_iter().find_map(|d| first.strip_prefix(d).map(|body| (d, body)))?;
    // The first paragraph, on one line.
    let mut paragraph: Vec<&str> = Vec::new();
    for line in std::iter::once(body).chain(lines) {
        let (line, closed) = match line.find(delim) {
            Some(at) => (&line[..at], true),
            None => (line, false),
        };
        let line = line.trim();
        if line.is_empty() && !paragraph.is_empty() {
            break;
        }
        if !line.is_empty() {
            paragraph.push(line);
        }
        if closed {
            break;
        }
    }
    (!paragraph.is_empty()).then(|| paragraph.join(" ").chars().take(MAX_DESCRIPTION).collect())
}

/// `s` as a C string, without any NUL it holds.
fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

fn timestamp(time: Option<SystemTime>) -> clap_timestamp {
    time.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs()).unwrap_or(CLAP_TIMESTAMP_UNKNOWN)
}

/// Runs `f`, or returns `default` if it panics: no unwind reaches the host.
fn guarded<T>(default: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(default)
}

unsafe extern "C" fn factory_count(_factory: *const clap_preset_discovery_factory) -> u32 {
    1
}

unsafe extern "C" fn factory_get_descriptor(
    _factory: *const clap_preset_discovery_factory,
    index: u32,
) -> *const clap_preset_discovery_provider_descriptor {
    if index == 0 { &DESCRIPTOR } else { null() }
}

unsafe extern "C" fn factory_create(
    _factory: *const clap_preset_discovery_factory,
    indexer: *const clap_preset_discovery_indexer,
    provider_id: *const c_char,
) -> *const clap_preset_discovery_provider {
    guarded(null(), || {
        if provider_id.is_null() {
            return null();
        }
        // SAFETY: non-null, and per CLAP a NUL-terminated string valid for the call.
        if unsafe { CStr::from_ptr(provider_id) } != PROVIDER_ID {
            return null();
        }
        // SAFETY: the host's indexer (or null), which per CLAP outlives the provider.
        match unsafe { indexer.as_ref() } {
            Some(i) if clap_version_is_compatible(i.clap_version) => {}
            _ => return null(),
        }
        let provider = Box::new(clap_preset_discovery_provider {
            desc: &DESCRIPTOR,
            // The indexer, kept for `init`.
            provider_data: indexer as *mut c_void,
            init: Some(provider_init),
            destroy: Some(provider_destroy),
            get_metadata: Some(provider_get_metadata),
            get_extension: Some(provider_get_extension),
        });
        Box::into_raw(provider) as *const clap_preset_discovery_provider
    })
}

/// # Safety
/// `provider` must be null or a provider `factory_create` returned, not
/// yet destroyed.
unsafe fn provider_ref<'a>(
    provider: *const clap_preset_discovery_provider,
) -> Option<&'a clap_preset_discovery_provider> {
    // SAFETY: per the contract: null, or our live Box.
    let provider = unsafe { provider.as_ref() }?;
    // Only ours: a foreign pointer would not carry our descriptor.
    std::ptr::eq(provider.desc, &DESCRIPTOR).then_some(provider)
}

unsafe extern "C" fn provider_init(provider: *const clap_preset_discovery_provider) -> bool {
    guarded(false, || {
        // SAFETY: the host passes the provider it was given.
        let Some(provider) = (unsafe { provider_ref(provider) }) else { return false };
        let indexer_ptr = provider.provider_data as *const clap_preset_discovery_indexer;
        // SAFETY: `factory_create` stored the host's non-null indexer, which
        // per CLAP lives as long as the provider.
        let Some(indexer) = (unsafe { indexer_ptr.as_ref() }) else { return false };
        let (Some(declare_filetype), Some(declare_location)) = (indexer.declare_filetype, indexer.declare_location)
        else {
            return false;
        };
        // SAFETY: the host's function on its own indexer; FILETYPE is a static.
        if !unsafe { declare_filetype(indexer_ptr, &FILETYPE) } {
            return false;
        }
        for (flags, name, path) in Roots::from_env().locations() {
            let Ok(location) = CString::new(path.as_os_str().as_bytes()) else { continue };
            let name = c_string(&name);
            let raw = clap_preset_discovery_location {
                flags,
                name: name.as_ptr(),
                kind: CLAP_PRESET_DISCOVERY_LOCATION_FILE,
                location: location.as_ptr(),
            };
            // SAFETY: the host's function on its own indexer; `raw` and the
            // strings it points to outlive the call (the host copies them).
            // A location the host refuses is only not indexed.
            unsafe { declare_location(indexer_ptr, &raw) };
        }
        true
    })
}

unsafe extern "C" fn provider_destroy(provider: *const clap_preset_discovery_provider) {
    guarded((), || {
        // SAFETY: the host passes the provider it was given.
        if unsafe { provider_ref(provider) }.is_some() {
            // SAFETY: `factory_create` made it with Box::into_raw; the host
            // destroys a provider once.
            drop(unsafe { Box::from_raw(provider as *mut clap_preset_discovery_provider) });
        }
    })
}

unsafe extern "C" fn provider_get_extension(
    _provider: *const clap_preset_discovery_provider,
    _extension_id: *const c_char,
) -> *const c_void {
    null()
}

unsafe extern "C" fn provider_get_metadata(
    provider: *const clap_preset_discovery_provider,
    location_kind: clap_preset_discovery_location_kind,
    location: *const c_char,
    receiver: *const clap_preset_discovery_metadata_receiver,
) -> bool {
    guarded(false, || {
        // SAFETY: the host passes the provider it was given.
        if unsafe { provider_ref(provider) }.is_none() {
            return false;
        }
        // SAFETY: the host's receiver (or null), valid for the call.
        let Some(rx) = (unsafe { receiver.as_ref() }) else { return false };
        let error = |os_error: i32, message: &str| {
            if let Some(on_error) = rx.on_error {
                let message = c_string(message);
                // SAFETY: the host's function on its receiver; the message
                // outlives the call.
                unsafe { on_error(receiver, os_error, message.as_ptr()) };
            }
            false
        };
        if location_kind != CLAP_PRESET_DISCOVERY_LOCATION_FILE {
            return error(0, "Outboard presets are script files; this location is not a file");
        }
        if location.is_null() {
            return error(0, "the host named no file");
        }
        // SAFETY: non-null, and per CLAP a NUL-terminated string valid for the call.
        let location = unsafe { CStr::from_ptr(location) };
        let path = Path::new(OsStr::from_bytes(location.to_bytes()));
        let info = match describe_in(path, &Roots::from_env()) {
            Ok(info) => info,
            Err((os_error, message)) => return error(os_error, &message),
        };
        let Some(begin_preset) = rx.begin_preset else { return error(0, "the host's receiver cannot take a preset") };
        let name = c_string(&info.name);
        // SAFETY: the host's function on its receiver; the name outlives the
        // call; a single-preset file needs no load key.
        if !unsafe { begin_preset(receiver, name.as_ptr(), null()) } {
            // The host wants no more of this file: not an error.
            return true;
        }
        if let Some(add_plugin_id) = rx.add_plugin_id {
            let id = c_string(info.plugin_id);
            let plugin_id = clap_universal_plugin_id { abi: c"clap".as_ptr(), id: id.as_ptr() };
            // SAFETY: as for begin_preset; `plugin_id` and its strings outlive the call.
            unsafe { add_plugin_id(receiver, &plugin_id) };
        }
        if let (Some(set_description), Some(description)) = (rx.set_description, &info.description) {
            let description = c_string(description);
            // SAFETY: as for begin_preset.
            unsafe { set_description(receiver, description.as_ptr()) };
        }
        let flags = if info.user {
            Some(CLAP_PRESET_DISCOVERY_IS_USER_CONTENT)
        } else if info.factory {
            Some(CLAP_PRESET_DISCOVERY_IS_FACTORY_CONTENT)
        } else {
            None // elsewhere: the location's flags stand
        };
        if let (Some(set_flags), Some(flags)) = (rx.set_flags, flags) {
            // SAFETY: the host's function on its receiver.
            unsafe { set_flags(receiver, flags) };
        }
        if let Some(set_timestamps) = rx.set_timestamps {
            // SAFETY: the host's function on its receiver.
            unsafe { set_timestamps(receiver, timestamp(info.created), timestamp(info.modified)) };
        }
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh empty folder under the system's temporary folder.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "outboard-presets-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const INSTRUMENT_SCRIPT: &str = "#!/usr/bin/env python3\n\
        # -*- coding: utf-8 -*-\n\
        \"\"\"\n\
        \n\
        A sine synth, one voice per note.\n\
        \n\
        More words.\n\
        \"\"\"\n\
        import math\n\
        INSTRUMENT   =  True  # the instrument's plugin\n";

    const EFFECT_SCRIPT: &str = "'''Gain: a fixed -6 dB.'''\n\
        def process(block):\n    \
            INSTRUMENT = True\n    \
            return block\n\
        INSTRUMENT = TrueColour\n\
        INSTRUMENT == True\n\
        # INSTRUMENT = True\n";

    #[test]
    fn describes_an_instrument() {
        let dir = TempDir::new();
        let path = dir.write("sine synth.py", INSTRUMENT_SCRIPT);
        let info = describe(&path).expect("a readable script");
        assert_eq!(info.name, "sine synth");
        assert_eq!(info.description.as_deref(), Some("A sine synth, one voice per note."));
        assert_eq!(info.plugin_id, INSTRUMENT_ID);
        assert!(!info.user);
        assert!(info.modified.is_some());
    }

    #[test]
    fn describes_an_effect() {
        let dir = TempDir::new();
        let path = dir.write("gain.py", EFFECT_SCRIPT);
        let info = describe(&path).expect("a readable script");
        assert_eq!(info.name, "gain");
        assert_eq!(info.description.as_deref(), Some("Gain: a fixed -6 dB."));
        assert_eq!(info.plugin_id, EFFECT_ID, "indented, commented or unlike lines are not the flag");
    }

    #[test]
    fn missing_or_foreign_files_are_no_preset() {
        let dir = TempDir::new();
        assert_eq!(describe(&dir.0.join("missing.py")), None);
        assert_eq!(describe(&dir.write("notes.txt", "\"\"\"Not a script\"\"\"")), None);
        std::fs::create_dir(dir.0.join("folder.py")).unwrap();
        assert_eq!(describe(&dir.0.join("folder.py")), None);
    }

    #[test]
    fn docstring_lines() {
        assert_eq!(docstring_line("\"\"\"One line.\"\"\"\n"), Some("One line.".into()));
        assert_eq!(docstring_line("\n\n# c\nr'''\n   Raw.\n'''"), Some("Raw.".into()));
        assert_eq!(docstring_line("\"\"\"\n\n\"\"\"\nx = 1"), None, "an empty docstring");
        assert_eq!(docstring_line("import os\n\"\"\"Late.\"\"\""), None, "not the first statement");
        assert_eq!(docstring_line("\"single\"\n"), None);
        assert_eq!(docstring_line(""), None);
        assert_eq!(docstring_line("\"\"\"Unclosed"), Some("Unclosed".into()));
        assert_eq!(
            docstring_line("\"\"\"A long first\n   paragraph.\n\nMore.\"\"\""),
            Some("A long first paragraph.".into())
        );
    }

    #[test]
    fn the_flag_inside_a_docstring_is_not_the_flag() {
        assert!(!declares_instrument("\"\"\"Set\nINSTRUMENT = True\nto make it an instrument.\"\"\"\n"));
        assert!(declares_instrument("\"\"\"Doc.\"\"\"\nINSTRUMENT = True\n"));
        assert!(declares_instrument("x = '''a'''\nINSTRUMENT=True;\n"));
        assert!(!declares_instrument("INSTRUMENT = False\n"));
    }

    #[test]
    fn roots_and_flags() {
        let dir = TempDir::new();
        std::fs::create_dir_all(dir.0.join("bundle/scripts")).unwrap();
        std::fs::create_dir_all(dir.0.join("dev")).unwrap();
        let bundled = dir.0.join("bundle/scripts");
        let extra = std::env::join_paths([dir.0.join("dev"), bundled.clone(), dir.0.join("nowhere")]).unwrap();
        let roots = Roots::new(Some(bundled.clone()), Some(extra), Some(dir.0.join("data").into()), None);
        assert_eq!(roots.factory, [bundled.clone(), dir.0.join("dev"), dir.0.join("nowhere")]);
        assert_eq!(roots.user, Some(dir.0.join("data/outboard/scripts")));
        let locations = roots.locations();
        let kinds: Vec<_> = locations.iter().map(|(flags, _, path)| (*flags, path.clone())).collect();
        assert_eq!(
            kinds,
            [
                (CLAP_PRESET_DISCOVERY_IS_FACTORY_CONTENT, bundled.clone()),
                (CLAP_PRESET_DISCOVERY_IS_FACTORY_CONTENT, dir.0.join("dev")),
                (CLAP_PRESET_DISCOVERY_IS_USER_CONTENT, dir.0.join("data/outboard/scripts")),
            ],
            "missing factory folders are left out, the user's folder is declared anyway"
        );

        std::fs::create_dir_all(dir.0.join("data/outboard/scripts")).unwrap();
        let mine = dir.write("data/outboard/scripts/mine.py", "");
        let shipped = dir.write("bundle/scripts/shipped.py", "");
        let info = describe_in(&mine, &roots).unwrap();
        assert!(info.user && !info.factory);
        let info = describe_in(&shipped, &roots).unwrap();
        assert!(!info.user && info.factory);
        assert_eq!(info.description, None);

        let home = Roots::new(None, None, Some("relative".into()), Some("/home/u".into()));
        assert_eq!(home.user, Some(PathBuf::from("/home/u/.local/share/outboard/scripts")));
        assert_eq!(Roots::new(None, None, None, None).user, None);
    }

    #[test]
    fn preset_files_for_preset_load() {
        let dir = TempDir::new();
        let path = dir.write("a.py", "x = 1\n");
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        assert_eq!(preset_file(CLAP_PRESET_DISCOVERY_LOCATION_FILE, Some(&c)), Ok(path.clone()));
        assert!(preset_file(CLAP_PRESET_DISCOVERY_LOCATION_PLUGIN, Some(&c)).is_err());
        assert!(preset_file(CLAP_PRESET_DISCOVERY_LOCATION_FILE, None).is_err());
        let missing = CString::new(dir.0.join("b.py").as_os_str().as_bytes()).unwrap();
        assert!(preset_file(CLAP_PRESET_DISCOVERY_LOCATION_FILE, Some(&missing)).unwrap_err().contains("b.py"));
        let txt = dir.write("a.txt", "");
        let txt = CString::new(txt.as_os_str().as_bytes()).unwrap();
        assert!(preset_file(CLAP_PRESET_DISCOVERY_LOCATION_FILE, Some(&txt)).is_err());
    }

    #[test]
    fn factory_ids() {
        assert!(is_factory_id(c"clap.preset-discovery-factory/2"));
        assert!(is_factory_id(c"clap.preset-discovery-factory/draft-2"));
        assert!(!is_factory_id(c"clap.plugin-factory"));
    }

    // ---- The factory as a host sees it: raw C calls with fake host objects.

    #[derive(Default)]
    struct Seen {
        filetypes: Vec<(String, String)>,
        locations: Vec<(u32, u32, String, String)>,
        presets: Vec<String>,
        load_keys_null: bool,
        plugin_ids: Vec<(String, String)>,
        descriptions: Vec<String>,
        flags: Vec<u32>,
        timestamps: Vec<(u64, u64)>,
        errors: Vec<(i32, String)>,
    }

    /// # Safety
    /// `p` must be a valid C string.
    unsafe fn s(p: *const c_char) -> String {
        assert!(!p.is_null());
        // SAFETY: per the contract.
        unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_string()
    }

    /// # Safety
    /// `data` must point to the live `RefCell<Seen>` of the test.
    unsafe fn seen<'a>(data: *mut c_void) -> &'a RefCell<Seen> {
        // SAFETY: per the contract.
        unsafe { &*(data as *const RefCell<Seen>) }
    }

    unsafe extern "C" fn declare_filetype(
        indexer: *const clap_preset_discovery_indexer,
        filetype: *const clap_preset_discovery_filetype,
    ) -> bool {
        // SAFETY: the test's indexer and the provider's filetype, valid for the call.
        unsafe {
            let f = &*filetype;
            seen((*indexer).indexer_data).borrow_mut().filetypes.push((s(f.name), s(f.file_extension)));
        }
        true
    }

    unsafe extern "C" fn declare_location(
        indexer: *const clap_preset_discovery_indexer,
        location: *const clap_preset_discovery_location,
    ) -> bool {
        // SAFETY: as in declare_filetype.
        unsafe {
            let l = &*location;
            seen((*indexer).indexer_data).borrow_mut().locations.push((l.flags, l.kind, s(l.name), s(l.location)));
        }
        true
    }

    unsafe extern "C" fn on_error(
        rx: *const clap_preset_discovery_metadata_receiver,
        os_error: i32,
        msg: *const c_char,
    ) {
        // SAFETY: the test's receiver; the provider's string, valid for the call.
        unsafe { seen((*rx).receiver_data).borrow_mut().errors.push((os_error, s(msg))) }
    }

    unsafe extern "C" fn begin_preset(
        rx: *const clap_preset_discovery_metadata_receiver,
        name: *const c_char,
        load_key: *const c_char,
    ) -> bool {
        // SAFETY: as in on_error.
        unsafe {
            let mut seen = seen((*rx).receiver_data).borrow_mut();
            seen.presets.push(s(name));
            seen.load_keys_null = load_key.is_null();
        }
        true
    }

    unsafe extern "C" fn add_plugin_id(
        rx: *const clap_preset_discovery_metadata_receiver,
        id: *const clap_universal_plugin_id,
    ) {
        // SAFETY: as in on_error.
        unsafe { seen((*rx).receiver_data).borrow_mut().plugin_ids.push((s((*id).abi), s((*id).id))) }
    }

    unsafe extern "C" fn set_description(rx: *const clap_preset_discovery_metadata_receiver, d: *const c_char) {
        // SAFETY: as in on_error.
        unsafe { seen((*rx).receiver_data).borrow_mut().descriptions.push(s(d)) }
    }

    unsafe extern "C" fn set_flags(rx: *const clap_preset_discovery_metadata_receiver, flags: u32) {
        // SAFETY: as in on_error.
        unsafe { seen((*rx).receiver_data).borrow_mut().flags.push(flags) }
    }

    unsafe extern "C" fn set_timestamps(rx: *const clap_preset_discovery_metadata_receiver, c: u64, m: u64) {
        // SAFETY: as in on_error.
        unsafe { seen((*rx).receiver_data).borrow_mut().timestamps.push((c, m)) }
    }

    fn indexer(seen: &RefCell<Seen>) -> clap_preset_discovery_indexer {
        clap_preset_discovery_indexer {
            clap_version: CLAP_VERSION,
            name: c"test indexer".as_ptr(),
            vendor: null(),
            url: null(),
            version: null(),
            indexer_data: seen as *const RefCell<Seen> as *mut c_void,
            declare_filetype: Some(declare_filetype),
            declare_location: Some(declare_location),
            declare_soundpack: None,
            get_extension: None,
        }
    }

    fn receiver(seen: &RefCell<Seen>) -> clap_preset_discovery_metadata_receiver {
        clap_preset_discovery_metadata_receiver {
            receiver_data: seen as *const RefCell<Seen> as *mut c_void,
            on_error: Some(on_error),
            begin_preset: Some(begin_preset),
            add_plugin_id: Some(add_plugin_id),
            set_soundpack_id: None,
            set_flags: Some(set_flags),
            add_creator: None,
            set_description: Some(set_description),
            set_timestamps: Some(set_timestamps),
            add_feature: None,
            add_extra_info: None,
        }
    }

    #[test]
    fn a_host_indexes_through_the_c_interface() {
        let dir = TempDir::new();
        let synth = dir.write("synth.py", INSTRUMENT_SCRIPT);
        let gain = dir.write("gain.py", EFFECT_SCRIPT);

        // SAFETY: the factory is a static; every call below is made as a
        // host makes it, with objects that outlive the calls.
        unsafe {
            let factory = &*(factory() as *const clap_preset_discovery_factory);
            assert_eq!(factory.count.unwrap()(factory), 1);
            let desc = &*factory.get_descriptor.unwrap()(factory, 0);
            assert_eq!(s(desc.id), "dev.outboard.scripts");
            assert_eq!(s(desc.name), "Outboard scripts");
            assert_eq!(s(desc.vendor), "Outboard");
            assert!(factory.get_descriptor.unwrap()(factory, 1).is_null());

            let indexed = RefCell::new(Seen::default());
            let idx = indexer(&indexed);
            let create = factory.create.unwrap();
            assert!(create(factory, &idx, c"dev.outboard.other".as_ptr()).is_null());
            assert!(create(factory, &idx, null()).is_null());
            assert!(create(factory, null(), desc.id).is_null());

            let provider = create(factory, &idx, desc.id);
            assert!(!provider.is_null());
            let p = &*provider;
            assert!(p.init.unwrap()(provider));
            {
                let indexed = indexed.borrow();
                assert_eq!(indexed.filetypes, [("Python script".to_string(), "py".to_string())]);
                let roots = Roots::from_env();
                let mut factory = &indexed.locations[..];
                if let Some(expected) = &roots.user {
                    let user = indexed.locations.last().expect("the user's folder, declared even if missing");
                    assert_eq!(user.0, CLAP_PRESET_DISCOVERY_IS_USER_CONTENT);
                    assert_eq!(user.1, CLAP_PRESET_DISCOVERY_LOCATION_FILE);
                    assert_eq!(user.2, "My Outboard scripts");
                    assert_eq!(Path::new(&user.3), expected);
                    assert!(user.3.ends_with("outboard/scripts"), "{}", user.3);
                    factory = &factory[..factory.len() - 1];
                }
                assert_eq!(factory.len(), roots.factory.iter().filter(|d| d.is_dir()).count());
                for l in factory {
                    assert_eq!(
                        (l.0, l.1),
                        (CLAP_PRESET_DISCOVERY_IS_FACTORY_CONTENT, CLAP_PRESET_DISCOVERY_LOCATION_FILE)
                    );
                }
            }

            let got = RefCell::new(Seen::default());
            let rx = receiver(&got);
            let get_metadata = p.get_metadata.unwrap();
            for path in [&synth, &gain] {
                let c = CString::new(path.as_os_str().as_bytes()).unwrap();
                assert!(get_metadata(provider, CLAP_PRESET_DISCOVERY_LOCATION_FILE, c.as_ptr(), &rx));
            }
            {
                let got = got.borrow();
                assert_eq!(got.presets, ["synth", "gain"]);
                assert!(got.load_keys_null);
                let clap = |id: &str| ("clap".to_string(), id.to_string());
                assert_eq!(got.plugin_ids, [clap(INSTRUMENT_ID), clap(EFFECT_ID)]);
                assert_eq!(got.descriptions, ["A sine synth, one voice per note.", "Gain: a fixed -6 dB."]);
                assert!(got.flags.is_empty(), "a temporary folder is neither factory nor user content");
                assert_eq!(got.timestamps.len(), 2);
                assert!(got.timestamps.iter().all(|&(_, modified)| modified > 1_600_000_000));
                assert!(got.errors.is_empty());
            }

            // Refusals: each says why on the receiver, none panics.
            let missing = CString::new(dir.0.join("missing.py").as_os_str().as_bytes()).unwrap();
            assert!(!get_metadata(provider, CLAP_PRESET_DISCOVERY_LOCATION_FILE, missing.as_ptr(), &rx));
            assert!(!get_metadata(provider, CLAP_PRESET_DISCOVERY_LOCATION_FILE, null(), &rx));
            assert!(!get_metadata(provider, CLAP_PRESET_DISCOVERY_LOCATION_PLUGIN, null(), &rx));
            let c = CString::new(synth.as_os_str().as_bytes()).unwrap();
            assert!(!get_metadata(provider, CLAP_PRESET_DISCOVERY_LOCATION_FILE, c.as_ptr(), null()));
            assert!(!get_metadata(null(), CLAP_PRESET_DISCOVERY_LOCATION_FILE, c.as_ptr(), &rx));
            {
                let got = got.borrow();
                assert_eq!(got.errors.len(), 3);
                assert!(got.errors[0].1.contains("missing.py"), "{:?}", got.errors[0]);
                assert_eq!(got.errors[0].0, libc::ENOENT);
                assert_eq!(got.presets.len(), 2, "no preset begun for a refusal");
            }

            assert!(p.get_extension.unwrap()(provider, c"x".as_ptr()).is_null());
            p.destroy.unwrap()(provider);
            // A null provider: nothing happens.
            provider_destroy(null());
            assert!(!provider_init(null()));
        }
    }
}
