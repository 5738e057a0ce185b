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
//! with [`crate::Instance::service_main_thread`], which also calls the
//! plugin's timers (timer-support: registered from the main thread, called
//! there at their period while the host serves it) and its file descriptors
//! (posix-fd-support: polled there, the plugin's `on_fd` called when ready).
//! The gui extension's requests (`request_resize`, `request_show`,
//! `request_hide`, `closed`, `resize_hints_changed`) come from any thread:
//! they are recorded in [`GuiRequests`] for the editor's main loop
//! ([`crate::editor`]) and counted.
//!
//! Log messages are printed as `outboard-host: plugin #N [severity] message`
//! (N: the instance's number, [`crate::Instance::set_number`]), the first
//! [`MAX_PRINTED_LOGS`] of each instance; all are counted. clack-plugin's
//! report of a caught panic ("Plugin panicked") is also counted as a panic
//! (see [`crate::panics`]).

use std::cell::{Cell, RefCell};
use std::os::unix::io::RawFd;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use clack_extensions::audio_ports::{AudioPortRescanFlags, HostAudioPorts, HostAudioPortsImpl, PluginAudioPorts};
use clack_extensions::gui::{GuiSize, HostGui, HostGuiImpl, PluginGui};
use clack_extensions::latency::{HostLatency, HostLatencyImpl, PluginLatency};
use clack_extensions::log::{HostLog, HostLogImpl, LogSeverity};
use clack_extensions::note_ports::{
    HostNotePorts, HostNotePortsImpl, NoteDialects, NotePortRescanFlags, PluginNotePorts,
};
use clack_extensions::params::{
    HostParams, HostParamsImplMainThread, HostParamsImplShared, ParamClearFlags, ParamRescanFlags, PluginParams,
};
use clack_extensions::posix_fd::{FdFlags, HostPosixFd, HostPosixFdImpl, PluginPosixFd};
use clack_extensions::render::PluginRender;
use clack_extensions::state::{HostState, HostStateImpl, PluginState};
use clack_extensions::thread_check::{HostThreadCheck, HostThreadCheckImpl};
use clack_extensions::timer::{HostTimer, HostTimerImpl, PluginTimer, TimerId};
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
    /// The union of the `CLAP_PARAM_RESCAN_*` flags asked for.
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
    /// Log messages of error severity or worse (error, fatal, host or plugin misbehaving).
    pub error_logs: AtomicU64,
    /// Log messages sent from a thread marked as an audio thread.
    pub audio_thread_logs: AtomicU64,
    /// Panics the plugin reported caught ("Plugin panicked", from its
    /// clack wrapper) that this process's panic hook did not see.
    pub reported_panics: AtomicU64,
    /// timer-support: timers registered and unregistered, and the calls
    /// of the plugin's `on_timer`.
    pub timers_registered: AtomicU64,
    /// Timers the plugin unregistered.
    pub timers_unregistered: AtomicU64,
    /// Calls of the plugin's `on_timer`.
    pub timer_calls: AtomicU64,
    /// posix-fd-support: descriptors registered, and the calls of the
    /// plugin's `on_fd`.
    pub fds_registered: AtomicU64,
    /// Calls of the plugin's `on_fd`.
    pub fd_calls: AtomicU64,
    /// Main-thread-only requests (timers, descriptors) made from another
    /// thread: refused, and counted.
    pub off_main_thread_requests: AtomicU64,
    /// gui: `resize_hints_changed`, `request_resize`, `request_show`,
    /// `request_hide` and `closed` (and those of them that said the editor
    /// was destroyed).
    pub gui_resize_hints_changes: AtomicU64,
    /// `request_resize` calls (refused ones included).
    pub gui_resize_requests: AtomicU64,
    /// `request_show` calls.
    pub gui_show_requests: AtomicU64,
    /// `request_hide` calls.
    pub gui_hide_requests: AtomicU64,
    /// `closed` calls, whether or not the editor was destroyed.
    pub gui_closed: AtomicU64,
    /// `closed(was_destroyed = true)` calls.
    pub gui_destroyed: AtomicU64,
}

