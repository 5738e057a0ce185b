//! The plugin's CLAP entry: one guard between the host and every call into
//! an instance (the shape of nih-plug's `wrapper/util.rs`).
//!
//! # Why a guard
//!
//! A host's input is untrusted, like a worker's (DESIGN.md §9). clack 0.2
//! trusts it: its `Process::from_raw` panics on a transport event whose
//! header is not a transport's (Debian's Qtractor 0.9.31 sends one zeroed,
//! every call), and its event views make slices of whatever size a header
//! claims. clack catches the panic, but the call is lost (silence) and the
//! panic hook prints and allocates on the audio thread. So the host's
//! pointers are checked here, before clack's typed views see them:
//!
//! - a null `clap_process`, or `process` outside activation: an error
//!   status, nothing else;
//! - a transport whose header is not a transport's: treated as none;
//! - null or incomplete event lists (input or output): an empty list, or
//!   one that discards;
//! - input events whose header is inconsistent (too small for a header, a
//!   core event of the wrong size): skipped — the list the plugin sees
//!   answers `get` with null for them, and never forwards an index past
//!   the host's own `size()`;
//! - audio buffer lists that are null with a count, or channels that are
//!   null: that side is treated as absent (silence in, nothing written);
//! - `activate` while active, `deactivate`/`reset`/`start_processing`
//!   while inactive: refused quietly.
//!
//! Each kind of quirk is counted ([`HostQuirk`]); the main thread reports
//! each kind once on the host's log ([`take_unreported`]). Events past the
//! end of a block and events out of order are readable, so the processor
//! handles them exactly (and counts them here).
//!
//! # How
//!
//! `clap_entry` wraps clack's entry ([`clack_entry!`]); its plugin factory
//! wraps clack's, and each instance the host gets is a `Guarded`: a copy
//! of clack's `clap_plugin` (same `plugin_data`, so clack's own functions
//! and extensions work when the host passes our pointer) whose `process`,
//! `activate`, `deactivate`, `reset`, `start_processing` and `destroy` are
//! ours. The params extension's `flush` gets the same event checks.
//! Everything on the audio path here is wait-free: no allocation, no lock,
//! no system call.

use std::ffi::{CStr, c_char, c_void};
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use clack_plugin::clack_entry;
use clack_plugin::entry::EntryDescriptor;
use clap_sys::audio_buffer::clap_audio_buffer;
use clap_sys::entry::clap_plugin_entry;
use clap_sys::events::*;
use clap_sys::ext::params::{CLAP_EXT_PARAMS, clap_plugin_params};
use clap_sys::factory::plugin_factory::{CLAP_PLUGIN_FACTORY_ID, clap_plugin_factory};
use clap_sys::host::clap_host;
use clap_sys::plugin::{clap_plugin, clap_plugin_descriptor};
use clap_sys::process::{CLAP_PROCESS_ERROR, clap_process, clap_process_status};
use clap_sys::version::CLAP_VERSION;

/// Something a host did that the CLAP specification rules out (or that
/// clack cannot read), seen in the field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum HostQuirk {
    /// `process` was called with a null `clap_process`.
    NullProcess,
    /// `process` was called on an instance that is not active.
    ProcessWhileInactive,
    /// The `clap_process` transport's header is not a `clap_event_transport`'s (Qtractor 0.9 sends it zeroed).
    MalformedTransport,
    /// An input or output event list was null or lacked its functions (`size`/`get`, `try_push`).
    MissingEventList,
    /// An input event's header was inconsistent (too small for a header, or a core event of the wrong size).
    MalformedEvent,
    /// An input event was timed at or past the end of its block.
    EventPastEnd,
    /// Input events were not in time order.
    UnsortedEvents,
    /// A call brought more input events than the processor sorts
    /// ([`MAX_SORTED_EVENTS`](crate::processor::MAX_SORTED_EVENTS)).
    TooManyEvents,
    /// An audio buffer list was null with a non-zero count, or had null channels.
    MissingAudioBuffers,
    /// `activate` while active, or `deactivate`, `reset` or `start_processing` while inactive.
    WrongState,
    /// The host's output event list refused an event (`try_push` failed).
    OutputEventsFull,
}

