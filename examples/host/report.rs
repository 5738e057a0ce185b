//! What a run measured, and its JSON form (`--json PATH`).
//!
//! Definitions:
//!
//! - `blocks`: blocks of `block` frames processed, per instance (the whole
//!   run, whatever the quirks).
//! - `process_calls` (per instance): process calls made; equal to `blocks`
//!   unless a quirk adds calls (`zero-frames`) or merges blocks
//!   (`huge-block`).
//! - `host_quirks`: the quirks the host reproduced (`--host-quirks`; see
//!   `examples/host/quirks.rs`); `resets` (per instance) counts the resets
//!   `reset-while-offline` made.
//! - `input`: the WAV file fed (`--input-wav`), or null for the test signal;
//!   `automate`: the parameter automated (`--automate`), or null.
//! - `deadline_misses`: blocks, over all instances, whose process call
//!   returned after the block's deadline (paced runs: block k of an instance
//!   is due `(k + 1)` periods after the common start). Offline runs have no
//!   deadlines: always 0.
//! - `process_us`: the duration of each process call (only the plugin's
//!   `process`, not the host's buffer work), over all instances, in µs.
//! - `input_peak`: the largest magnitude of the test signal fed (0 for a
//!   plugin with no audio input, such as an instrument: nothing is fed;
//!   `--write-input` still writes what would have been).
//! - `output_peak`: the largest finite magnitude over every output channel
//!   of every instance, from frame `latency_samples` on (what comes out
//!   before the reported latency has passed is not the plugin's answer yet).
//! - `nan_samples`: output samples that are not finite (NaN or ±inf),
//!   anywhere in the run.
//! - `latency_samples`: the latency the plugin reported after activation
//!   (instance 0; `latency_changes` counts `latency.changed` calls).
//! - `late_results`: a generic CLAP host cannot see a plugin's internal late
//!   results (Outboard plays the dry input when a script's result is not back
//!   in time, and the output still looks fine). The hook: if the plugin
//!   exposes a read-only parameter named "late results" (case, spaces and
//!   underscores ignored), its value at the end of the run is the instance's
//!   count and `late_results` is the sum; otherwise `late_results` is 0 and
//!   `late_results_source` says it was not observable.
//! - `child_processes`, `children_rss_kib`: the processes the plugins
//!   started (Outboard: its script workers and its spare), and the resident
//!   memory of each at the end of the run (KiB, smallest first).
//! - `activate_ms`: the longest `activate` call of any instance (Outboard
//!   waits there for its script to have loaded: the wet start).
//! - `panics`: panics in the host process during the run: those its panic
//!   hook saw (the `outboard-host` binary installs it) plus those a plugin
//!   reported caught ("Plugin panicked", which clack-plugin logs when it
//!   catches one at the ABI boundary; counted once). See
//!   `examples/host/panics.rs`. A correct plugin gives 0.
//! - `logs`, `error_logs` (per instance; the top-level keys, like those under
//!   `host_callbacks`, are their sums): the plugin's log messages, and those of error
//!   severity or worse, over the whole run (creation to destruction).
//! - `dry_blocks_at_start` (per instance; the top-level key is the maximum):
//!   the number of leading blocks of `block` frames, from frame
//!   `latency_samples` on, whose output equals the input delayed by
//!   `latency_samples` (within 1e-7, first two output channels against the
//!   two input channels) although the input is not silent (blocks of silent
//!   input neither count nor end the count): how long the plugin passed its
//!   input through dry before its script took over. Measured over the first
//!   `dry_window_frames` frames after the latency (2 s, or the whole run
//!   if shorter), so it is at most that many blocks. Meaningful only with a
//!   script that changes the audio: a pass-through counts every block.
//! - `transport`: what every block's transport said (`--tempo`,
//!   `--time-signature`, `--stopped`): `{"tempo", "time_signature": [n, d],
//!   "playing"}`, or null where a quirk replaced it (`no-transport`,
//!   `zeroed-transport`).
//! - `notes`, `note_dialect`: what `--notes` named (null: none) and how the
//!   notes were sent (`clap` or `midi`); `notes_sent` (per instance): note and
//!   MIDI events queued for the plugin.
//! - `params_sent`: the `--param` changes as sent to instance 0, resolved:
//!   `[{"sample", "id", "name", "value"}]` (`value` the host value).
//! - `input_events_dropped` (per instance, and their sum): input events
//!   refused because a block's list was full (512 a block).
//! - `output_events`: per instance (a list of lists, instance 0 first), every
//!   event the plugin pushed to the output event list, in order, each
//!   `{"sample", "kind", "key", "channel", "velocity", "note_id",
//!   "param_id", "value", "data"}`: `sample` the absolute sample (the
//!   block's first frame plus the event's time), `kind` one of `note_on`,
//!   `note_off`, `note_choke`, `note_end`, `midi`, `param_value`,
//!   `gesture_begin`, `gesture_end`, `other`; fields the kind does not have
//!   are null (`key`, `channel` and `note_id` are null for wildcards too;
//!   `data` is a MIDI event's bytes). The first 100 000 per instance are
//!   kept; `output_events_dropped` (per instance) counts the rest, and
//!   `output_events_refused` (per instance) the events the plugin tried to
//!   push past a block's list capacity (512), which the plugin saw fail.
//! - `params`: instance 0's parameters after the run, in the plugin's
//!   order: `{"id", "name", "module", "min", "max", "default", "value",
//!   "hidden", "stepped", "enum", "automatable", "readonly", "text_min",
//!   "text_max", "text_default", "text_value"}` (texts from the plugin's
//!   `value_to_text`; null where it has none).
//! - `gui`: the editor session (`--gui`, `--gui-cycles`), or null: `{"api",
//!   "floating", "size": [w, h], "opened", "cycles", "cycles_drawn",
//!   "first_frame_ms", "first_frame_ms_max", "open_seconds", "screenshot",
//!   "screenshot_size", "distinct_colors", "blank", "blank_below",
//!   "control_distinct_colors", "child_windows", "resizes",
//!   "closed_by_plugin", "timers_left", "fds_left", "process": {"before",
//!   "after_first", "after"}}`, each process entry `{"fds", "threads",
//!   "rss_kib", "heap_kib"}` — see `examples/host/editor.rs`. The
//!   instances play until the session ends: `blocks` may exceed `seconds`.
//! - `host_callbacks` also counts the timer-support, posix-fd-support and
//!   gui requests: `timers_registered`, `timers_unregistered`,
//!   `timer_calls`, `fds_registered`, `fd_calls`,
//!   `off_main_thread_requests` (main-thread-only requests made from another
//!   thread, refused), `gui_resize_hints_changes`, `gui_resize_requests`,
//!   `gui_show_requests`, `gui_hide_requests`, `gui_closed`, `gui_destroyed`.