/// A plain copy of [`HostCounters`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// `host.request_restart()` calls.
    pub restart_requests: u64,
    /// `host.request_process()` calls.
    pub process_requests: u64,
    /// `host.request_callback()` calls.
    pub callback_requests: u64,
    /// Calls of the plugin's `on_main_thread` made by the host.
    pub main_thread_callbacks: u64,
    /// `params.request_flush()` calls.
    pub flush_requests: u64,
    /// `params.rescan(flags)` calls.
    pub params_rescans: u64,
    /// The union of the `CLAP_PARAM_RESCAN_*` flags those rescans asked for.
    pub params_rescan_flags: u32,
    /// `params.clear(id, flags)` calls.
    pub params_clears: u64,
    /// `latency.changed()` calls.
    pub latency_changes: u64,
    /// `audio_ports.rescan(flags)` calls.
    pub audio_ports_rescans: u64,
    /// `note_ports.rescan(flags)` calls.
    pub note_ports_rescans: u64,
    /// `state.mark_dirty()` calls.
    pub state_dirty_marks: u64,
    /// Log messages, of any severity.
    pub logs: u64,
    /// Log messages of error severity or worse (error, fatal, host or plugin misbehaving).
    pub error_logs: u64,
    /// Log messages sent from an audio thread.
    pub audio_thread_logs: u64,
    /// Caught panics the plugin reported in its log that the panic hook did not see.
    pub reported_panics: u64,
    /// timer-support: timers registered.
    pub timers_registered: u64,
    /// timer-support: timers unregistered.
    pub timers_unregistered: u64,
    /// timer-support: calls of the plugin's `on_timer`.
    pub timer_calls: u64,
    /// posix-fd-support: file descriptors registered.
    pub fds_registered: u64,
    /// posix-fd-support: calls of the plugin's `on_fd`.
    pub fd_calls: u64,
    /// Main-thread-only requests (timers, descriptors) made from another thread, and refused.
    pub off_main_thread_requests: u64,
    /// gui: `resize_hints_changed()` calls.
    pub gui_resize_hints_changes: u64,
    /// gui: `request_resize()` calls (refused ones included).
    pub gui_resize_requests: u64,
    /// gui: `request_show()` calls.
    pub gui_show_requests: u64,
    /// gui: `request_hide()` calls.
    pub gui_hide_requests: u64,
    /// gui: `closed()` calls, whether or not the editor was destroyed.
    pub gui_closed: u64,
    /// gui: `closed(was_destroyed = true)` calls.
    pub gui_destroyed: u64,
}

impl HostCounters {
    /// The counters now (each read on its own, relaxed: not one atomic moment).
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
            timers_registered: n(&self.timers_registered),
            timers_unregistered: n(&self.timers_unregistered),
            timer_calls: n(&self.timer_calls),
            fds_registered: n(&self.fds_registered),
            fd_calls: n(&self.fd_calls),
            off_main_thread_requests: n(&self.off_main_thread_requests),
            gui_resize_hints_changes: n(&self.gui_resize_hints_changes),
            gui_resize_requests: n(&self.gui_resize_requests),
            gui_show_requests: n(&self.gui_show_requests),
            gui_hide_requests: n(&self.gui_hide_requests),
            gui_closed: n(&self.gui_closed),
            gui_destroyed: n(&self.gui_destroyed),
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
        self.timers_registered += other.timers_registered;
        self.timers_unregistered += other.timers_unregistered;
        self.timer_calls += other.timer_calls;
        self.fds_registered += other.fds_registered;
        self.fd_calls += other.fd_calls;
        self.off_main_thread_requests += other.off_main_thread_requests;
        self.gui_resize_hints_changes += other.gui_resize_hints_changes;
        self.gui_resize_requests += other.gui_resize_requests;
        self.gui_show_requests += other.gui_show_requests;
        self.gui_hide_requests += other.gui_hide_requests;
        self.gui_closed += other.gui_closed;
        self.gui_destroyed += other.gui_destroyed;
    }
}