impl HostQuirk {
    /// Every quirk, in discriminant order (`ALL[q as usize] == q`), which indexes the per-quirk counters.
    pub const ALL: [HostQuirk; 11] = [
        HostQuirk::NullProcess,
        HostQuirk::ProcessWhileInactive,
        HostQuirk::MalformedTransport,
        HostQuirk::MissingEventList,
        HostQuirk::MalformedEvent,
        HostQuirk::EventPastEnd,
        HostQuirk::UnsortedEvents,
        HostQuirk::TooManyEvents,
        HostQuirk::MissingAudioBuffers,
        HostQuirk::WrongState,
        HostQuirk::OutputEventsFull,
    ];

    /// What the host did, and what the plugin does about it.
    pub fn describe(self) -> &'static str {
        match self {
            HostQuirk::NullProcess => "the host called process with no process data; the call was refused",
            HostQuirk::ProcessWhileInactive => "the host called process on an inactive instance; the call was refused",
            HostQuirk::MalformedTransport => {
                "the host passed a transport event whose header is not a transport's (Qtractor 0.9 sends it zeroed); \
                 it is ignored and the block processed as if there were no transport"
            }
            HostQuirk::MissingEventList => "the host passed no (or an incomplete) event list; treated as empty",
            HostQuirk::MalformedEvent => "the host passed an event with an inconsistent header; it is skipped",
            HostQuirk::EventPastEnd => {
                "the host passed an event timed at or past the end of its block; it takes effect at the block's end"
            }
            HostQuirk::UnsortedEvents => "the host passed events out of time order; they are applied in time order",
            HostQuirk::TooManyEvents => {
                "the host passed more events in one block than the plugin sorts; the rest take effect at the block's end"
            }
            HostQuirk::MissingAudioBuffers => {
                "the host passed audio buffers with missing channels; that side is treated as absent"
            }
            HostQuirk::WrongState => {
                "the host called activate, deactivate, reset or start_processing in the wrong state; the call was refused"
            }
            HostQuirk::OutputEventsFull => {
                "the host's output event list refused an event (full); the script's notes or parameter moves were lost"
            }
        }
    }
}

static QUIRK_COUNTS: [AtomicU64; HostQuirk::ALL.len()] = [const { AtomicU64::new(0) }; HostQuirk::ALL.len()];
static QUIRKS_REPORTED: AtomicU32 = AtomicU32::new(0);

/// Counts a quirk. Realtime-safe (one relaxed atomic add).
#[inline]
pub fn note(quirk: HostQuirk) {
    QUIRK_COUNTS[quirk as usize].fetch_add(1, Ordering::Relaxed);
}

/// How often `quirk` was seen in this process.
pub fn count(quirk: HostQuirk) -> u64 {
    QUIRK_COUNTS[quirk as usize].load(Ordering::Relaxed)
}

/// Quirks seen but not reported yet, each returned once per process (the
/// first caller takes it): what to say once on a host's log.
pub fn take_unreported() -> impl Iterator<Item = HostQuirk> {
    HostQuirk::ALL.into_iter().filter(|&quirk| {
        let bit = 1 << quirk as u32;
        count(quirk) > 0 && QUIRKS_REPORTED.fetch_or(bit, Ordering::Relaxed) & bit == 0
    })
}

static INNER: EntryDescriptor = clack_entry!(crate::OutboardEntry);

/// The CLAP entry point.
#[allow(non_upper_case_globals)]
#[unsafe(no_mangle)]
pub static clap_entry: clap_plugin_entry = clap_plugin_entry {
    clap_version: CLAP_VERSION,
    init: Some(entry_init),
    deinit: Some(entry_deinit),
    get_factory: Some(entry_get_factory),
};

// The VST3 entry points (`GetPluginFactory`, `ModuleEntry`, `ModuleExit`):
// free-audio's clap-wrapper, compiled in by the `clap-wrapper` crate, which
// finds `clap_entry` above in this same library and wraps every instance
// it makes. So a VST3 host meets the same plugin behind the same guard;
// `cargo xtask bundle` lays the library out as `Outboard.vst3`.
clap_wrapper::export_vst3!();

