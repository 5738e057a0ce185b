//! Messages for the host's log: script errors (file, line, traceback),
//! `ctx.log` lines, worker lifecycle, host quirks.
//!
//! CLAP lets a plugin write to the host's log from any thread, but a host's
//! log may lock or allocate, so Outboard writes to it only from the main
//! thread (never from `process`). Each instance has a [`Mailbox`]:
//!
//! - the supervisor's thread posts the messages that concern the instance's
//!   track ([`route`], its log listener);
//! - a small thread of this module (the *mailman*, running while any
//!   instance is active) asks the host for a main-thread callback for each
//!   mailbox with mail, and posts each host quirk ([`crate::guard`]) once;
//! - the instance's `on_main_thread` delivers the mail to the host's log.
//!
//! Each mailbox also keeps a bounded [`History`] of everything posted to
//! it and everything the instance said itself (newest last, numbered), so
//! the editor shows the same messages whatever the host's log does with
//! them.
//!
//! Where the host has no log extension, or one known to drop what it is
//! given (clap-wrapper's, which is how Outboard is a VST3, on Linux), the
//! mailman writes the mail to stderr instead; where the host never calls back (some wrappers only do
//! while an editor is open), mail older than [`UNDELIVERED_AFTER`] goes to
//! stderr too. Nothing is lost silently: a mailbox over [`MAX_PENDING`]
//! messages keeps the first ones and says how many it dropped. Repeats of
//! the same script error are already rate-limited by the worker.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap_sys::host::clap_host;
use outboard_engine::workers::script_log::{LogLevel, LogRecord};

use crate::guard;

/// Messages a mailbox holds before it starts dropping.
pub const MAX_PENDING: usize = 256;
/// Mail the host has not collected after this long goes to stderr.
pub const UNDELIVERED_AFTER: Duration = Duration::from_secs(2);
/// How often the mailman looks for host quirks and forgotten mail.
const ROUNDS: Duration = Duration::from_millis(100);
/// Messages a mailbox's history keeps (the oldest go first).
pub const HISTORY: usize = 500;

/// A host pointer the mailman may use from its thread.
struct RawHost(*const clap_host);

// SAFETY: CLAP's `request_callback` is thread-safe, and it is the only
// function called through this pointer; the pointer is used only while
// the mailbox is registered, and an instance unregisters its mailbox (in
// its main thread's drop) before the host may free the `clap_host`.
unsafe impl Send for RawHost {}
// SAFETY: as above.
unsafe impl Sync for RawHost {}

/// One instance's mail.
pub struct Mailbox {
    host: RawHost,
    /// The host has a log extension; if not, mail goes to stderr.
    host_logs: bool,
    /// The engine track the instance runs now (0: none).
    track: AtomicU32,
    pending: Mutex<Pending>,
    /// A main-thread callback was asked for and has not come yet.
    requested: AtomicBool,
    /// The instance has news for its main thread besides mail (its
    /// script's declaration changed): worth a callback.
    poked: AtomicBool,
    /// What was said to or by the instance, for its editor.
    history: Mutex<History>,
}

/// One message as the editor sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Said {
    /// Numbers messages in the order they came (from 1).
    pub seq: u64,
    /// How serious it is (info, warning or error); the editor shows it with the text.
    pub level: LogLevel,
    /// The whole message, newlines (a traceback's, say) included.
    pub text: String,
    /// Wall-clock time at which the history took it.
    pub at: std::time::SystemTime,
}

/// The last [`HISTORY`] messages of an instance, oldest first.
#[derive(Debug, Default)]
pub struct History {
    said: VecDeque<Said>,
    next: u64,
}

impl History {
    fn push(&mut self, level: LogLevel, text: String) {
        if self.said.len() == HISTORY {
            self.said.pop_front();
        }
        self.next += 1;
        self.said.push_back(Said { seq: self.next, level, text, at: std::time::SystemTime::now() });
    }
}

#[derive(Default)]
struct Pending {
    messages: VecDeque<(LogLevel, String)>,
    dropped: usize,
    /// When the oldest undelivered message came.
    since: Option<Instant>,
}

impl Mailbox {
    /// `host_logs`: the host offers the log extension. A log known to go
    /// nowhere ([`log_is_dropped`]) counts as none: its mail goes to stderr.
    ///
    /// # Safety
    /// `host` must stay valid until the mailbox is [`unregister`]ed.
    pub unsafe fn new(host: *const clap_host, host_logs: bool) -> Arc<Mailbox> {
        Arc::new(Mailbox {
            host: RawHost(host),
            // SAFETY: per the contract, `host` is valid.
            host_logs: host_logs && !unsafe { log_is_dropped(host) },
            track: AtomicU32::new(0),
            pending: Mutex::new(Pending::default()),
            requested: AtomicBool::new(false),
            poked: AtomicBool::new(false),
            history: Mutex::new(History::default()),
        })
    }