use std::path::PathBuf;

use outboard_engine::measurement::histogram::Percentiles;
use serde_json::{Value, json};

use crate::editor::GuiReport;
use crate::events::{NoteDialect, OutputEvent, ParamEvent};
use crate::handlers::CountersSnapshot;
use crate::plugin_instance::{Instance, ParamInfo};
use crate::processor::TimeSignature;
use crate::quirks::Quirks;

/// One parameter as the report lists it (`params`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParamReport {
    /// The parameter as the plugin describes it.
    pub info: ParamInfo,
    /// Its plain value after the run (`params.get_value`); `None` where the plugin gave none.
    pub value: Option<f64>,
    /// The plugin's text for the minimum value (`value_to_text`), if it gives one.
    pub text_min: Option<String>,
    /// The plugin's text for the maximum value, if it gives one.
    pub text_max: Option<String>,
    /// The plugin's text for the default value, if it gives one.
    pub text_default: Option<String>,
    /// The plugin's text for the value after the run, if it gives one.
    pub text_value: Option<String>,
}

impl ParamReport {
    /// Every parameter of `instance`, with its value and texts now.
    pub fn collect(instance: &mut Instance) -> Vec<ParamReport> {
        instance
            .params()
            .into_iter()
            .map(|info| {
                let value = instance.param_value(info.id);
                let text = |v: Option<f64>, instance: &mut Instance| v.and_then(|v| instance.value_to_text(info.id, v));
                ParamReport {
                    text_min: text(Some(info.min), instance),
                    text_max: text(Some(info.max), instance),
                    text_default: text(Some(info.default), instance),
                    text_value: text(value, instance),
                    value,
                    info,
                }
            })
            .collect()
    }