/// clack's plugin factory, once the host asked for one.
static INNER_FACTORY: AtomicPtr<clap_plugin_factory> = AtomicPtr::new(null_mut());

static FACTORY: clap_plugin_factory = clap_plugin_factory {
    get_plugin_count: Some(factory_count),
    get_plugin_descriptor: Some(factory_descriptor),
    create_plugin: Some(factory_create),
};

unsafe extern "C" fn entry_init(path: *const c_char) -> bool {
    // SAFETY: forwarded as the host gave it; clack's entry checks for null.
    INNER.init.is_some_and(|init| unsafe { init(path) })
}

unsafe extern "C" fn entry_deinit() {
    INNER_FACTORY.store(null_mut(), Ordering::Release);
    if let Some(deinit) = INNER.deinit {
        // SAFETY: the host deinitialises the entry it initialised.
        unsafe { deinit() }
    }
}

unsafe extern "C" fn entry_get_factory(id: *const c_char) -> *const c_void {
    // SAFETY: `id` is non-null and, per CLAP, a NUL-terminated string.
    if !id.is_null() && crate::presets::is_factory_id(unsafe { CStr::from_ptr(id) }) {
        return crate::presets::factory();
    }
    let Some(get) = INNER.get_factory.filter(|_| !id.is_null()) else { return null() };
    // SAFETY: `id` is non-null and, per CLAP, a NUL-terminated string.
    let inner = unsafe { get(id) };
    // SAFETY: as above.
    if inner.is_null() || unsafe { CStr::from_ptr(id) } != CLAP_PLUGIN_FACTORY_ID {
        return inner;
    }
    INNER_FACTORY.store(inner as *mut clap_plugin_factory, Ordering::Release);
    &FACTORY as *const clap_plugin_factory as *const c_void
}

fn inner_factory() -> Option<&'static clap_plugin_factory> {
    // SAFETY: clack's factory is a static that lives until deinit.
    unsafe { INNER_FACTORY.load(Ordering::Acquire).as_ref() }
}

unsafe extern "C" fn factory_count(_factory: *const clap_plugin_factory) -> u32 {
    let Some(inner) = inner_factory() else { return 0 };
    // SAFETY: clack's own function on clack's own factory.
    inner.get_plugin_count.map_or(0, |f| unsafe { f(inner) })
}

unsafe extern "C" fn factory_descriptor(
    _factory: *const clap_plugin_factory,
    index: u32,
) -> *const clap_plugin_descriptor {
    let Some(inner) = inner_factory() else { return null() };
    // SAFETY: clack's own function on clack's own factory; it checks the index.
    inner.get_plugin_descriptor.map_or(null(), |f| unsafe { f(inner, index) })
}

unsafe extern "C" fn factory_create(
    _factory: *const clap_plugin_factory,
    host: *const clap_host,
    plugin_id: *const c_char,
) -> *const clap_plugin {
    let Some(create) = inner_factory().and_then(|f| f.create_plugin.map(|c| (f, c))) else { return null() };
    // SAFETY: clack's own function on clack's own factory; it checks its arguments.
    let inner = unsafe { (create.1)(create.0, host, plugin_id) };
    // SAFETY: clack returns null or a valid plugin it owns until destroy.
    let Some(raw) = (unsafe { inner.as_ref() }) else { return null() };
    let guarded = Box::new(Guarded {
        raw: clap_plugin {
            desc: raw.desc,
            plugin_data: raw.plugin_data,
            init: raw.init,
            destroy: Some(plugin_destroy),
            activate: Some(plugin_activate),
            deactivate: Some(plugin_deactivate),
            start_processing: Some(plugin_start_processing),
            stop_processing: raw.stop_processing,
            reset: Some(plugin_reset),
            process: Some(plugin_process),
            get_extension: Some(plugin_get_extension),
            on_main_thread: raw.on_main_thread,
        },
        inner,
        active: AtomicBool::new(false),
    });
    Box::into_raw(guarded) as *const clap_plugin
}

