//! `outboard_host`: a CLAP test host (clack-host), the library behind the
//! `outboard-host` binary, so that tests drive the very code it runs.
//!
//! It loads any CLAP plugin through its `clap_entry` and plugin factory and
//! drives instances the way a DAW would, recording everything the plugin asks
//! of the host:
//!
//! ```no_run
//! use outboard_host::{ActivateConfig, Bundle};
//!
//! let bundle = Bundle::load("target/bundled/outboard.clap".as_ref())?;
//! let id = bundle.first_plugin_id().unwrap();
//! let mut instance = bundle.instantiate(&id)?;          // this thread is its main thread
//! let state = instance.save_state_chunked(7)?.0;         // a stream that takes 7 bytes a call
//! instance.load_state_chunked(&state, 3)?;
//! let params = instance.params();                        // count, info; param_value, value_to_text, ...
//! let mut processor = instance.activate(ActivateConfig::new(48_000.0, 64))?;
//! let latency = instance.latency();
//! processor.start_processing().unwrap();                 // normally on an audio thread
//! processor.write_input(0, 0, &[0.5; 64]);
//! processor.push_param_value(10, params[0].id, 0.25);   // at sample offset 10
//! processor.process(64).unwrap();
//! let left = processor.output_f32(0, 0).unwrap();
//! processor.stop_processing();
//! instance.service_main_thread();                        // on_main_thread, flush requests
//! instance.deactivate(processor);
//! let asked = instance.counters_snapshot();              // rescans, latency changes, callbacks, ...
//! # Ok::<(), String>(())
//! ```
//!
//! and opens its editor (the CLAP gui extension on X11, embedded in a
//! window of the host's or floating, with a main loop serving its
//! callbacks, timers and descriptors; screenshots: [`editor`]),
//! and runs N instances on the test signal ([`signal`]) or a WAV file, each
//! on its own audio thread, paced in real time or offline ([`run()`]), with
//! a transport (tempo, time signature, playing or stopped), notes and MIDI
//! in either dialect and parameter changes at exact samples ([`events`]),
//! recording every event the plugin sends back, into a [`Report`] —
//! optionally reproducing what real hosts get wrong
//! ([`quirks`]: a zeroed or missing transport, unsorted events, events past
//! the end of the call, empty calls, calls over the announced maximum,
//! resets while rendering offline).
//!
//! Guarantees (DESIGN.md §1): the audio-thread side, [`Processor`], never
//! allocates, locks or makes a syscall once activated — writing inputs,
//! queueing events up to the preallocated capacity (more are dropped and
//! counted), processing, reading outputs; the host callbacks a plugin may
//! call from its audio thread only touch atomics (log messages excepted: a
//! plugin should not log from its audio thread, and such calls are counted).
//! The run loop's per-block work is the same, plus sleeping to the next
//! deadline. Everything else — loading, instances, state, parameters,
//! activation — is main-thread work that allocates freely. The host assumes
//! the plugin honours the CLAP ABI: it is loaded into this process.

pub mod cli;
pub mod editor;
pub mod events;
pub mod handlers;
pub mod panics;
pub mod plugin_instance;
pub mod processor;
pub mod procfs;
pub mod quirks;
pub mod report;
pub mod run;
pub mod signal;
pub mod stream;

pub use editor::{GuiConfig, GuiMode, GuiReport};
pub use events::{NoteDialect, NoteEvent, NoteKind, OutputEvent, OutputKind, ParamEvent, ParamSet};
pub use handlers::{CountersSnapshot, HostCounters};
pub use plugin_instance::{ActivateConfig, Bundle, Descriptor, Instance, NotePort, ParamChange, ParamInfo, PortInfo};
pub use processor::{ProcessError, Processor, SampleType, TimeSignature, Transport};
pub use quirks::{Quirk, Quirks};
pub use report::{InstanceReport, ParamReport, Report};
pub use run::{Automation, Input, RunConfig, run};
pub use stream::{ChunkedReader, ChunkedWriter};

/// Re-exported for callers that look at status codes and events.
pub use clack_host::prelude::{EventBuffer, ProcessStatus, UnknownEvent};
