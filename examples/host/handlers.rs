//! The host side of the CLAP callbacks: what a plugin may ask of us, and a
//! record of every request so that tests can check what the plugin did.
//!
//! A plugin calls these from any thread (the thread-safe ones), from the main
//! thread, or — misbehaving — from its audio thread. Every callback only bumps
//! atomic counters and flags, so a call from the audio thread costs nothing
//! and never blocks; the one exception is a log message, which is printed
//! (a plugin should not log from its audio thread: such calls are counted
//! apart, in [`HostCounters::audio_thread_logs`]).
//!
//! Requests that need work on the main thread (`request_callback`,
//! `request_flush`) set a pending flag that the owner of the instance services
//! with [`crate::Instance::service_main_thread`].
//!
//! Log messages are printed as `outboard-host: plugin #N [severity] message`
//! (N: the instance's number, [`crate::Instance::set_number`]), the first
//! [`MAX_PRINTED_LOGS`] of each instance; all are counted. clack-plugin's
//! report of a caught panic ("Plugin panicked") is also counted as a panic
//! (see [`crate::panics`]).

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::thread::ThreadId;

use clack_extensions::audio_ports::{AudioPortRescanFlags, HostAudioPorts, HostAudioPortsImpl, PluginAudioPorts};
use clack_extensions::latency::{HostLatency, HostLatencyImpl, PluginLatency};
use clack_extensions::log::{HostLog, HostLogImpl, LogSeverity};
use clack_extensions::note_ports::{
    HostNotePorts, HostNotePortsImpl, NoteDialects, NotePortRescanFlags, PluginNotePorts,
};
use clack_extensions::params::{
    HostParams, HostParamsImplMainThread, HostParamsImplShared, ParamClearFlags, ParamRescanFlags, PluginParams,
};
use clack_extensions::render::PluginRender;
use clack_extensions::state::{HostState, HostStateImpl, PluginState};
use clack_extensions::thread_check::{HostThreadCheck, HostThreadCheckImpl};
use clack_host::prelude::*;

/// Log messages printed per instance; later ones are only counted.
pub const MAX_PRINTED_LOGS: u64 = 1000;

/// The number the next instance gets unless told otherwise.
static NEXT_NUMBER: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set on the threads that run a plugin's audio processing, for the
    /// thread-check extension (a const thread-local: no allocation on access).
    static AUDIO_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as an audio thread for the thread-check
/// extension. [`crate::Processor::start_processing`] calls it.
pub fn mark_audio_thread() {
    AUDIO_THREAD.with(|a| a.set(true));
}

fn on_audio_thread() -> bool {
    AUDIO_THREAD.with(|a| a.get())
}

/// Everything a plugin instance asked of the host, counted. Shared (an
/// `Arc`) between the instance's handlers and whoever wants to read it.
#[derive(Debug, Default)]
pub struct HostCounters {
    /// `host.request_restart()`: deactivate and reactivate when convenient.
    pub restart_requests: AtomicU64,
    /// `host.request_process()`.
    pub process_requests: AtomicU64,
    /// `host.request_callback()`: call `on_main_thread` on the main thread.
    pub callback_requests: AtomicU64,
    /// How many times the host called the plugin's `on_main_thread`.
    pub main_thread_callbacks: AtomicU64,
    /// `params.request_flush()`.
    pub flush_requests: AtomicU64,
    /// `params.rescan(flags)`, and the union of the flags asked for.
    pub params_rescans: AtomicU64,
    pub params_rescan_flags: AtomicU32,
    /// `params.clear(id, flags)`.
    pub params_clears: AtomicU64,
    /// `latency.changed()`.
    pub latency_changes: AtomicU64,
    /// `audio_ports.rescan(flags)`.
    pub audio_ports_rescans: AtomicU64,
    /// `note_ports.rescan(flags)`.
    pub note_ports_rescans: AtomicU64,
    /// `state.mark_dirty()`.
    pub state_dirty_marks: AtomicU64,
    /// Log messages, those of error severity or worse, and those logged
    /// from an audio thread (which a realtime plugin should never do).
    pub logs: AtomicU64,
    pub error_logs: AtomicU64,
    pub audio_thread_logs: AtomicU64,
    /// Panics the plugin reported caught ("Plugin panicked", from its
    /// clack wrapper) that this process's panic hook did not see.
    pub reported_panics: AtomicU64,
}

/// A plain copy of [`HostCounters`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    pub restart_requests: u64,
    pub process_requests: u64,
    pub callback_requests: u64,
    pub main_thread_callbacks: u64,
    pub flush_requests: u64,
    pub params_rescans: u64,
    pub params_rescan_flags: u32,
    pub params_clears: u64,
    pub latency_changes: u64,
    pub audio_ports_rescans: u64,
    pub note_ports_rescans: u64,
    pub state_dirty_marks: u64,
    pub logs: u64,
    pub error_logs: u64,
    pub audio_thread_logs: u64,
    pub reported_panics: u64,
}

