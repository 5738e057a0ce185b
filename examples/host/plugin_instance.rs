//! Loading a CLAP bundle and driving one plugin instance from the main
//! thread: creation, state, parameters, latency, audio ports, activation.
//!
//! An [`Instance`] is not `Send`: it lives on the thread that created it (the
//! CLAP main thread). [`Instance::activate`] hands out a [`Processor`], which
//! is `Send` and goes to an audio thread; it comes back to
//! [`Instance::deactivate`] on the main thread.

use std::ffi::CString;
use std::os::unix::io::{BorrowedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use clack_extensions::audio_ports::{AudioPortFlags, AudioPortInfoBuffer};
use clack_extensions::note_ports::{NoteDialect, NoteDialects, NotePortInfoBuffer};
use clack_extensions::params::{ParamInfoBuffer, ParamInfoFlags};
use clack_extensions::posix_fd::FdFlags;
use clack_extensions::timer::TimerId;
use clack_host::events::event_types::ParamValueEvent;
use clack_host::prelude::*;

use crate::handlers::{CountersSnapshot, HostCounters, HostMainThread, HostShared, OutboardHost, PluginExtensions};
use crate::processor::{Processor, SampleType};
use crate::stream::{ChunkedReader, ChunkedWriter};

/// A loaded `.clap` file: its entry, initialised, and its plugin factory.
pub struct Bundle {
    entry: PluginEntry,
    path: PathBuf,
}

impl Bundle {
    /// Loads the library and initialises its `clap_entry`.
    pub fn load(path: &Path) -> Result<Bundle, String> {
        // SAFETY: loading a library runs its initialisers and trusts its
        // `clap_entry` to follow the CLAP ABI: that is what a plugin host
        // does, and the user named this file as a CLAP plugin.
        let entry = unsafe { PluginEntry::load(path) }.map_err(|e| format!("{}: {e}", path.display()))?;
        if entry.get_plugin_factory().is_none() {
            return Err(format!("{}: the CLAP entry has no plugin factory", path.display()));
        }
        Ok(Bundle { entry, path: path.to_path_buf() })
    }

    /// A plugin linked into this program rather than loaded from a file
    /// (tests use it so that the plugin's allocations are this program's).
    ///
    /// # Safety
    /// `entry` must be a CLAP entry that follows the CLAP ABI.
    pub unsafe fn from_entry(
        entry: &'static clack_host::entry::EntryDescriptor,
        path: &Path,
    ) -> Result<Bundle, String> {
        let c_path = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: the caller vouches for the entry.
        let entry =
            unsafe { PluginEntry::load_from_raw(entry, &c_path) }.map_err(|e| format!("{}: {e}", path.display()))?;
        if entry.get_plugin_factory().is_none() {
            return Err(format!("{}: the CLAP entry has no plugin factory", path.display()));
        }
        Ok(Bundle { entry, path: path.to_path_buf() })
    }

    /// The path the bundle was loaded from (or named for a linked-in plugin).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// (id, name) of every plugin in the factory, in factory order.
    pub fn plugins(&self) -> Vec<(String, String)> {
        self.descriptors().into_iter().map(|d| (d.id, d.name)).collect()
    }

    /// Every plugin's descriptor, in factory order (plugins without an id,
    /// which no host can create, are left out).
    pub fn descriptors(&self) -> Vec<Descriptor> {
        let Some(factory) = self.entry.get_plugin_factory() else { return Vec::new() };
        let text = |s: Option<&std::ffi::CStr>| s.map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        factory
            .plugin_descriptors()
            .filter_map(|d| {
                Some(Descriptor {
                    id: d.id()?.to_string_lossy().into_owned(),
                    name: text(d.name()),
                    vendor: text(d.vendor()),
                    url: text(d.url()),
                    version: text(d.version()),
                    description: text(d.description()),
                    features: d.features().map(|f| f.to_string_lossy().into_owned()).collect(),
                })
            })
            .collect()
    }

    /// The id of the first plugin in the factory.
    pub fn first_plugin_id(&self) -> Option<String> {
        self.plugins().into_iter().next().map(|(id, _)| id)
    }

    /// Creates and initialises an instance of the plugin `id` (on this
    /// thread, which becomes its main thread). The plugin's log messages
    /// are printed to stderr.
    pub fn instantiate(&self, id: &str) -> Result<Instance, String> {
        self.instantiate_with(id, true)
    }

    /// As [`Bundle::instantiate`], printing the plugin's log messages only if
    /// `echo_log` (they are counted either way).
    pub fn instantiate_with(&self, id: &str, echo_log: bool) -> Result<Instance, String> {
        let c_id = CString::new(id).map_err(|_| format!("plugin id {id:?} contains a NUL byte"))?;
        let host_info =
            HostInfo::new("outboard-host", "Outboard", "https://example.invalid/outboard", env!("CARGO_PKG_VERSION"))
                .map_err(|e| e.to_string())?;
        let counters = Arc::new(HostCounters::default());
        let for_shared = counters.clone();
        let instance = PluginInstance::<OutboardHost>::new(
            move |_: &()| HostShared::new(for_shared, echo_log),
            |shared: &HostShared| HostMainThread::new(shared),
            &self.entry,
            &c_id,
            &host_info,
        )
        .map_err(|e| format!("{}: creating plugin {id:?}: {e}", self.path.display()))?;
        Ok(Instance { instance, counters, id: id.to_string() })
    }
}

/// A plugin's descriptor, as its factory gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// The plugin id, unique among plugins (CLAP suggests reverse-DNS, e.g. `com.example.synth`).
    pub id: String,
    /// The name shown to users.
    pub name: String,
    /// The vendor; empty where the plugin gives none.
    pub vendor: String,
    /// The plugin's web page; empty where the plugin gives none.
    pub url: String,
    /// The plugin's version string, as given; empty where the plugin gives none.
    pub version: String,
    /// A short description; empty where the plugin gives none.
    pub description: String,
    /// The CLAP feature strings (e.g. `audio-effect`, `instrument`, `stereo`).
    pub features: Vec<String>,
}