/// What the host holds for an instance. `raw` is first (and the layout C's)
/// so the host's `*const clap_plugin` is also a `*const Guarded`; its
/// `plugin_data` is clack's, so clack's functions, handed our pointer,
/// find their instance.
#[repr(C)]
struct Guarded {
    raw: clap_plugin,
    /// clack's own `clap_plugin`, freed by clack's `destroy`.
    inner: *const clap_plugin,
    active: AtomicBool,
}

impl Guarded {
    /// # Safety
    /// `plugin` must be a pointer `factory_create` returned, not destroyed.
    unsafe fn from<'a>(plugin: *const clap_plugin) -> Option<&'a Guarded> {
        // SAFETY: per the contract, a live Guarded (or null).
        unsafe { (plugin as *const Guarded).as_ref() }
    }

    fn inner(&self) -> &clap_plugin {
        // SAFETY: clack's plugin lives until our destroy hands it back.
        unsafe { &*self.inner }
    }
}

unsafe extern "C" fn plugin_destroy(plugin: *const clap_plugin) {
    if plugin.is_null() {
        return;
    }
    // SAFETY: the host destroys an instance once, with the pointer
    // `factory_create` made by `Box::into_raw`.
    let guarded = unsafe { Box::from_raw(plugin as *mut Guarded) };
    if let Some(destroy) = guarded.inner().destroy {
        // SAFETY: clack's destroy on clack's own plugin, once.
        unsafe { destroy(guarded.inner) }
    }
}

unsafe extern "C" fn plugin_activate(plugin: *const clap_plugin, rate: f64, min: u32, max: u32) -> bool {
    // SAFETY: the host passes the pointer it was given.
    let Some(g) = (unsafe { Guarded::from(plugin) }) else { return false };
    if g.active.load(Ordering::Acquire) {
        note(HostQuirk::WrongState);
        return false;
    }
    // SAFETY: clack's function on clack's plugin, on the host's main thread.
    let ok = g.inner().activate.is_some_and(|f| unsafe { f(g.inner, rate, min, max) });
    g.active.store(ok, Ordering::Release);
    ok
}

unsafe extern "C" fn plugin_deactivate(plugin: *const clap_plugin) {
    // SAFETY: as in plugin_activate.
    let Some(g) = (unsafe { Guarded::from(plugin) }) else { return };
    if !g.active.swap(false, Ordering::AcqRel) {
        note(HostQuirk::WrongState);
        return;
    }
    if let Some(f) = g.inner().deactivate {
        // SAFETY: as in plugin_activate.
        unsafe { f(g.inner) }
    }
}

unsafe extern "C" fn plugin_start_processing(plugin: *const clap_plugin) -> bool {
    // SAFETY: as in plugin_activate.
    let Some(g) = (unsafe { Guarded::from(plugin) }) else { return false };
    if !g.active.load(Ordering::Acquire) {
        note(HostQuirk::WrongState);
        return false;
    }
    // SAFETY: clack's function on clack's plugin, on the audio thread.
    g.inner().start_processing.is_some_and(|f| unsafe { f(g.inner) })
}

unsafe extern "C" fn plugin_reset(plugin: *const clap_plugin) {
    // SAFETY: as in plugin_activate.
    let Some(g) = (unsafe { Guarded::from(plugin) }) else { return };
    if !g.active.load(Ordering::Acquire) {
        note(HostQuirk::WrongState);
        return;
    }
    if let Some(f) = g.inner().reset {
        // SAFETY: clack's function on clack's plugin.
        unsafe { f(g.inner) }
    }
}

unsafe extern "C" fn plugin_get_extension(plugin: *const clap_plugin, id: *const c_char) -> *const c_void {
    // SAFETY: as in plugin_activate.
    let Some(g) = (unsafe { Guarded::from(plugin) }) else { return null() };
    if id.is_null() {
        return null();
    }
    // SAFETY: clack's function; it reads `plugin_data`, which is its own.
    let ext = g.inner().get_extension.map_or(null(), |f| unsafe { f(plugin, id) });
    // SAFETY: `id` is non-null and NUL-terminated (CLAP).
    if ext.is_null() || unsafe { CStr::from_ptr(id) } != CLAP_EXT_PARAMS {
        return ext;
    }
    INNER_PARAMS.store(ext as *mut clap_plugin_params, Ordering::Release);
    &PARAMS as *const clap_plugin_params as *const c_void
}