    /// The parameter's entry under `params` (see the module docs).
    pub fn to_json(&self) -> Value {
        let p = &self.info;
        json!({
            "id": p.id,
            "name": p.name,
            "module": p.module,
            "min": p.min,
            "max": p.max,
            "default": p.default,
            "value": self.value,
            "hidden": p.is_hidden(),
            "stepped": p.is_stepped(),
            "enum": p.is_enum(),
            "automatable": p.is_automatable(),
            "readonly": p.is_readonly(),
            "text_min": self.text_min,
            "text_max": self.text_max,
            "text_default": self.text_default,
            "text_value": self.text_value,
        })
    }
}

/// One instance's share of a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InstanceReport {
    /// Blocks of `block` frames processed.
    pub blocks: u64,
    /// Process calls made (more or fewer than `blocks` with some quirks).
    pub process_calls: u64,
    /// Resets made by the `reset-while-offline` quirk.
    pub resets: u64,
    /// Blocks whose process call returned after the block's deadline (always 0 offline).
    pub deadline_misses: u64,
    /// Process calls that returned a [`crate::ProcessError`] (the plugin's CLAP_PROCESS_ERROR, or a call the
    /// processor refused).
    pub process_errors: u64,
    /// The largest finite magnitude on any output channel, from frame `latency_samples` on.
    pub output_peak: f32,
    /// Output samples that were not finite (NaN or ±inf).
    pub nan_samples: u64,
    /// The plugin's "late results" parameter at the end of the run; `None` where it has none.
    pub late_results: Option<u64>,
    /// Whether its thread got SCHED_FIFO (always false offline).
    pub realtime: bool,
    /// The durations of this instance's process calls, µs.
    pub process_us: Percentiles,
    /// The plugin's log messages, creation to destruction.
    pub logs: u64,
    /// Those of error severity or worse.
    pub error_logs: u64,
    /// Leading blocks after the latency whose output was the input passed through dry (see the module docs).
    pub dry_blocks_at_start: u64,
    /// Note and MIDI events queued for the plugin (`--notes`).
    pub notes_sent: u64,
    /// Input events refused because a block's list was full.
    pub input_events_dropped: u64,
    /// What the plugin pushed to the output event list (the first
    /// [`crate::events::MAX_RECORDED_EVENTS`]) ...
    pub output_events: Vec<OutputEvent>,
    /// ... the rest, counted ...
    pub output_events_dropped: u64,
    /// ... and what it tried to push past a block's list capacity.
    pub output_events_refused: u64,
}

impl InstanceReport {
    /// The instance's entry under `per_instance` (`us` formats percentiles).
    pub fn to_json(&self, us: &dyn Fn(&Percentiles) -> Value) -> Value {
        let i = self;
        json!({
        "blocks": i.blocks,
        "process_calls": i.process_calls,
        "resets": i.resets,
        "deadline_misses": i.deadline_misses,
        "process_errors": i.process_errors,
        "output_peak": i.output_peak,
        "nan_samples": i.nan_samples,
        "late_results": i.late_results,
        "realtime": i.realtime,
        "process_us": us(&i.process_us),
        "logs": i.logs,
        "error_logs": i.error_logs,
        "dry_blocks_at_start": i.dry_blocks_at_start,
        "notes_sent": i.notes_sent,
        "input_events_dropped": i.input_events_dropped,
        "output_events_recorded": i.output_events.len(),
        "output_events_dropped": i.output_events_dropped,
        "output_events_refused": i.output_events_refused,
        })
    }
}