/// The plugin's extensions this host uses, queried once while it initialises.
#[derive(Clone, Copy, Default)]
pub struct PluginExtensions {
    /// `clap.params`: parameters, their values and text.
    pub params: Option<PluginParams>,
    /// `clap.state`: saving and loading the plugin's state.
    pub state: Option<PluginState>,
    /// `clap.latency`: the latency the plugin reports, in samples.
    pub latency: Option<PluginLatency>,
    /// `clap.audio-ports`: the audio inputs and outputs.
    pub audio_ports: Option<PluginAudioPorts>,
    /// `clap.note-ports`: the note inputs and outputs and their dialects.
    pub note_ports: Option<PluginNotePorts>,
    /// `clap.render`: realtime or offline rendering.
    pub render: Option<PluginRender>,
    /// `clap.gui`: the editor.
    pub gui: Option<PluginGui>,
    /// `clap.timer-support`: the plugin's `on_timer`.
    pub timer: Option<PluginTimer>,
    /// `clap.posix-fd-support`: the plugin's `on_fd`.
    pub posix_fd: Option<PluginPosixFd>,
}

/// What the plugin asked of its editor's host window, from any thread,
/// waiting for the editor's main loop ([`crate::editor`]) to act on it.
#[derive(Debug, Default)]
pub struct GuiRequests {
    /// The size last asked for (`width << 32 | height`; 0: none pending).
    resize: AtomicU64,
    show: AtomicBool,
    hide: AtomicBool,
    /// `closed(was_destroyed)`: 1 closed, 2 closed and destroyed; 0 none.
    closed: AtomicU32,
}

/// One pending `closed` notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuiClosed {
    /// The plugin's window was closed (floating: by the user); the editor
    /// still exists.
    Closed,
    /// The editor is gone: the host must call `destroy`.
    Destroyed,
}

impl GuiRequests {
    /// The size asked for since the last call, if any.
    pub fn take_resize(&self) -> Option<GuiSize> {
        let packed = self.resize.swap(0, Ordering::AcqRel);
        (packed != 0).then_some(GuiSize { width: (packed >> 32) as u32, height: packed as u32 })
    }

    /// Whether `request_show` was called since the last call.
    pub fn take_show(&self) -> bool {
        self.show.swap(false, Ordering::AcqRel)
    }

    /// Whether `request_hide` was called since the last call.
    pub fn take_hide(&self) -> bool {
        self.hide.swap(false, Ordering::AcqRel)
    }

    /// The `closed` notice since the last call, if any (a destroyed one wins over a plain close).
    pub fn take_closed(&self) -> Option<GuiClosed> {
        match self.closed.swap(0, Ordering::AcqRel) {
            0 => None,
            1 => Some(GuiClosed::Closed),
            _ => Some(GuiClosed::Destroyed),
        }
    }

    /// Forgets what is pending (a new editor starts clean).
    pub fn clear(&self) {
        let _ = (self.take_resize(), self.take_show(), self.take_hide(), self.take_closed());
    }
}

/// timer-support: the plugin's timers, kept on the main thread.
#[derive(Debug, Default)]
pub struct Timers {
    list: Vec<Timer>,
    last_id: u32,
}

#[derive(Clone, Copy, Debug)]
struct Timer {
    id: u32,
    period: Duration,
    next: Instant,
}

impl Timers {
    /// A new timer, first due one period from now (periods under 1 ms
    /// count as 1 ms).
    pub fn register(&mut self, period_ms: u32, now: Instant) -> u32 {
        // Ids are never reused while the instance lives (u32::MAX is CLAP's
        // invalid id).
        self.last_id = self.last_id.wrapping_add(1).min(u32::MAX - 1);
        let period = Duration::from_millis(u64::from(period_ms.max(1)));
        self.list.push(Timer { id: self.last_id, period, next: now + period });
        self.last_id
    }

    /// Removes timer `id`; false if there was no such timer.
    pub fn unregister(&mut self, id: u32) -> bool {
        let before = self.list.len();
        self.list.retain(|t| t.id != id);
        self.list.len() != before
    }

    /// Whether timer `id` is registered.
    pub fn is_registered(&self, id: u32) -> bool {
        self.list.iter().any(|t| t.id == id)
    }

    /// How many timers are registered.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether no timer is registered.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The timers due at `now`, each rescheduled one period later (a late
    /// timer is called once, not once per period missed). No allocation
    /// when none is due.
    pub fn take_due(&mut self, now: Instant) -> Vec<u32> {
        let mut due = Vec::new();
        for t in &mut self.list {
            if t.next <= now {
                due.push(t.id);
                let next = t.next + t.period;
                t.next = if next > now { next } else { now + t.period };
            }
        }
        due
    }