/// clack's params extension (a static, the same for every instance).
static INNER_PARAMS: AtomicPtr<clap_plugin_params> = AtomicPtr::new(null_mut());

fn inner_params() -> &'static clap_plugin_params {
    // SAFETY: only called from PARAMS' functions, which the host reaches
    // only through the pointer `plugin_get_extension` returned after
    // storing clack's (static) extension here.
    unsafe { &*INNER_PARAMS.load(Ordering::Acquire) }
}

static PARAMS: clap_plugin_params = clap_plugin_params {
    count: Some(params_count),
    get_info: Some(params_get_info),
    get_value: Some(params_get_value),
    value_to_text: Some(params_value_to_text),
    text_to_value: Some(params_text_to_value),
    flush: Some(params_flush),
};

unsafe extern "C" fn params_count(plugin: *const clap_plugin) -> u32 {
    // SAFETY: forwarded unchanged to clack's implementation.
    inner_params().count.map_or(0, |f| unsafe { f(plugin) })
}

unsafe extern "C" fn params_get_info(
    plugin: *const clap_plugin,
    index: u32,
    info: *mut clap_sys::ext::params::clap_param_info,
) -> bool {
    // SAFETY: forwarded unchanged to clack's implementation.
    inner_params().get_info.is_some_and(|f| unsafe { f(plugin, index, info) })
}

unsafe extern "C" fn params_get_value(plugin: *const clap_plugin, id: clap_sys::id::clap_id, value: *mut f64) -> bool {
    // SAFETY: forwarded unchanged to clack's implementation.
    inner_params().get_value.is_some_and(|f| unsafe { f(plugin, id, value) })
}

unsafe extern "C" fn params_value_to_text(
    plugin: *const clap_plugin,
    id: clap_sys::id::clap_id,
    value: f64,
    out: *mut c_char,
    capacity: u32,
) -> bool {
    // SAFETY: forwarded unchanged to clack's implementation.
    inner_params().value_to_text.is_some_and(|f| unsafe { f(plugin, id, value, out, capacity) })
}

unsafe extern "C" fn params_text_to_value(
    plugin: *const clap_plugin,
    id: clap_sys::id::clap_id,
    text: *const c_char,
    value: *mut f64,
) -> bool {
    // SAFETY: forwarded unchanged to clack's implementation.
    inner_params().text_to_value.is_some_and(|f| unsafe { f(plugin, id, text, value) })
}

unsafe extern "C" fn params_flush(
    plugin: *const clap_plugin,
    in_events: *const clap_input_events,
    out_events: *const clap_output_events,
) {
    let Some(flush) = inner_params().flush else { return };
    // SAFETY: the host's lists, valid for this call.
    let input = unsafe { CheckedInput::new(in_events) };
    let input = input.raw();
    let output = checked_output(out_events);
    // SAFETY: clack's flush with lists that are valid for the call.
    unsafe { flush(plugin, &input, output) }
}