/// A whole run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// The `.clap` file loaded.
    pub plugin: PathBuf,
    /// The id of the plugin instantiated.
    pub plugin_id: String,
    /// How many instances ran (`--tracks`), each on its own audio thread.
    pub instances: usize,
    /// Frames per block.
    pub block: u32,
    /// Sample rate, Hz.
    pub rate: u32,
    /// The run's length asked for, seconds of audio (the run rounds it up to whole blocks).
    pub seconds: f64,
    /// Whether the run was offline: as fast as possible, without deadlines.
    pub offline: bool,
    /// The Python script loaded into every instance (`--script`), if any.
    pub script: Option<PathBuf>,
    /// The WAV fed (None: the test signal).
    pub input: Option<PathBuf>,
    /// The parameter automated, as named on the command line.
    pub automate: Option<String>,
    /// The quirks the host reproduced (`--host-quirks`).
    pub host_quirks: Quirks,
    /// Whether the process's memory was locked (mlockall) for the run.
    pub memory_locked: bool,
    /// The latency instance 0 reported after activation, samples.
    pub latency_samples: u32,
    /// The largest magnitude of the input fed (0 where the plugin has no audio input).
    pub input_peak: f32,
    /// The durations of every process call over all instances, µs.
    pub process_us: Percentiles,
    /// The most process() calls ever under way at once, across instances.
    pub max_concurrent_process: usize,
    /// Child processes of the host while the instances were active.
    pub child_processes: usize,
    /// Resident memory of each of those children at the end of the run
    /// (KiB, smallest first).
    pub children_rss_kib: Vec<u64>,
    /// The longest `activate` call of any instance (ms): what a plugin
    /// spends getting ready (Outboard: waiting for its script to load).
    pub activate_ms: f64,
    /// Panics during the run (see the module docs).
    pub panics: u64,
    /// Frames after the latency over which `dry_blocks_at_start` is measured.
    pub dry_window_frames: usize,
    /// Each instance's share, instance 0 first.
    pub per_instance: Vec<InstanceReport>,
    /// What the plugins asked of the host, summed over instances.
    pub host_callbacks: CountersSnapshot,
    /// The transport every block carried (None: a quirk replaced it):
    /// tempo, time signature, playing.
    pub transport: Option<(f64, TimeSignature, bool)>,
    /// `--notes` as given, and the dialect.
    pub notes: Option<String>,
    /// How the notes were sent (`--note-dialect`).
    pub note_dialect: NoteDialect,
    /// The `--param` changes sent to instance 0, resolved, with the
    /// parameters' names.
    pub params_sent: Vec<(ParamEvent, String)>,
    /// Instance 0's parameters after the run.
    pub params: Vec<ParamReport>,
    /// The editor session, if one was asked for.
    pub gui: Option<GuiReport>,
}

impl Report {
    /// Blocks processed, per instance.
    pub fn blocks(&self) -> Vec<u64> {
        self.per_instance.iter().map(|i| i.blocks).collect()
    }

    /// Deadline misses over all instances.
    pub fn deadline_misses(&self) -> u64 {
        self.per_instance.iter().map(|i| i.deadline_misses).sum()
    }

    /// Failed process calls over all instances.
    pub fn process_errors(&self) -> u64 {
        self.per_instance.iter().map(|i| i.process_errors).sum()
    }

    /// Non-finite output samples over all instances.
    pub fn nan_samples(&self) -> u64 {
        self.per_instance.iter().map(|i| i.nan_samples).sum()
    }

    /// The largest output peak of any instance (see [`InstanceReport::output_peak`]).
    pub fn output_peak(&self) -> f32 {
        self.per_instance.iter().fold(0.0, |p, i| p.max(i.output_peak))
    }

    /// The sum of the instances' late results, if every instance exposed
    /// them (see the module docs).
    pub fn late_results(&self) -> Option<u64> {
        if self.per_instance.is_empty() {
            return None;
        }
        self.per_instance.iter().map(|i| i.late_results).sum()
    }

    /// The most `dry_blocks_at_start` of any instance.
    pub fn dry_blocks_at_start(&self) -> u64 {
        self.per_instance.iter().map(|i| i.dry_blocks_at_start).max().unwrap_or(0)
    }

    /// Process calls made, per instance.
    pub fn process_calls(&self) -> Vec<u64> {
        self.per_instance.iter().map(|i| i.process_calls).collect()
    }

    /// Whether every audio thread ran at SCHED_FIFO.
    pub fn realtime(&self) -> bool {
        !self.per_instance.is_empty() && self.per_instance.iter().all(|i| i.realtime)
    }