impl HostCounters {
    pub fn snapshot(&self) -> CountersSnapshot {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CountersSnapshot {
            restart_requests: n(&self.restart_requests),
            process_requests: n(&self.process_requests),
            callback_requests: n(&self.callback_requests),
            main_thread_callbacks: n(&self.main_thread_callbacks),
            flush_requests: n(&self.flush_requests),
            params_rescans: n(&self.params_rescans),
            params_rescan_flags: self.params_rescan_flags.load(Ordering::Relaxed),
            params_clears: n(&self.params_clears),
            latency_changes: n(&self.latency_changes),
            audio_ports_rescans: n(&self.audio_ports_rescans),
            note_ports_rescans: n(&self.note_ports_rescans),
            state_dirty_marks: n(&self.state_dirty_marks),
            logs: n(&self.logs),
            error_logs: n(&self.error_logs),
            audio_thread_logs: n(&self.audio_thread_logs),
            reported_panics: n(&self.reported_panics),
        }
    }
}

impl CountersSnapshot {
    /// Sums counters over instances (flags are or-ed).
    pub fn add(&mut self, other: &CountersSnapshot) {
        self.restart_requests += other.restart_requests;
        self.process_requests += other.process_requests;
        self.callback_requests += other.callback_requests;
        self.main_thread_callbacks += other.main_thread_callbacks;
        self.flush_requests += other.flush_requests;
        self.params_rescans += other.params_rescans;
        self.params_rescan_flags |= other.params_rescan_flags;
        self.params_clears += other.params_clears;
        self.latency_changes += other.latency_changes;
        self.audio_ports_rescans += other.audio_ports_rescans;
        self.note_ports_rescans += other.note_ports_rescans;
        self.state_dirty_marks += other.state_dirty_marks;
        self.logs += other.logs;
        self.error_logs += other.error_logs;
        self.audio_thread_logs += other.audio_thread_logs;
        self.reported_panics += other.reported_panics;
    }
}

/// The plugin's extensions this host uses, queried once while it initialises.
#[derive(Clone, Copy, Default)]
pub struct PluginExtensions {
    pub params: Option<PluginParams>,
    pub state: Option<PluginState>,
    pub latency: Option<PluginLatency>,
    pub audio_ports: Option<PluginAudioPorts>,
    pub note_ports: Option<PluginNotePorts>,
    pub render: Option<PluginRender>,
}

/// The thread-safe half of the host handlers.
pub struct HostShared {
    pub(crate) counters: std::sync::Arc<HostCounters>,
    /// Set by a thread-safe request, cleared by the main thread when served.
    pub(crate) callback_pending: AtomicBool,
    pub(crate) flush_pending: AtomicBool,
    pub(crate) extensions: OnceLock<PluginExtensions>,
    main_thread: ThreadId,
    /// Print the plugin's log messages (the tests may silence them).
    echo_log: bool,
    /// The instance's number in log lines.
    pub(crate) number: AtomicUsize,
}

impl HostShared {
    pub(crate) fn new(counters: std::sync::Arc<HostCounters>, echo_log: bool) -> HostShared {
        HostShared {
            counters,
            callback_pending: AtomicBool::new(false),
            flush_pending: AtomicBool::new(false),
            extensions: OnceLock::new(),
            main_thread: std::thread::current().id(),
            echo_log,
            number: AtomicUsize::new(NEXT_NUMBER.fetch_add(1, Ordering::Relaxed)),
        }
    }

    pub(crate) fn extensions(&self) -> PluginExtensions {
        self.extensions.get().copied().unwrap_or_default()
    }
}

impl<'a> SharedHandler<'a> for HostShared {
    fn initializing(&self, instance: InitializingPluginHandle<'a>) {
        // Extensions may be queried only from here on; they stay valid for
        // the instance's life.
        let _ = self.extensions.set(PluginExtensions {
            params: instance.get_extension(),
            state: instance.get_extension(),
            latency: instance.get_extension(),
            render: instance.get_extension(),
            audio_ports: instance.get_extension(),
            note_ports: instance.get_extension(),
        });
    }

    fn request_restart(&self) {
        self.counters.restart_requests.fetch_add(1, Ordering::Relaxed);
    }

    fn request_process(&self) {
        self.counters.process_requests.fetch_add(1, Ordering::Relaxed);
    }

    fn request_callback(&self) {
        self.counters.callback_requests.fetch_add(1, Ordering::Relaxed);
        self.callback_pending.store(true, Ordering::Release);
    }
}

impl HostLogImpl for HostShared {
    fn log(&self, severity: LogSeverity, message: &str) {
        let n = self.counters.logs.fetch_add(1, Ordering::Relaxed) + 1;
        if crate::panics::is_panic_report(message) && crate::panics::report_needs_counting() {
            self.counters.reported_panics.fetch_add(1, Ordering::Relaxed);
        }
        if matches!(
            severity,
            LogSeverity::Error | LogSeverity::Fatal | LogSeverity::HostMisbehaving | LogSeverity::PluginMisbehaving
        ) {
            self.counters.error_logs.fetch_add(1, Ordering::Relaxed);
        }
        if on_audio_thread() {
            self.counters.audio_thread_logs.fetch_add(1, Ordering::Relaxed);
        }
        if self.echo_log && n <= MAX_PRINTED_LOGS {
            let number = self.number.load(Ordering::Relaxed);
            eprintln!("outboard-host: plugin #{number} [{severity}] {message}");
            if n == MAX_PRINTED_LOGS {
                eprintln!("outboard-host: plugin #{number}: {n} messages; the rest are counted, not printed");
            }
        }
    }
}