/// What [`Instance::activate`] needs to know.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActivateConfig {
    /// The sample rate, Hz.
    pub rate: f64,
    /// The fewest frames a `process` call will have (CLAP `activate`'s `min_frames_count`).
    pub min_frames: u32,
    /// The most frames a `process` call will have (CLAP `activate`'s `max_frames_count`).
    pub max_frames: u32,
    /// 32- or 64-bit samples (64 only where every port supports it).
    pub sample_type: SampleType,
    /// Process in place where the plugin declares an in-place pair of ports
    /// with the same channel count: the input and output share one buffer.
    pub in_place: bool,
    /// Room preallocated for input events per block (and for output events).
    pub event_capacity: usize,
    /// Frames each audio buffer holds; below `max_frames` (0, the default)
    /// means `max_frames`. More gives room to call `process` with more
    /// frames than announced, as the `huge-block` quirk does on purpose.
    pub buffer_frames: u32,
}

impl ActivateConfig {
    /// Fixed blocks of `block` frames, 32-bit, out of place.
    pub fn new(rate: f64, block: u32) -> ActivateConfig {
        ActivateConfig {
            rate,
            min_frames: block,
            max_frames: block,
            sample_type: SampleType::F32,
            in_place: false,
            event_capacity: 512,
            buffer_frames: 0,
        }
    }
}

/// One parameter, as the plugin describes it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParamInfo {
    /// The CLAP parameter id, stable across versions and sessions (not its index).
    pub id: u32,
    /// The name shown to users.
    pub name: String,
    /// Where the parameter sits in the plugin's hierarchy (`/`-separated, e.g. `filter/env`); often empty.
    pub module: String,
    /// The lowest plain value.
    pub min: f64,
    /// The highest plain value.
    pub max: f64,
    /// The default plain value.
    pub default: f64,
    /// CLAP_PARAM_* flags.
    pub flags: u32,
}

impl ParamInfo {
    /// CLAP_PARAM_IS_READONLY: the host cannot change it (the plugin may, and report it).
    pub fn is_readonly(&self) -> bool {
        self.flags & ParamInfoFlags::IS_READONLY.bits() != 0
    }