unsafe extern "C" fn plugin_process(plugin: *const clap_plugin, process: *const clap_process) -> clap_process_status {
    // SAFETY: as in plugin_activate.
    let Some(g) = (unsafe { Guarded::from(plugin) }) else { return CLAP_PROCESS_ERROR };
    // SAFETY: the host's process data, valid for this call, or null.
    let Some(host) = (unsafe { process.as_ref() }) else {
        note(HostQuirk::NullProcess);
        return CLAP_PROCESS_ERROR;
    };
    if !g.active.load(Ordering::Acquire) {
        note(HostQuirk::ProcessWhileInactive);
        return CLAP_PROCESS_ERROR;
    }
    let Some(inner_process) = g.inner().process else { return CLAP_PROCESS_ERROR };
    let mut checked = *host;
    // SAFETY: the host's pointers, valid for this call (or null).
    if !checked.transport.is_null() && !unsafe { is_transport(checked.transport) } {
        note(HostQuirk::MalformedTransport);
        checked.transport = null();
    }
    // SAFETY: as above.
    let input = unsafe { CheckedInput::new(checked.in_events) };
    let input = input.raw();
    checked.in_events = &input;
    checked.out_events = checked_output(checked.out_events);
    // SAFETY: as above.
    unsafe {
        if !buffers_usable(checked.audio_inputs, checked.audio_inputs_count) {
            note(HostQuirk::MissingAudioBuffers);
            checked.audio_inputs_count = 0;
        }
        if !buffers_usable(checked.audio_outputs, checked.audio_outputs_count) {
            note(HostQuirk::MissingAudioBuffers);
            checked.audio_outputs_count = 0;
        }
    }
    // SAFETY: clack's process on clack's plugin with process data whose
    // every pointer is the host's (valid for the call) or ours (on this
    // stack frame, outliving the call).
    unsafe { inner_process(g.inner, &checked) }
}

/// # Safety
/// `transport` must point to at least an event header.
unsafe fn is_transport(transport: *const clap_event_transport) -> bool {
    // SAFETY: per the contract (every event starts with a header).
    let header = unsafe { &*(transport as *const clap_event_header) };
    header.space_id == CLAP_CORE_EVENT_SPACE_ID
        && header.type_ == CLAP_EVENT_TRANSPORT
        && header.size as usize == size_of::<clap_event_transport>()
}

/// The most channels one port may have for the guard to check it.
const MAX_CHANNELS: u32 = 256;

/// # Safety
/// `buffers` must be null or point to `count` buffers.
unsafe fn buffers_usable(buffers: *const clap_audio_buffer, count: u32) -> bool {
    if count == 0 {
        return true;
    }
    if buffers.is_null() {
        return false;
    }
    // SAFETY: per the contract.
    let buffers = unsafe { std::slice::from_raw_parts(buffers, count as usize) };
    buffers.iter().all(|b| {
        let channels = b.channel_count as usize;
        if b.channel_count == 0 {
            return true;
        }
        if b.channel_count > MAX_CHANNELS {
            return false;
        }
        // SAFETY: a non-null channel table has `channel_count` entries (CLAP).
        let all_set = |table: *mut *mut c_void| unsafe {
            std::slice::from_raw_parts(table as *const *mut c_void, channels).iter().all(|c| !c.is_null())
        };
        (!b.data32.is_null() && all_set(b.data32 as *mut *mut c_void))
            || (!b.data64.is_null() && all_set(b.data64 as *mut *mut c_void))
    })
}

/// Whether an event header is one clack can view safely.
fn event_is_sound(header: &clap_event_header) -> bool {
    let size = header.size as usize;
    if size < size_of::<clap_event_header>() || size > 1 << 16 {
        return false;
    }
    if header.space_id != CLAP_CORE_EVENT_SPACE_ID {
        return true;
    }
    let expected = match header.type_ {
        CLAP_EVENT_NOTE_ON | CLAP_EVENT_NOTE_OFF | CLAP_EVENT_NOTE_CHOKE | CLAP_EVENT_NOTE_END => {
            size_of::<clap_event_note>()
        }
        CLAP_EVENT_NOTE_EXPRESSION => size_of::<clap_event_note_expression>(),
        CLAP_EVENT_PARAM_VALUE => size_of::<clap_event_param_value>(),
        CLAP_EVENT_PARAM_MOD => size_of::<clap_event_param_mod>(),
        CLAP_EVENT_PARAM_GESTURE_BEGIN | CLAP_EVENT_PARAM_GESTURE_END => size_of::<clap_event_param_gesture>(),
        CLAP_EVENT_TRANSPORT => size_of::<clap_event_transport>(),
        CLAP_EVENT_MIDI => size_of::<clap_event_midi>(),
        CLAP_EVENT_MIDI_SYSEX => size_of::<clap_event_midi_sysex>(),
        CLAP_EVENT_MIDI2 => size_of::<clap_event_midi2>(),
        _ => return true,
    };
    size == expected
}