impl HostThreadCheckImpl for HostShared {
    fn is_main_thread(&self) -> bool {
        std::thread::current().id() == self.main_thread
    }

    fn is_audio_thread(&self) -> bool {
        on_audio_thread()
    }
}

impl HostParamsImplShared for HostShared {
    fn request_flush(&self) {
        self.counters.flush_requests.fetch_add(1, Ordering::Relaxed);
        self.flush_pending.store(true, Ordering::Release);
    }
}

/// The main-thread half of the host handlers.
pub struct HostMainThread<'a> {
    shared: &'a HostShared,
}

impl<'a> HostMainThread<'a> {
    pub(crate) fn new(shared: &'a HostShared) -> HostMainThread<'a> {
        HostMainThread { shared }
    }
}

impl<'a> MainThreadHandler<'a> for HostMainThread<'a> {}

impl HostParamsImplMainThread for HostMainThread<'_> {
    fn rescan(&self, flags: ParamRescanFlags) {
        // The host keeps no parameter cache: every query asks the plugin, so
        // a rescan only needs recording.
        self.shared.counters.params_rescans.fetch_add(1, Ordering::Relaxed);
        self.shared.counters.params_rescan_flags.fetch_or(flags.bits(), Ordering::Relaxed);
    }

    fn clear(&self, _param_id: ClapId, _flags: ParamClearFlags) {
        self.shared.counters.params_clears.fetch_add(1, Ordering::Relaxed);
    }
}

impl HostLatencyImpl for HostMainThread<'_> {
    fn changed(&self) {
        // Read again with Instance::latency(); the run loop reports the
        // latency it measured the output against and this count.
        self.shared.counters.latency_changes.fetch_add(1, Ordering::Relaxed);
    }
}

impl HostAudioPortsImpl for HostMainThread<'_> {
    fn is_rescan_flag_supported(&self, _flag: AudioPortRescanFlags) -> bool {
        // Ports are read afresh at every activation, so any change is fine.
        true
    }

    fn rescan(&self, _flags: AudioPortRescanFlags) {
        self.shared.counters.audio_ports_rescans.fetch_add(1, Ordering::Relaxed);
    }
}

impl HostNotePortsImpl for HostMainThread<'_> {
    fn supported_dialects(&self) -> NoteDialects {
        // What `--note-dialect` can send.
        NoteDialects::CLAP | NoteDialects::MIDI
    }

    fn rescan(&self, _flags: NotePortRescanFlags) {
        // Note ports are read afresh whenever needed: only recorded.
        self.shared.counters.note_ports_rescans.fetch_add(1, Ordering::Relaxed);
    }
}

impl HostStateImpl for HostMainThread<'_> {
    fn mark_dirty(&self) {
        self.shared.counters.state_dirty_marks.fetch_add(1, Ordering::Relaxed);
    }
}

/// The host: ties the handlers together and declares the extensions.
pub struct OutboardHost;

impl HostHandlers for OutboardHost {
    type Shared<'a> = HostShared;
    type MainThread<'a> = HostMainThread<'a>;
    type AudioProcessor<'a> = ();

    fn declare_extensions(builder: &mut HostExtensions<Self>, _shared: &Self::Shared<'_>) {
        builder
            .register::<HostLog>()
            .register::<HostThreadCheck>()
            .register::<HostParams>()
            .register::<HostLatency>()
            .register::<HostAudioPorts>()
            .register::<HostNotePorts>()
            .register::<HostState>();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_the_plugin_reports_caught_is_counted_once() {
        let counters = std::sync::Arc::new(HostCounters::default());
        let shared = HostShared::new(counters.clone(), false);
        let reported = || counters.reported_panics.load(Ordering::Relaxed);
        // A plugin with its own Rust runtime: only clack's message shows it.
        shared.log(LogSeverity::PluginMisbehaving, "Plugin panicked");
        assert_eq!(reported(), 1);
        // This process's hook saw it first, on this thread: not again.
        crate::panics::mark_counted_by_hook();
        shared.log(LogSeverity::PluginMisbehaving, "Plugin panicked");
        assert_eq!(reported(), 1);
        // The next one, unseen by the hook, counts.
        shared.log(LogSeverity::PluginMisbehaving, "Plugin panicked");
        assert_eq!(reported(), 2);
        shared.log(LogSeverity::Warning, "Plugin panicked twice, says the script");
        shared.log(LogSeverity::Error, "an error");
        assert_eq!(reported(), 2);
        let s = counters.snapshot();
        assert_eq!((s.logs, s.error_logs, s.reported_panics), (5, 4, 2));
    }
}