    /// Keeps a message in the history (any thread but a realtime one).
    pub fn remember(&self, level: LogLevel, text: &str) {
        self.history.lock().unwrap_or_else(|e| e.into_inner()).push(level, text.to_string());
    }

    /// The messages after number `seq` that the history still holds,
    /// oldest first.
    pub fn said_since(&self, seq: u64) -> Vec<Said> {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        history.said.iter().filter(|s| s.seq > seq).cloned().collect()
    }

    /// Whether messages go to the host's log (else to stderr).
    pub fn host_logs(&self) -> bool {
        self.host_logs
    }

    /// The track whose messages this mailbox takes (0: none).
    pub fn set_track(&self, track: u32) {
        self.track.store(track, Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leaves a message (any thread but a realtime one).
    pub fn post(&self, level: LogLevel, text: impl Into<String>) {
        let text = text.into();
        self.remember(level, &text);
        let mut pending = self.lock();
        if pending.messages.len() >= MAX_PENDING {
            pending.dropped += 1;
        } else {
            pending.messages.push_back((level, text));
        }
        pending.since.get_or_insert_with(Instant::now);
        drop(pending);
        MAILMAN.1.notify_one();
    }

    /// Takes the mail (the main thread, to log it). The callback that
    /// brought it is spent.
    pub fn take(&self) -> Vec<(LogLevel, String)> {
        self.requested.store(false, Ordering::Release);
        self.poked.store(false, Ordering::Release);
        take_from(&mut self.lock())
    }
}

/// The `clap_host` of free-audio's clap-wrapper (how Outboard is a VST3)
/// names it in its vendor and url.
const CLAP_WRAPPER_URL: &[u8] = b"https://github.com/free-audio/clap-wrapper";
const CLAP_WRAPPER_VENDOR: &[u8] = b"The CLAP Wrapper Team";

/// Whether `host` offers a log extension that drops what it is given:
/// clap-wrapper's does on Linux (it writes only to Windows' debugger and
/// macOS' stderr), so a VST3 host would never see Outboard's messages.
///
/// # Safety
/// `host` must be null or a valid `clap_host`.
pub unsafe fn log_is_dropped(host: *const clap_host) -> bool {
    // SAFETY: per the contract.
    let Some(host) = (unsafe { host.as_ref() }) else { return false };
    let is = |text: *const std::ffi::c_char, expected: &[u8]| {
        // SAFETY: the host's strings are NUL-terminated or null (CLAP).
        !text.is_null() && unsafe { std::ffi::CStr::from_ptr(text) }.to_bytes() == expected
    };
    cfg!(target_os = "linux") && (is(host.url, CLAP_WRAPPER_URL) || is(host.vendor, CLAP_WRAPPER_VENDOR))
}

fn take_from(pending: &mut Pending) -> Vec<(LogLevel, String)> {
    let mut mail: Vec<_> = pending.messages.drain(..).collect();
    if pending.dropped > 0 {
        mail.push((LogLevel::Warning, format!("outboard: {} more messages were dropped", pending.dropped)));
        pending.dropped = 0;
    }
    pending.since = None;
    mail
}

/// Every registered mailbox, and the mailman's wake-up.
static MAILMAN: (Mutex<Registry>, Condvar) = (Mutex::new(Registry::new()), Condvar::new());

struct Registry {
    mailboxes: Vec<Arc<Mailbox>>,
    /// Instances active: the mailman runs while there are any.
    active: usize,
    mailman: Option<JoinHandle<()>>,
}

impl Registry {
    const fn new() -> Registry {
        Registry { mailboxes: Vec::new(), active: 0, mailman: None }
    }
}

fn registry() -> MutexGuard<'static, Registry> {
    MAILMAN.0.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes `mailbox` reachable to the supervisor's messages.
pub fn register(mailbox: &Arc<Mailbox>) {
    registry().mailboxes.push(mailbox.clone());
}

/// The instance is going: its mailbox is dropped, and its host pointer
/// never used again once this returns.
pub fn unregister(mailbox: &Arc<Mailbox>) {
    registry().mailboxes.retain(|m| !Arc::ptr_eq(m, mailbox));
}

/// An instance became active (main thread): the mailman runs from now on.
pub fn activated() {
    let mut registry = registry();
    registry.active += 1;
    if registry.mailman.is_none() {
        registry.mailman = std::thread::Builder::new().name("outboard-mailman".into()).spawn(mailman).ok();
    }
}

/// An instance was deactivated (main thread); the last one stops the
/// mailman and waits for it (so no thread of the library outlives its
/// instances). Mail still waiting goes out first.
pub fn deactivated() {
    let thread = {
        let mut registry = registry();
        registry.active = registry.active.saturating_sub(1);
        if registry.active > 0 {
            return;
        }
        registry.mailman.take()
    };
    MAILMAN.1.notify_all();
    if let Some(thread) = thread {
        let _ = thread.join();
    }
}

/// The supervisor's log listener: posts a message to the mailbox of each
/// track it concerns (every mailbox, for a message about all tracks).
pub fn route(record: &LogRecord) {
    let registry = registry();
    for mailbox in &registry.mailboxes {
        let track = mailbox.track.load(Ordering::Relaxed);
        if record.tracks.is_empty() || (track != 0 && record.tracks.contains(&track)) {
            mailbox.post(record.level, record.text.clone());
        }
    }
}

/// The supervisor's declaration listener: the instance running `track`
/// gets a main-thread callback (where it takes the new declaration).
pub fn poke(track: u32) {
    let registry = registry();
    for mailbox in registry.mailboxes.iter().filter(|m| m.track.load(Ordering::Relaxed) == track) {
        mailbox.poked.store(true, Ordering::Release);
    }
    drop(registry);
    MAILMAN.1.notify_one();
}

/// Writes mail where no host log will take it.
pub fn to_stderr(mail: &[(LogLevel, String)]) {
    for (level, text) in mail {
        let tag = match level {
            LogLevel::Error => "error",
            LogLevel::Warning => "warning",
            LogLevel::Info => "info",
        };
        eprintln!("outboard.clap [{tag}]: {text}");
    }
}

fn mailman() {
    let mut registry = registry();
    loop {
        let stopping = registry.active == 0;
        // Host quirks: said once per process, on the first host log there is.
        let quirks: Vec<_> = guard::take_unreported().collect();
        if !quirks.is_empty() {
            let first = registry.mailboxes.iter().find(|m| m.host_logs).or(registry.mailboxes.first()).cloned();
            for quirk in quirks {
                let text =
                    format!("outboard: host quirk: {} (seen {} times so far)", quirk.describe(), guard::count(quirk));
                match &first {
                    Some(mailbox) => mailbox.post(LogLevel::Warning, text),
                    None => to_stderr(&[(LogLevel::Warning, text)]),
                }
            }
        }
        for mailbox in &registry.mailboxes {
            let mut pending = mailbox.lock();
            if pending.messages.is_empty() && pending.dropped == 0 {
                if mailbox.poked.load(Ordering::Acquire) && !mailbox.requested.swap(true, Ordering::AcqRel) {
                    drop(pending);
                    // SAFETY: as below: registered, so its host is alive;
                    // request_callback is thread-safe (CLAP).
                    unsafe {
                        if let Some(request) = (*mailbox.host.0).request_callback {
                            request(mailbox.host.0);
                        }
                    }
                }
                continue;
            }
            let forgotten = pending.since.is_some_and(|t| t.elapsed() >= UNDELIVERED_AFTER);
            if !mailbox.host_logs || forgotten || stopping {
                let mail = take_from(&mut pending);
                drop(pending);
                to_stderr(&mail);
            } else if !mailbox.requested.swap(true, Ordering::AcqRel) {
                drop(pending);
                // SAFETY: the mailbox is registered (we hold the registry
                // lock), so its host is alive; request_callback is
                // thread-safe (CLAP).
                unsafe {
                    if let Some(request) = (*mailbox.host.0).request_callback {
                        request(mailbox.host.0);
                    }
                }
            }
        }
        if stopping {
            return;
        }
        registry = MAILMAN.1.wait_timeout(registry, ROUNDS).unwrap_or_else(|e| e.into_inner()).0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::c_char;
    use std::ptr::null;

    fn host(vendor: &'static [u8], url: &'static [u8]) -> clap_host {
        clap_host {
            clap_version: clap_sys::version::CLAP_VERSION,
            host_data: std::ptr::null_mut(),
            name: c"some host".as_ptr(),
            vendor: if vendor.is_empty() { null() } else { vendor.as_ptr() as *const c_char },
            url: if url.is_empty() { null() } else { url.as_ptr() as *const c_char },
            version: c"1".as_ptr(),
            get_extension: None,
            request_restart: None,
            request_process: None,
            request_callback: None,
        }
    }

    #[test]
    fn the_vst3_wrappers_log_counts_as_none() {
        let wrapper = host(b"The CLAP Wrapper Team\0", b"https://github.com/free-audio/clap-wrapper\0");
        let renamed = host(b"\0", b"https://github.com/free-audio/clap-wrapper\0");
        let other = host(b"Bitwig GmbH\0", b"https://www.bitwig.com\0");
        let bare = host(b"", b"");
        // SAFETY: valid hosts (or null).
        unsafe {
            assert_eq!(log_is_dropped(&wrapper), cfg!(target_os = "linux"));
            assert_eq!(log_is_dropped(&renamed), cfg!(target_os = "linux"));
            assert!(!log_is_dropped(&other));
            assert!(!log_is_dropped(&bare));
            assert!(!log_is_dropped(null()));
        }
    }
}