/// The host's input event list, seen through checks: an index is
/// forwarded only below the host's `size()`, and an event with an unsound
/// header reads as null (clack then skips it).
struct CheckedInput {
    host: *const clap_input_events,
    len: u32,
}

impl CheckedInput {
    /// # Safety
    /// `host` must be null or a list valid for the current call.
    unsafe fn new(host: *const clap_input_events) -> CheckedInput {
        // SAFETY: per the contract.
        let usable = unsafe { host.as_ref() }.filter(|l| l.size.is_some() && l.get.is_some());
        let Some(list) = usable else {
            note(HostQuirk::MissingEventList);
            return CheckedInput { host: null(), len: 0 };
        };
        // SAFETY: the host's own function on its own list.
        let len = list.size.map_or(0, |size| unsafe { size(host) });
        CheckedInput { host, len }
    }

    /// The list to hand clack; valid while `self` is.
    fn raw(&self) -> clap_input_events {
        clap_input_events {
            ctx: self as *const CheckedInput as *mut c_void,
            size: Some(checked_size),
            get: Some(checked_get),
        }
    }
}

unsafe extern "C" fn checked_size(list: *const clap_input_events) -> u32 {
    // SAFETY: `list` is a `CheckedInput::raw()` whose ctx is the live CheckedInput.
    unsafe { (*((*list).ctx as *const CheckedInput)).len }
}

unsafe extern "C" fn checked_get(list: *const clap_input_events, index: u32) -> *const clap_event_header {
    // SAFETY: as in checked_size.
    let checked = unsafe { &*((*list).ctx as *const CheckedInput) };
    if index >= checked.len {
        return null();
    }
    // SAFETY: `host` is non-null when len > 0, and its `get` was checked;
    // the index is below its own size.
    let header = unsafe { (*checked.host).get.map_or(null(), |get| get(checked.host, index)) };
    // SAFETY: the host's event, valid for the call (or null).
    match unsafe { header.as_ref() } {
        Some(h) if event_is_sound(h) => header,
        _ => {
            note(HostQuirk::MalformedEvent);
            null()
        }
    }
}

/// The host's output list if usable, else one that discards.
fn checked_output(host: *const clap_output_events) -> *const clap_output_events {
    // SAFETY: the host's list, valid for the call, or null.
    match unsafe { host.as_ref() } {
        Some(list) if list.try_push.is_some() => host,
        _ => {
            note(HostQuirk::MissingEventList);
            &DISCARD
        }
    }
}

static DISCARD: clap_output_events = clap_output_events { ctx: null_mut(), try_push: Some(discard_push) };

unsafe extern "C" fn discard_push(_list: *const clap_output_events, _event: *const clap_event_header) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_headers_are_checked() {
        let header = |size: usize, type_: u16| clap_event_header {
            size: size as u32,
            time: 0,
            space_id: CLAP_CORE_EVENT_SPACE_ID,
            type_,
            flags: 0,
        };
        assert!(!event_is_sound(&header(0, 0)), "Qtractor's zeroed header");
        assert!(!event_is_sound(&header(4, 200)));
        assert!(event_is_sound(&header(size_of::<clap_event_param_value>(), CLAP_EVENT_PARAM_VALUE)));
        assert!(!event_is_sound(&header(size_of::<clap_event_header>(), CLAP_EVENT_PARAM_VALUE)));
        assert!(event_is_sound(&header(size_of::<clap_event_header>() + 8, 999)), "unknown types pass, sized");
        assert!(!event_is_sound(&header(1 << 20, 999)));
    }

    #[test]
    fn each_quirk_is_reported_once() {
        note(HostQuirk::TooManyEvents);
        note(HostQuirk::TooManyEvents);
        assert!(take_unreported().any(|q| q == HostQuirk::TooManyEvents));
        assert!(!take_unreported().any(|q| q == HostQuirk::TooManyEvents));
        assert!(count(HostQuirk::TooManyEvents) >= 2);
    }
}