    /// CLAP_PARAM_IS_HIDDEN: not shown to users.
    pub fn is_hidden(&self) -> bool {
        self.flags & ParamInfoFlags::IS_HIDDEN.bits() != 0
    }

    /// CLAP_PARAM_IS_STEPPED: takes integer values only.
    pub fn is_stepped(&self) -> bool {
        self.flags & ParamInfoFlags::IS_STEPPED.bits() != 0
    }

    /// CLAP_PARAM_IS_ENUM: a stepped parameter whose values are named choices.
    pub fn is_enum(&self) -> bool {
        self.flags & ParamInfoFlags::IS_ENUM.bits() != 0
    }

    /// CLAP_PARAM_IS_AUTOMATABLE: the host may automate it.
    pub fn is_automatable(&self) -> bool {
        self.flags & ParamInfoFlags::IS_AUTOMATABLE.bits() != 0
    }
}

/// One note port, as the plugin describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotePort {
    /// The port's id, stable across rescans.
    pub id: u32,
    /// The name shown to users.
    pub name: String,
    /// CLAP_NOTE_DIALECT_* bits the port takes.
    pub dialects: u32,
    /// The dialect it prefers (a CLAP_NOTE_DIALECT_* bit), if it says.
    pub preferred: Option<u32>,
}

impl NotePort {
    /// Whether the port takes CLAP note events (CLAP_NOTE_DIALECT_CLAP).
    pub fn supports_clap(&self) -> bool {
        self.dialects & NoteDialects::CLAP.bits() != 0
    }

    /// Whether the port takes MIDI 1.0 messages (CLAP_NOTE_DIALECT_MIDI).
    pub fn supports_midi(&self) -> bool {
        self.dialects & NoteDialects::MIDI.bits() != 0
    }

    /// The dialects as names ("clap", "midi", "midi-mpe", "midi2").
    pub fn dialect_names(&self) -> Vec<&'static str> {
        [
            (NoteDialects::CLAP, "clap"),
            (NoteDialects::MIDI, "midi"),
            (NoteDialects::MIDI_MPE, "midi-mpe"),
            (NoteDialects::MIDI2, "midi2"),
        ]
        .into_iter()
        .filter(|(d, _)| self.dialects & d.bits() != 0)
        .map(|(_, name)| name)
        .collect()
    }
}

/// One audio port, as the plugin describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortInfo {
    /// The port's id, stable across rescans.
    pub id: u32,
    /// The name shown to users.
    pub name: String,
    /// How many channels the port has.
    pub channels: u32,
    /// CLAP_AUDIO_PORT_* flags.
    pub flags: u32,
    /// The id of the port on the other side this one may share a buffer with.
    pub in_place_pair: Option<u32>,
}

impl PortInfo {
    /// CLAP_AUDIO_PORT_SUPPORTS_64BITS: the port can process 64-bit samples.
    pub fn supports_64bit(&self) -> bool {
        self.flags & AudioPortFlags::SUPPORTS_64BITS.bits() != 0
    }

    /// CLAP_AUDIO_PORT_IS_MAIN: the main input or output (at most one on each side, and it must come first).
    pub fn is_main(&self) -> bool {
        self.flags & AudioPortFlags::IS_MAIN.bits() != 0
    }
}

/// A parameter value change for [`Instance::flush_params`] and the
/// processor's input events.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ParamChange {
    /// Sample offset in the block (ignored by a flush).
    pub offset: u32,
    /// The CLAP parameter id.
    pub id: u32,
    /// The plain value (in the parameter's own range), not normalised.
    pub value: f64,
}

/// One plugin instance, on its main thread.
pub struct Instance {
    // Dropped first: destroys the plugin while the counters still exist
    // (the handlers hold their own Arc anyway).
    pub(crate) instance: PluginInstance<OutboardHost>,
    counters: Arc<HostCounters>,
    id: String,
}

impl Instance {
    /// The id of the plugin this is an instance of.
    pub fn plugin_id(&self) -> &str {
        &self.id
    }

    /// The number the instance's log lines carry (`plugin #N`): by default
    /// the order in which this process created instances, from 0.
    pub fn number(&self) -> usize {
        self.instance.access_shared_handler(|s| s.number.load(Ordering::Relaxed))
    }

