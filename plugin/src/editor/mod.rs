//! The plugin's editor: a window (CLAP gui extension: X11, embedded in the
//! host's window or floating) that shows the instance's script, its log,
//! its live status and its controls, and acts on them.
//!
//! # Threads
//!
//! - The **model** ([`model::EditorModel`], plain data) sits in an
//!   [`EditorHandle`] (a mutex), one per instance.
//! - The **main thread** carries out the model's actions and refreshes it
//!   from the instance ([`instance`]): at every `on_main_thread` (the
//!   window asks the host for one when it queues an action) and on a host
//!   timer while the window is open ([`window::TIMER_PERIOD_MS`]).
//! - The **window's thread** (baseview runs each X11 window's event loop on
//!   a thread of its own) draws a copy of the model taken under the lock
//!   (only when it changed) and queues actions; it never runs on the main
//!   or the audio thread.
//! - The **audio thread** never touches the model. A control moved in the
//!   editor reaches it through a preallocated wait-free ring (main thread →
//!   audio thread): `process` (or the parameter flush the plugin asks the
//!   host for) sends the host the gesture begin, the value and the gesture
//!   end, and takes the value. The DSP load is measured by `process` into
//!   atomics, only while someone watches.
//!
//! A host that never opens the editor pays nothing: no thread, no timer,
//! no ring traffic, no measurement; the model stays empty and the
//! instance's messages are kept in a bounded history only.
//!
//! # Tests
//!
//! [`models`] lists every live instance's handle. A test (linking the
//! plugin) [`watch`](EditorHandle::watch)es one, queues actions with
//! [`act`](EditorHandle::act) and lets the host serve the main-thread
//! callbacks the plugin asks for (outboard-host's
//! `Instance::service_main_thread`), then reads the model.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use clap_sys::host::clap_host;

pub mod browser;
pub mod instance;
pub mod model;
pub mod view;
pub mod window;

pub use model::{Action, Control, ControlKind, EditorModel, LogEntry, LogKind, ScriptLocation, Status, WorkerState};

/// A host pointer other threads may use to ask for a main-thread callback.
struct RawHost(*const clap_host);

// SAFETY: CLAP's `request_callback` is thread-safe, and it is the only
// function called through this pointer; it is used under the handle's
// lock, and the instance clears it ([`EditorHandle::detach`]) before the
// host may free the `clap_host`.
unsafe impl Send for RawHost {}

/// One instance's editor model, shared by its main thread, its window's
/// thread and tests.
pub struct EditorHandle {
    model: Mutex<EditorModel>,
    host: Mutex<Option<RawHost>>,
    /// Windows and tests looking at the model: the main thread keeps it
    /// fresh only while this is above zero.
    watchers: AtomicUsize,
    /// Called when the model changed (the open window's repaint).
    repaint: Mutex<Option<Box<dyn Fn() + Send>>>,
    /// The host's timer refreshes the model (else the window asks for
    /// callbacks itself).
    timer: AtomicBool,
}

impl EditorHandle {
    /// # Safety
    /// `host` must stay valid until [`EditorHandle::detach`] is called.
    pub(crate) unsafe fn new(host: *const clap_host) -> Arc<EditorHandle> {
        let handle = Arc::new(EditorHandle {
            model: Mutex::new(EditorModel::default()),
            host: Mutex::new(Some(RawHost(host))),
            watchers: AtomicUsize::new(0),
            repaint: Mutex::new(None),
            timer: AtomicBool::new(false),
        });
        let mut registry = registry();
        registry.retain(|h| h.strong_count() > 0);
        registry.push(Arc::downgrade(&handle));
        handle
    }

    /// The model (held briefly: the main thread waits for it).
    pub fn lock(&self) -> MutexGuard<'_, EditorModel> {
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an action and asks the host for the main-thread callback
    /// that carries it out.
    pub fn act(&self, action: Action) {
        self.lock().push(action);
        self.wake();
    }

    /// Queues several actions (one callback).
    pub fn act_all(&self, actions: impl IntoIterator<Item = Action>) {
        let mut any = false;
        {
            let mut model = self.lock();
            for action in actions {
                model.push(action);
                any = true;
            }
        }
        if any {
            self.wake();
        }
    }

    /// Asks the host for a main-thread callback (any thread but a realtime
    /// one); nothing once the instance is gone.
    pub fn wake(&self) {
        let host = self.host.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(host) = host.as_ref() {
            // SAFETY: valid until detached (under this lock); CLAP's
            // request_callback is thread-safe.
            unsafe {
                if let Some(request) = (*host.0).request_callback {
                    request(host.0);
                }
            }
        }
    }