    /// The report as the JSON `--json` writes (see the module docs for every key).
    pub fn to_json(&self) -> Value {
        let us = |p: &Percentiles| json!({ "p50": p.p50, "p99": p.p99, "p999": p.p999, "max": p.max });
        let c = &self.host_callbacks;
        let mut v = json!({
            "plugin": self.plugin.display().to_string(),
            "plugin_id": self.plugin_id,
            "instances": self.instances,
            "block": self.block,
            "rate": self.rate,
            "seconds": self.seconds,
            "offline": self.offline,
            "script": self.script.as_ref().map(|p| p.display().to_string()),
            "realtime": self.realtime(),
            "memory_locked": self.memory_locked,
            "blocks": self.blocks(),
            "process_calls": self.process_calls(),
            "deadline_misses": self.deadline_misses(),
            "late_results": self.late_results().unwrap_or(0),
            "late_results_source": if self.late_results().is_some() {
                "plugin parameter \"late results\""
            } else {
                "not observable by a generic CLAP host"
            },
            "input_peak": self.input_peak,
            "output_peak": self.output_peak(),
            "nan_samples": self.nan_samples(),
            "process_errors": self.process_errors(),
            "process_us": us(&self.process_us),
            "latency_samples": self.latency_samples,
            "max_concurrent_process": self.max_concurrent_process,
            "child_processes": self.child_processes,
            "children_rss_kib": self.children_rss_kib,
            "activate_ms": self.activate_ms,
            "host_callbacks": {
                "restart_requests": c.restart_requests,
                "process_requests": c.process_requests,
                "callback_requests": c.callback_requests,
                "main_thread_callbacks": c.main_thread_callbacks,
                "flush_requests": c.flush_requests,
                "params_rescans": c.params_rescans,
                "params_clears": c.params_clears,
                "latency_changes": c.latency_changes,
                "audio_ports_rescans": c.audio_ports_rescans,
                "state_dirty_marks": c.state_dirty_marks,
                "logs": c.logs,
                "error_logs": c.error_logs,
                "audio_thread_logs": c.audio_thread_logs,
                "reported_panics": c.reported_panics,
            },
            "per_instance": self.per_instance.iter().map(|i| i.to_json(&us)).collect::<Vec<_>>(),
        });
        // (In two steps: one json! this size exceeds the macro recursion limit.)
        let more = json!({
            "transport": self.transport.map(|(tempo, signature, playing)| json!({
                "tempo": tempo,
                "time_signature": [signature.numerator, signature.denominator],
                "playing": playing,
            })),
            "notes": self.notes,
            "note_dialect": self.note_dialect.name(),
            "params_sent": self.params_sent.iter().map(|(e, name)| json!({
                "sample": e.sample,
                "id": e.id,
                "name": name,
                "value": e.value,
            })).collect::<Vec<_>>(),
            "input_events_dropped": self.per_instance.iter().map(|i| i.input_events_dropped).sum::<u64>(),
            "output_events": self.per_instance.iter().map(|i| {
                i.output_events.iter().map(OutputEvent::to_json).collect::<Vec<_>>()
            }).collect::<Vec<_>>(),
            "params": self.params.iter().map(ParamReport::to_json).collect::<Vec<_>>(),
            "input": self.input.as_ref().map(|p| p.display().to_string()),
            "automate": self.automate,
            "host_quirks": self.host_quirks.names(),
            "panics": self.panics,
            "logs": self.host_callbacks.logs,
            "error_logs": self.host_callbacks.error_logs,
            "dry_blocks_at_start": self.dry_blocks_at_start(),
            "dry_window_frames": self.dry_window_frames,
        });
        if let (Some(v), Value::Object(more)) = (v.as_object_mut(), more) {
            v.extend(more);
        }
        v["host_callbacks"]["note_ports_rescans"] = json!(c.note_ports_rescans);
        for (key, value) in [
            ("timers_registered", c.timers_registered),
            ("timers_unregistered", c.timers_unregistered),
            ("timer_calls", c.timer_calls),
            ("fds_registered", c.fds_registered),
            ("fd_calls", c.fd_calls),
            ("off_main_thread_requests", c.off_main_thread_requests),
            ("gui_resize_hints_changes", c.gui_resize_hints_changes),
            ("gui_resize_requests", c.gui_resize_requests),
            ("gui_show_requests", c.gui_show_requests),
            ("gui_hide_requests", c.gui_hide_requests),
            ("gui_closed", c.gui_closed),
            ("gui_destroyed", c.gui_destroyed),
        ] {
            v["host_callbacks"][key] = json!(value);
        }
        v["gui"] = self.gui.as_ref().map_or(Value::Null, GuiReport::to_json);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_report() -> Report {
        let p = Percentiles { count: 10, p50: 1.0, p99: 2.0, p999: 3.0, max: 4.0 };
        Report {
            plugin: "/x/outboard.clap".into(),
            plugin_id: "org.example".into(),
            instances: 2,
            block: 64,
            rate: 48_000,
            seconds: 1.0,
            process_us: p,
            latency_samples: 128,
            input_peak: 0.5,
            max_concurrent_process: 2,
            child_processes: 0,
            children_rss_kib: Vec::new(),
            activate_ms: 0.0,
            per_instance: vec![
                InstanceReport {
                    blocks: 750,
                    deadline_misses: 1,
                    output_peak: 0.25,
                    nan_samples: 3,
                    logs: 2,
                    dry_blocks_at_start: 7,
                    ..Default::default()
                },
                InstanceReport {
                    blocks: 750,
                    deadline_misses: 2,
                    output_peak: 0.5,
                    dry_blocks_at_start: 9,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn json_has_the_documented_keys() {
        let v = sample_report().to_json();
        for key in [
            "plugin",
            "instances",
            "block",
            "rate",
            "blocks",
            "deadline_misses",
            "late_results",
            "input_peak",
            "output_peak",
            "nan_samples",
            "process_us",
            "latency_samples",
            "panics",
            "logs",
            "error_logs",
            "dry_blocks_at_start",
            "host_quirks",
            "input",
        ] {
            assert!(v.get(key).is_some(), "missing {key}: {v}");
        }
        for key in ["p50", "p99", "p999", "max"] {
            assert!(v["process_us"][key].is_number(), "process_us.{key}");
        }
        assert_eq!(v["plugin"], "/x/outboard.clap");
        assert_eq!(v["instances"], 2);
        assert_eq!(v["blocks"], json!([750, 750]));
        assert_eq!(v["deadline_misses"], 3);
        assert_eq!(v["nan_samples"], 3);
        assert_eq!(v["output_peak"], 0.5);
        assert_eq!(v["latency_samples"], 128);
        assert_eq!(v["process_us"]["p999"], 3.0);
        assert_eq!(v["panics"], 0);
        assert_eq!(v["dry_blocks_at_start"], 9, "the maximum");
        assert_eq!(v["per_instance"][0]["dry_blocks_at_start"], 7);
        assert_eq!(v["per_instance"][0]["logs"], 2);
        assert_eq!(v["host_quirks"], json!([]));
        assert_eq!(v["input"], Value::Null);
        assert_eq!(v["output_events"], json!([[], []]), "a list per instance");
        assert_eq!(v["params"], json!([]));
        assert_eq!(v["transport"], Value::Null);
        assert_eq!((&v["notes"], &v["note_dialect"]), (&Value::Null, &json!("clap")));
        assert_eq!(v["host_callbacks"]["note_ports_rescans"], 0);
        assert_eq!(v["host_callbacks"]["timer_calls"], 0);
        assert_eq!(v["gui"], Value::Null, "no editor session");
        assert_eq!(v["per_instance"][0]["output_events_dropped"], 0);
    }

    #[test]
    fn late_results_are_zero_unless_every_instance_reports_them() {
        let mut r = sample_report();
        assert_eq!(r.late_results(), None);
        assert_eq!(r.to_json()["late_results"], 0);
        assert_eq!(r.to_json()["late_results_source"], "not observable by a generic CLAP host");
        r.per_instance[0].late_results = Some(4);
        assert_eq!(r.late_results(), None, "one instance unknown: unknown");
        r.per_instance[1].late_results = Some(5);
        assert_eq!(r.late_results(), Some(9));
        assert_eq!(r.to_json()["late_results"], 9);
    }
}