    /// Sets the number the instance's log lines carry (`plugin #N`).
    pub fn set_number(&mut self, number: usize) {
        self.instance.access_shared_handler(|s| s.number.store(number, Ordering::Relaxed));
    }

    /// Whether the plugin asked for `on_main_thread` and has not been
    /// called yet.
    pub fn callback_pending(&self) -> bool {
        self.instance.access_shared_handler(|s| s.callback_pending.load(Ordering::Acquire))
    }

    /// The live counters of what the plugin asked of the host.
    pub fn counters(&self) -> &Arc<HostCounters> {
        &self.counters
    }

    /// A copy of the counters now.
    pub fn counters_snapshot(&self) -> CountersSnapshot {
        self.counters.snapshot()
    }

    /// Whether the instance is activated (between [`Instance::activate`] and [`Instance::deactivate`]).
    pub fn is_active(&self) -> bool {
        self.instance.is_active()
    }

    pub(crate) fn extensions(&self) -> PluginExtensions {
        self.instance.access_shared_handler(|shared| shared.extensions())
    }

    /// Whether the plugin has the params extension.
    pub fn has_params(&self) -> bool {
        self.extensions().params.is_some()
    }

    /// Whether the plugin has the state extension.
    pub fn has_state(&self) -> bool {
        self.extensions().state.is_some()
    }

    /// Whether the plugin has the latency extension.
    pub fn has_latency(&self) -> bool {
        self.extensions().latency.is_some()
    }

    /// Whether the plugin has the audio-ports extension (without it, it has no audio ports).
    pub fn has_audio_ports(&self) -> bool {
        self.extensions().audio_ports.is_some()
    }

    /// The plugin's timers now registered (timer-support).
    pub fn timer_count(&self) -> usize {
        self.instance.access_handler(|mt| mt.timers.borrow().len())
    }

    /// The plugin's file descriptors now registered (posix-fd-support).
    pub fn fd_count(&self) -> usize {
        self.instance.access_handler(|mt| mt.fds.borrow().len())
    }

    /// Services what the plugin asked the main thread for: calls its
    /// `on_main_thread` if it requested a callback, flushes parameters if it
    /// asked for a flush while inactive (while active, the next process call
    /// flushes them), calls its timers that are due (a timer late by more
    /// than its period is called once) and its `on_fd` for each registered
    /// descriptor that is ready. Restart and process requests are only
    /// counted: acting on them is the caller's choice. Call it regularly
    /// from the main thread (timers are called no more precisely than
    /// that). Returns true if it called the plugin.
    pub fn service_main_thread(&mut self) -> bool {
        let mut called = false;
        let (callback, flush) = self.instance.access_shared_handler(|s| {
            (s.callback_pending.swap(false, Ordering::AcqRel), s.flush_pending.load(Ordering::Acquire))
        });
        if callback {
            self.counters.main_thread_callbacks.fetch_add(1, Ordering::Relaxed);
            self.instance.call_on_main_thread_callback();
            called = true;
        }
        if flush && !self.instance.is_active() {
            self.flush_params(&[]);
            called = true;
        }
        called |= self.call_due_timers();
        called |= self.call_ready_fds();
        called
    }

    /// timer-support: calls `on_timer` for every timer due now.
    fn call_due_timers(&mut self) -> bool {
        let Some(timer) = self.extensions().timer else { return false };
        let now = Instant::now();
        // The borrow ends before the plugin is called: on_timer may
        // register or unregister timers.
        let due = self.instance.access_handler(|mt| mt.timers.borrow_mut().take_due(now));
        for &id in &due {
            // An earlier call in this round may have unregistered it.
            if self.instance.access_handler(|mt| mt.timers.borrow().is_registered(id)) {
                self.counters.timer_calls.fetch_add(1, Ordering::Relaxed);
                timer.on_timer(&self.instance.plugin_handle(), TimerId(id));
            }
        }
        !due.is_empty()
    }