    /// Keeps the model fresh until the returned guard is dropped (the main
    /// thread refreshes it at its next callback, which this asks for).
    pub fn watch(self: &Arc<Self>) -> Watch {
        self.watchers.fetch_add(1, Ordering::AcqRel);
        self.wake();
        Watch(self.clone())
    }

    /// Whether a window or a test looks at the model.
    pub fn watched(&self) -> bool {
        self.watchers.load(Ordering::Acquire) > 0
    }

    /// The instance is gone: no callback is asked for from now on.
    pub(crate) fn detach(&self) {
        *self.host.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *self.repaint.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Whether the instance is still alive.
    pub fn attached(&self) -> bool {
        self.host.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    pub(crate) fn set_repaint(&self, repaint: Option<Box<dyn Fn() + Send>>) {
        *self.repaint.lock().unwrap_or_else(|e| e.into_inner()) = repaint;
    }

    /// The model changed: the open window draws it again.
    pub(crate) fn changed(&self) {
        if let Some(repaint) = self.repaint.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            repaint();
        }
    }

    pub(crate) fn set_timer(&self, running: bool) {
        self.timer.store(running, Ordering::Release);
    }

    /// Whether a host timer keeps the model fresh.
    pub fn has_timer(&self) -> bool {
        self.timer.load(Ordering::Acquire)
    }

    /// A copy of the model if it changed since `seen` (the window's
    /// thread, once per frame: the lock is held for the copy only).
    pub fn snapshot_if_changed(&self, seen: u64) -> Option<EditorModel> {
        let model = self.lock();
        (model.generation != seen || seen == 0).then(|| model.clone())
    }
}

/// Keeps an [`EditorHandle`]'s model fresh while it lives.
pub struct Watch(Arc<EditorHandle>);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::AcqRel);
    }
}

static REGISTRY: Mutex<Vec<Weak<EditorHandle>>> = Mutex::new(Vec::new());

fn registry() -> MutexGuard<'static, Vec<Weak<EditorHandle>>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every live instance's editor handle, oldest instance first (the test
/// hook: a program linking the plugin drives editors without a window).
pub fn models() -> Vec<Arc<EditorHandle>> {
    registry().iter().filter_map(Weak::upgrade).filter(|h| h.attached()).collect()
}

/// Takes the instance's handle off the registry.
pub(crate) fn unregister(handle: &Arc<EditorHandle>) {
    handle.detach();
    registry().retain(|h| h.strong_count() > 0 && !std::ptr::eq(h.as_ptr(), Arc::as_ptr(handle)));
}

/// What `process` measures for the editor's DSP load (atomics; written
/// only while [`Meters::measuring`]).
#[derive(Default)]
pub struct Meters {
    measuring: AtomicBool,
    /// Nanoseconds spent in `process`.
    busy_ns: AtomicU64,
    /// Frames processed.
    frames: AtomicU64,
    /// The largest single-call load, in millionths.
    peak_ppm: AtomicU64,
}

impl Meters {
    /// Whether `process` should measure itself now (someone watches the editor). Any thread; realtime-safe.
    pub fn measuring(&self) -> bool {
        self.measuring.load(Ordering::Relaxed)
    }

    pub(crate) fn set_measuring(&self, on: bool) {
        self.measuring.store(on, Ordering::Relaxed);
    }

    /// One `process` call took `ns` for `frames` at `rate`. Realtime-safe.
    pub fn record(&self, ns: u64, frames: u32, rate: f64) {
        self.busy_ns.fetch_add(ns, Ordering::Relaxed);
        self.frames.fetch_add(u64::from(frames), Ordering::Relaxed);
        if frames > 0 && rate > 0.0 {
            let budget_ns = f64::from(frames) * 1e9 / rate;
            self.peak_ppm.fetch_max((ns as f64 / budget_ns * 1e6) as u64, Ordering::Relaxed);
        }
    }

    /// (busy ns, frames) so far, and the peak since the last take.
    pub(crate) fn take(&self) -> (u64, u64, f64) {
        let peak = self.peak_ppm.swap(0, Ordering::Relaxed) as f64 / 1e6;
        (self.busy_ns.load(Ordering::Relaxed), self.frames.load(Ordering::Relaxed), peak)
    }
}

/// A parameter move from the editor, on its way to the audio thread.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ParamGesture {
    /// The user took hold of parameter `id`: sent to the host as CLAP's `param_gesture_begin`.
    Begin(u32),
    /// Parameter `id` moved to this value, in the units the host holds (see [`crate::params`]): taken by the
    /// plugin and sent to the host as a `param_value` event.
    Value(u32, f64),
    /// The user let go of parameter `id`: sent to the host as `param_gesture_end`.
    End(u32),
}

/// Moves the ring holds (a gesture is three).
pub const GESTURE_RING: usize = 1024;