    /// When the next timer is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.list.iter().map(|t| t.next).min()
    }
}

/// The thread-safe half of the host handlers.
pub struct HostShared {
    pub(crate) counters: std::sync::Arc<HostCounters>,
    /// Set by a thread-safe request, cleared by the main thread when served.
    pub(crate) callback_pending: AtomicBool,
    pub(crate) flush_pending: AtomicBool,
    pub(crate) extensions: OnceLock<PluginExtensions>,
    /// The gui extension's requests, for the editor's main loop.
    pub(crate) gui: GuiRequests,
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
            gui: GuiRequests::default(),
            main_thread: std::thread::current().id(),
            echo_log,
            number: AtomicUsize::new(NEXT_NUMBER.fetch_add(1, Ordering::Relaxed)),
        }
    }

    pub(crate) fn extensions(&self) -> PluginExtensions {
        self.extensions.get().copied().unwrap_or_default()
    }

    fn on_main_thread(&self) -> bool {
        std::thread::current().id() == self.main_thread
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
            gui: instance.get_extension(),
            timer: instance.get_extension(),
            posix_fd: instance.get_extension(),
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
        self.on_main_thread()
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

impl HostGuiImpl for HostShared {
    fn resize_hints_changed(&self) {
        // The host window is resized only on request: the hints are read
        // by nobody, only counted.
        self.counters.gui_resize_hints_changes.fetch_add(1, Ordering::Relaxed);
    }

    fn request_resize(&self, new_size: GuiSize) -> Result<(), HostError> {
        self.counters.gui_resize_requests.fetch_add(1, Ordering::Relaxed);
        if new_size.width == 0 || new_size.height == 0 {
            return Err(HostError::Message("a window size must be above zero"));
        }
        // Acknowledged now, done by the editor's main loop (the host window
        // takes the size; the plugin need not be told again).
        let packed = u64::from(new_size.width) << 32 | u64::from(new_size.height);
        self.gui.resize.store(packed, Ordering::Release);
        Ok(())
    }

    fn request_show(&self) -> Result<(), HostError> {
        self.counters.gui_show_requests.fetch_add(1, Ordering::Relaxed);
        self.gui.show.store(true, Ordering::Release);
        Ok(())
    }

    fn request_hide(&self) -> Result<(), HostError> {
        self.counters.gui_hide_requests.fetch_add(1, Ordering::Relaxed);
        self.gui.hide.store(true, Ordering::Release);
        Ok(())
    }

    fn closed(&self, was_destroyed: bool) {
        self.counters.gui_closed.fetch_add(1, Ordering::Relaxed);
        if was_destroyed {
            self.counters.gui_destroyed.fetch_add(1, Ordering::Relaxed);
        }
        self.gui.closed.fetch_max(if was_destroyed { 2 } else { 1 }, Ordering::AcqRel);
    }
}

/// The main-thread half of the host handlers.
pub struct HostMainThread<'a> {
    shared: &'a HostShared,
    /// timer-support and posix-fd-support: what the plugin registered
    /// (main thread only; never borrowed across a call into the plugin).
    pub(crate) timers: RefCell<Timers>,
    pub(crate) fds: RefCell<Vec<(RawFd, FdFlags)>>,
}

impl<'a> HostMainThread<'a> {
    pub(crate) fn new(shared: &'a HostShared) -> HostMainThread<'a> {
        HostMainThread { shared, timers: RefCell::default(), fds: RefCell::default() }
    }

    /// Refuses (and counts) a main-thread-only request made elsewhere.
    fn main_thread_only(&self) -> Result<(), HostError> {
        if self.shared.on_main_thread() {
            return Ok(());
        }
        self.shared.counters.off_main_thread_requests.fetch_add(1, Ordering::Relaxed);
        Err(HostError::Message("this request is for the main thread only"))
    }
}

impl HostTimerImpl for HostMainThread<'_> {
    fn register_timer(&self, period_ms: u32) -> Result<TimerId, HostError> {
        self.main_thread_only()?;
        self.shared.counters.timers_registered.fetch_add(1, Ordering::Relaxed);
        Ok(TimerId(self.timers.borrow_mut().register(period_ms, Instant::now())))
    }