    /// posix-fd-support: polls the registered descriptors (without waiting)
    /// and calls `on_fd` for each that is ready.
    fn call_ready_fds(&mut self) -> bool {
        use rustix::event::{PollFd, PollFlags, poll};
        let Some(posix_fd) = self.extensions().posix_fd else { return false };
        let fds: Vec<(RawFd, FdFlags)> = self.instance.access_handler(|mt| mt.fds.borrow().clone());
        if fds.is_empty() {
            return false;
        }
        let ready: Vec<(RawFd, FdFlags)> = {
            let mut polled: Vec<PollFd> = fds
                .iter()
                .map(|&(fd, flags)| {
                    let mut events = PollFlags::empty();
                    if flags.contains(FdFlags::READ) {
                        events |= PollFlags::IN;
                    }
                    if flags.contains(FdFlags::WRITE) {
                        events |= PollFlags::OUT;
                    }
                    // SAFETY: the plugin registered the descriptor and keeps
                    // it open until it unregisters it (posix-fd-support's
                    // contract); it is only borrowed for this poll.
                    PollFd::from_borrowed_fd(unsafe { BorrowedFd::borrow_raw(fd) }, events)
                })
                .collect();
            if poll(&mut polled, Some(&rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 })).unwrap_or(0) == 0 {
                return false;
            }
            fds.iter()
                .zip(&polled)
                .filter_map(|(&(fd, _), p)| {
                    let r = p.revents();
                    let mut flags = FdFlags::empty();
                    if r.intersects(PollFlags::IN | PollFlags::HUP) {
                        flags |= FdFlags::READ;
                    }
                    if r.contains(PollFlags::OUT) {
                        flags |= FdFlags::WRITE;
                    }
                    if r.intersects(PollFlags::ERR | PollFlags::NVAL) {
                        flags |= FdFlags::ERROR;
                    }
                    (!flags.is_empty()).then_some((fd, flags))
                })
                .collect()
        };
        for &(fd, flags) in &ready {
            // Still registered (an earlier on_fd may have unregistered it)?
            if self.instance.access_handler(|mt| mt.fds.borrow().iter().any(|(f, _)| *f == fd)) {
                self.counters.fd_calls.fetch_add(1, Ordering::Relaxed);
                posix_fd.on_fd(&self.instance.plugin_handle(), fd, flags);
            }
        }
        !ready.is_empty()
    }

    // ---- state ----

    /// Saves the plugin's state in one stream that takes everything it is
    /// given.
    pub fn save_state(&mut self) -> Result<Vec<u8>, String> {
        let state = self.extensions().state.ok_or("the plugin has no state extension")?;
        let mut bytes = Vec::new();
        state.save(&self.instance.plugin_handle(), &mut bytes).map_err(|e| e.to_string())?;
        Ok(bytes)
    }

    /// Saves the plugin's state through a stream that accepts at most
    /// `max_per_call` bytes per write. Returns the bytes and the number of
    /// write calls the plugin made.
    pub fn save_state_chunked(&mut self, max_per_call: usize) -> Result<(Vec<u8>, usize), String> {
        let state = self.extensions().state.ok_or("the plugin has no state extension")?;
        let mut writer = ChunkedWriter::new(max_per_call);
        state.save(&self.instance.plugin_handle(), &mut writer).map_err(|e| e.to_string())?;
        let calls = writer.calls();
        Ok((writer.into_bytes(), calls))
    }

    /// Loads a state in one stream that gives everything asked for.
    pub fn load_state(&mut self, bytes: &[u8]) -> Result<(), String> {
        let state = self.extensions().state.ok_or("the plugin has no state extension")?;
        let mut reader = bytes;
        state.load(&self.instance.plugin_handle(), &mut reader).map_err(|e| e.to_string())
    }

    /// Loads a state through a stream that gives at most `max_per_call`
    /// bytes per read. Returns the number of read calls the plugin made.
    pub fn load_state_chunked(&mut self, bytes: &[u8], max_per_call: usize) -> Result<usize, String> {
        let state = self.extensions().state.ok_or("the plugin has no state extension")?;
        let mut reader = ChunkedReader::new(bytes, max_per_call);
        state.load(&self.instance.plugin_handle(), &mut reader).map_err(|e| e.to_string())?;
        Ok(reader.calls())
    }

    // ---- parameters ----

    /// How many parameters the plugin has (0 without the params extension).
    pub fn param_count(&mut self) -> u32 {
        match self.extensions().params {
            Some(params) => params.count(&self.instance.plugin_handle()),
            None => 0,
        }
    }

    /// The parameter at `index` (0..[`Instance::param_count`]), as `params.get_info` gives it; `None` without the
    /// params extension or where the plugin gives none.
    pub fn param_info(&mut self, index: u32) -> Option<ParamInfo> {
        let params = self.extensions().params?;
        let mut buffer = ParamInfoBuffer::new();
        let info = params.get_info(&self.instance.plugin_handle(), index, &mut buffer)?;
        Some(ParamInfo {
            id: info.id.get(),
            name: String::from_utf8_lossy(info.name).into_owned(),
            module: String::from_utf8_lossy(info.module).into_owned(),
            min: info.min_value,
            max: info.max_value,
            default: info.default_value,
            flags: info.flags.bits(),
        })
    }

    /// Every parameter, in the plugin's order.
    pub fn params(&mut self) -> Vec<ParamInfo> {
        (0..self.param_count()).filter_map(|i| self.param_info(i)).collect()
    }

    /// The parameter's current plain value (`params.get_value`); `None` if the plugin has no params extension or no
    /// such parameter.
    pub fn param_value(&mut self, id: u32) -> Option<f64> {
        let params = self.extensions().params?;
        params.get_value(&self.instance.plugin_handle(), ClapId::from_raw(id)?)
    }

    /// The plugin's text for the plain `value` of parameter `id` (`params.value_to_text`); `None` if it gives none.
    pub fn value_to_text(&mut self, id: u32, value: f64) -> Option<String> {
        let params = self.extensions().params?;
        let mut buffer = [0u8; 256];
        let text =
            params.value_to_text(&self.instance.plugin_handle(), ClapId::from_raw(id)?, value, &mut buffer).ok()?;
        Some(String::from_utf8_lossy(text).into_owned())
    }

    /// The plain value the plugin reads in `text` for parameter `id` (`params.text_to_value`); `None` if it reads none.
    pub fn text_to_value(&mut self, id: u32, text: &str) -> Option<f64> {
        let params = self.extensions().params?;
        let text = CString::new(text).ok()?;
        params.text_to_value(&self.instance.plugin_handle(), ClapId::from_raw(id)?, &text)
    }

    /// Sends parameter changes through `params.flush` while the instance is
    /// inactive (while active, send them with the processor's events) and
    /// returns the parameter values the plugin sent back.
    pub fn flush_params(&mut self, changes: &[ParamChange]) -> Vec<ParamChange> {
        let Some(params) = self.extensions().params else { return Vec::new() };
        if self.instance.is_active() {
            return Vec::new();
        }
        // This flush answers any pending request_flush.
        self.instance.access_shared_handler(|s| s.flush_pending.store(false, Ordering::Release));
        let Some(mut handle) = self.instance.inactive_plugin_handle() else { return Vec::new() };
        let mut input = EventBuffer::with_capacity(changes.len());
        for c in changes {
            let Some(id) = ClapId::from_raw(c.id) else { continue };
            input.push(&ParamValueEvent::new(0, id, Pckn::match_all(), c.value));
        }
        let mut output = EventBuffer::with_capacity(64);
        params.flush(&mut handle, &InputEvents::from_buffer(&input), &mut OutputEvents::from_buffer(&mut output));
        crate::processor::param_values(&output).collect()
    }

    // ---- latency and ports ----

    /// The plugin's latency in samples (0 without the latency extension).
    /// CLAP allows the query only while active or being activated.
    pub fn latency(&mut self) -> u32 {
        match self.extensions().latency {
            Some(latency) => latency.get(&self.instance.plugin_handle()),
            None => 0,
        }
    }

    /// Tells the plugin whether it renders offline (CLAP render extension):
    /// offline, a plugin may take longer than real time (and may wait for
    /// work it would otherwise skip). False if the plugin has no render
    /// extension or refused the mode.
    pub fn set_render_offline(&mut self, offline: bool) -> bool {
        use clack_extensions::render::RenderMode;
        let Some(render) = self.extensions().render else { return false };
        let mode = if offline { RenderMode::Offline } else { RenderMode::Realtime };
        render.set(&self.instance.plugin_handle(), mode).is_ok()
    }

    /// Loads the preset at `path` through the plugin's preset-load
    /// extension (a file location, no load key), as a host's preset browser
    /// does with what the preset-discovery factory listed.
    pub fn load_preset(&mut self, path: &Path) -> Result<(), String> {
        use clack_extensions::preset_discovery::PluginPresetLoad;
        use clack_extensions::preset_discovery::preset_data::Location;
        let handle = self.instance.plugin_handle();
        let load: PluginPresetLoad = handle.get_extension().ok_or("the plugin has no preset-load extension")?;
        let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
        load.load_from_location(&handle, Location::File { path: &path }, None)
            .map_err(|_| "the plugin refused the preset".to_string())
    }

    /// The plugin's audio ports on one side (none without the extension).
    pub fn audio_ports(&mut self, input: bool) -> Vec<PortInfo> {
        let Some(ports) = self.extensions().audio_ports else { return Vec::new() };
        let handle = self.instance.plugin_handle();
        let mut out = Vec::new();
        for index in 0..ports.count(&handle, input) {
            let mut buffer = AudioPortInfoBuffer::new();
            if let Some(info) = ports.get(&handle, index, input, &mut buffer) {
                out.push(PortInfo {
                    id: info.id.get(),
                    name: String::from_utf8_lossy(info.name).into_owned(),
                    channels: info.channel_count,
                    flags: info.flags.bits(),
                    in_place_pair: info.in_place_pair.map(|id| id.get()),
                });
            }
        }
        out
    }

    /// The plugin's note ports on one side (none without the extension).
    pub fn note_ports(&mut self, input: bool) -> Vec<NotePort> {
        let Some(ports) = self.extensions().note_ports else { return Vec::new() };
        let handle = self.instance.plugin_handle();
        let mut out = Vec::new();
        for index in 0..ports.count(&handle, input) {
            let mut buffer = NotePortInfoBuffer::new();
            if let Some(info) = ports.get(&handle, index, input, &mut buffer) {
                out.push(NotePort {
                    id: info.id.get(),
                    name: String::from_utf8_lossy(info.name).into_owned(),
                    dialects: info.supported_dialects.bits(),
                    preferred: info.preferred_dialect.map(|d: NoteDialect| d as u32),
                });
            }
        }
        out
    }

    // ---- activation ----

    /// Activates the plugin and returns its processor, with every buffer it
    /// will use allocated here, on the main thread.
    pub fn activate(&mut self, config: ActivateConfig) -> Result<Processor, String> {
        let rate_ok = config.rate.is_finite() && config.rate > 0.0;
        if config.min_frames == 0 || config.min_frames > config.max_frames || !rate_ok {
            return Err(format!("invalid audio configuration {config:?}"));
        }
        let inputs = self.audio_ports(true);
        let outputs = self.audio_ports(false);
        Processor::check_layout(&inputs, &outputs)?;
        if config.sample_type == SampleType::F64
            && let Some(port) = inputs.iter().chain(&outputs).find(|p| !p.supports_64bit())
        {
            return Err(format!("port {:?} does not support 64-bit samples", port.name));
        }
        let params = self.extensions().params;
        let stopped = self
            .instance
            .activate(
                |_, _| (),
                PluginAudioConfiguration {
                    sample_rate: config.rate,
                    min_frames_count: config.min_frames,
                    max_frames_count: config.max_frames,
                },
            )
            .map_err(|e| format!("activating the plugin: {e}"))?;
        Ok(Processor::new(stopped, &inputs, &outputs, &config, params))
    }

    /// Deactivates the plugin, taking its processor back. Processing should
    /// have been stopped on the audio thread ([`Processor::stop_processing`]);
    /// if it was not, it is stopped here.
    pub fn deactivate(&mut self, processor: Processor) {
        self.instance.deactivate(processor.into_stopped());
    }
}