    fn unregister_timer(&self, timer_id: TimerId) -> Result<(), HostError> {
        self.main_thread_only()?;
        if !self.timers.borrow_mut().unregister(timer_id.0) {
            return Err(HostError::Message("no such timer"));
        }
        self.shared.counters.timers_unregistered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl HostPosixFdImpl for HostMainThread<'_> {
    fn register_fd(&self, fd: RawFd, flags: FdFlags) -> Result<(), HostError> {
        self.main_thread_only()?;
        let mut fds = self.fds.borrow_mut();
        if fd < 0 || fds.iter().any(|(f, _)| *f == fd) {
            return Err(HostError::Message("invalid or already registered descriptor"));
        }
        fds.push((fd, flags));
        self.shared.counters.fds_registered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn modify_fd(&self, fd: RawFd, flags: FdFlags) -> Result<(), HostError> {
        self.main_thread_only()?;
        let mut fds = self.fds.borrow_mut();
        let entry = fds.iter_mut().find(|(f, _)| *f == fd).ok_or(HostError::Message("no such descriptor"))?;
        entry.1 = flags;
        Ok(())
    }

    fn unregister_fd(&self, fd: RawFd) -> Result<(), HostError> {
        self.main_thread_only()?;
        let mut fds = self.fds.borrow_mut();
        let before = fds.len();
        fds.retain(|(f, _)| *f != fd);
        if fds.len() == before {
            return Err(HostError::Message("no such descriptor"));
        }
        Ok(())
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
            .register::<HostState>()
            .register::<HostGui>()
            .register::<HostTimer>()
            .register::<HostPosixFd>();
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

    #[test]
    fn timers_fire_at_their_period_once_when_late_and_not_after_unregistering() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut timers = Timers::default();
        let a = timers.register(10, t0);
        let b = timers.register(0, t0); // counts as 1 ms
        assert_ne!(a, b);
        assert_eq!((timers.len(), timers.next_due()), (2, Some(ms(1))));
        assert!(timers.take_due(t0).is_empty());
        assert_eq!(timers.take_due(ms(1)), [b]);
        assert_eq!(timers.take_due(ms(10)), [a, b], "b is late: called once");
        assert_eq!(timers.next_due(), Some(ms(11)), "b's next: a period after now");
        assert_eq!(timers.take_due(ms(35)), [a, b]);
        assert_eq!(timers.take_due(ms(39)), [b], "a: 45 ms, not 20 and 30 as well");
        assert!(timers.unregister(b));
        assert!(!timers.unregister(b));
        assert!(!timers.is_registered(b) && timers.is_registered(a));
        assert_eq!(timers.take_due(ms(45)), [a]);
        let c = timers.register(5, t0);
        assert!(c != a && c != b, "ids are not reused");
    }

    #[test]
    fn gui_requests_wait_for_the_main_loop() {
        let counters = std::sync::Arc::new(HostCounters::default());
        let shared = HostShared::new(counters.clone(), false);
        assert!(shared.request_resize(GuiSize { width: 0, height: 10 }).is_err());
        shared.request_resize(GuiSize { width: 300, height: 200 }).unwrap();
        shared.request_resize(GuiSize { width: 640, height: 480 }).unwrap();
        shared.request_show().unwrap();
        shared.closed(false);
        shared.closed(true);
        shared.closed(false);
        shared.resize_hints_changed();
        let gui = &shared.gui;
        assert_eq!(gui.take_resize(), Some(GuiSize { width: 640, height: 480 }), "the latest size");
        assert_eq!(gui.take_resize(), None);
        assert!(gui.take_show() && !gui.take_show() && !gui.take_hide());
        assert_eq!(gui.take_closed(), Some(GuiClosed::Destroyed), "destroyed is not forgotten");
        assert_eq!(gui.take_closed(), None);
        let s = counters.snapshot();
        assert_eq!(
            (s.gui_resize_requests, s.gui_show_requests, s.gui_closed, s.gui_destroyed, s.gui_resize_hints_changes),
            (3, 1, 3, 1, 1)
        );
    }
}
