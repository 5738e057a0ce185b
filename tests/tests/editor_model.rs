//! The plugin's editor model, driven without a window: the plugin is linked
//! into this test (its `clap_entry`, through outboard-host's `Bundle`), each
//! test takes its instance's editor handle from `outboard_plugin::editor::
//! models()`, watches it, queues actions as the window would, and lets the
//! host serve the main-thread callbacks the plugin asks for
//! (`Instance::service_main_thread`) while it processes blocks. What the
//! host receives is read from the processor's output events.
//!
//! Every `process` runs under `assert_no_alloc`: the editor's moves and
//! its DSP-load measurement keep the audio path allocation-free.
//!
//! No timing thresholds: every wait is for a state, with a deadline only to
//! fail instead of hanging.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use assert_no_alloc::{AllocDisabler, assert_no_alloc, reset_violation_count, violation_count};
use outboard_host::{ActivateConfig, Bundle, Instance, OutputEvent, OutputKind, Processor};
use outboard_plugin::editor::{self, Action, ControlKind, EditorHandle, EditorModel, LogKind, Watch, WorkerState};
use outboard_plugin::params;
use outboard_tests::{ScriptDir, scripts_host};

#[global_allocator]
static ALLOCATOR: AllocDisabler = AllocDisabler;

/// Long enough for a cold worker (interpreter and numpy) on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(60);

/// One instance at a time: `editor::models()` then lists exactly this
/// test's instance, and the process-wide scripts host is this test's.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const PARAMS_SCRIPT: &str = r#""""Gain and a mode.

A test script with two declared parameters.
"""
import numpy as np

PARAMS = {
    "gain": dict(min=0.0, max=2.0, default=1.0, unit="x"),
    "mode": dict(choices=["soft", "hard"]),
}


def process(block, ctx):
    block *= np.float32(ctx.params["gain"])
"#;

/// The plugin linked in, one activated instance, its editor watched.
struct Rig {
    processor: Option<Processor>,
    instance: Instance,
    handle: Arc<EditorHandle>,
    watch: Option<Watch>,
    /// Everything the plugin sent the host, in order.
    events: Vec<OutputEvent>,
    frames: u64,
    dir: ScriptDir,
    _bundle: Bundle,
    _turn: MutexGuard<'static, ()>,
}

impl Rig {
    fn new(label: &str) -> Rig {
        Rig::with(label, true)
    }

    fn with(label: &str, watch: bool) -> Rig {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        outboard_plugin::scripting::use_scripts_host(scripts_host());
        let dir = ScriptDir::new(label);
        // SAFETY: the entry is outboard.clap's own, linked in.
        let bundle = unsafe { Bundle::from_entry(&outboard_plugin::clap_entry, &dir.path().join("outboard.clap")) }
            .expect("the linked plugin");
        let mut instance = bundle.instantiate_with(outboard_plugin::PLUGIN_ID, false).expect("an instance");
        let models = editor::models();
        assert_eq!(models.len(), 1, "one live instance, one editor model");
        let handle = models[0].clone();
        let watch = watch.then(|| handle.watch());
        let mut processor = instance.activate(ActivateConfig::new(48_000.0, 128)).expect("activate");
        processor.start_processing().expect("start processing");
        reset_violation_count();
        Rig {
            processor: Some(processor),
            instance,
            handle,
            watch,
            events: Vec::new(),
            frames: 0,
            dir,
            _bundle: bundle,
            _turn: turn,
        }
    }

    fn write(&self, name: &str, source: &str) -> PathBuf {
        PathBuf::from(self.dir.write(name, source))
    }

    /// One block processed (if active), what it sent recorded, the plugin's
    /// main-thread requests served. While watched, each pump asks for a
    /// callback, as an open window does where the host has no timer.
    fn pump(&mut self) {
        if self.watch.is_some() {
            self.handle.wake();
        }
        if let Some(processor) = self.processor.as_mut() {
            assert_no_alloc(|| processor.process(128)).expect("process");
            for event in processor.output_events().iter() {
                self.events.push(OutputEvent::from_event(self.frames, event));
            }
            self.frames += 128;
        }
        self.instance.service_main_thread();
    }

    /// Pumps until the model satisfies `ready`; panics with `what` (and the
    /// model) at the deadline.
    fn wait_for(&mut self, what: &str, ready: impl Fn(&EditorModel) -> bool) {
        let start = Instant::now();
        loop {
            self.pump();
            if ready(&self.handle.lock()) {
                return;
            }
            if start.elapsed() > DEADLINE {
                let model = self.handle.lock().clone();
                panic!("waited {DEADLINE:?} for {what}; the model:\n{model:#?}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn act(&self, action: Action) {
        self.handle.act(action);
    }

    fn model(&self) -> EditorModel {
        self.handle.lock().clone()
    }

    /// Opens a script file and waits until the model shows it running with
    /// the parameters named.
    fn open(&mut self, path: &Path, params: &[&str]) {
        self.act(Action::Open(path.to_path_buf()));
        let what = format!("{} with parameters {params:?}", path.display());
        self.wait_for(&what, |m| {
            m.script.path() == Some(path)
                && m.status.worker == WorkerState::Running
                && params.iter().all(|p| m.param(p).is_some())
        });
    }

    /// The parameter events the host received for `id`, from index `from`
    /// of the recording, as (kind, value).
    fn param_events(&self, id: u32, from: usize) -> Vec<(OutputKind, Option<f64>)> {
        self.events[from..]
            .iter()
            .filter(|e| e.param_id() == Some(id))
            .filter(|e| matches!(e.kind, OutputKind::GestureBegin | OutputKind::ParamValue | OutputKind::GestureEnd))
            .map(|e| (e.kind, e.value()))
            .collect()
    }

    /// Pumps until the host has received `count` parameter events for `id`
    /// since `from`.
    fn wait_for_param_events(&mut self, id: u32, from: usize, count: usize) -> Vec<(OutputKind, Option<f64>)> {
        let start = Instant::now();
        while self.param_events(id, from).len() < count {
            assert!(start.elapsed() < DEADLINE, "the host received {:?}", self.param_events(id, from));
            self.pump();
        }
        self.param_events(id, from)
    }

    fn deactivate(&mut self) {
        if let Some(mut processor) = self.processor.take() {
            processor.stop_processing();
            self.instance.deactivate(processor);
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.watch = None;
        self.deactivate();
        if !std::thread::panicking() {
            assert_eq!(violation_count(), 0, "the plugin's process allocated or freed");
        }
    }
}

fn whole_gesture(events: &[(OutputKind, Option<f64>)], value: f64) -> bool {
    matches!(
        events,
        [(OutputKind::GestureBegin, _), (OutputKind::ParamValue, Some(v)), (OutputKind::GestureEnd, _)]
            if (v - value).abs() < 1e-9
    )
}

#[test]
fn opening_a_script_shows_its_declared_parameters_and_its_description() {
    let mut rig = Rig::new("editor-open");
    let path = rig.write("params.py", PARAMS_SCRIPT);
    rig.open(&path, &["gain", "mode"]);
    let model = rig.model();
    assert_eq!(model.script.name, "params.py");
    assert!(model.script.description.starts_with("Gain and a mode."), "{:?}", model.script.description);
    let names: Vec<&str> = model.controls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["gain", "mode"], "declaration order");
    let gain = model.param("gain").unwrap();
    assert_eq!(gain.kind, ControlKind::Slider);
    assert_eq!((gain.min, gain.max), (0.0, 1.0), "a continuous parameter as the host holds it");
    assert_eq!(gain.unit, "x");
    assert!(gain.text.contains("1.00"), "the default in its units: {:?}", gain.text);
    let mode = model.param("mode").unwrap();
    assert_eq!(mode.kind, ControlKind::Choice(vec!["soft".into(), "hard".into()]));
    assert_eq!(mode.text, "soft");
    // The plugin's own controls.
    let mix = model.mix.as_ref().expect("Mix");
    assert_eq!((mix.id, mix.value, mix.text.as_str()), (params::MIX, 1.0, "100.0 %"));
    let bypass = model.bypass.as_ref().expect("Bypass");
    assert_eq!((bypass.id, bypass.kind.clone(), bypass.text.as_str()), (params::BYPASS, ControlKind::Switch, "Off"));
    // Live status: the worker's pid, its CPU, the blocks, the DSP load
    // (how many results come back in time is the machine's business).
    assert!(model.status.pid.is_some(), "the worker's pid: {:?}", model.status);
    rig.wait_for("the DSP load and the worker's CPU", |m| {
        m.status.dsp_load.is_some() && m.status.worker_cpu.is_some() && m.status.blocks > 0
    });
    assert!(rig.model().status.line().contains("DSP load"), "{}", rig.model().status.line());
    // The open is on the log.
    assert!(rig.model().log.iter().any(|e| e.text.contains("the script is now") && e.text.contains("params.py")));
}

#[test]
fn an_error_in_the_script_is_on_the_log_with_its_file_and_line() {
    let mut rig = Rig::new("editor-error");
    let path = rig.write(
        "raises.py",
        "def process(block, ctx):\n    x = 1\n    raise ValueError('no good')\n\n\ndef setup(ctx):\n    ctx.log('hello from setup')\n",
    );
    let file = path.to_string_lossy().into_owned();
    rig.act(Action::Open(path.clone()));
    rig.wait_for("the script's error on the log", |m| m.log.iter().any(|e| e.kind == LogKind::Error));
    rig.wait_for("its ctx.log line", |m| {
        m.log.iter().any(|e| e.kind == LogKind::Script && e.text.contains("hello from setup"))
    });
    let model = rig.model();
    let error = model.log.iter().find(|e| e.kind == LogKind::Error).unwrap();
    assert_eq!(error.file.as_deref(), Some(file.as_str()), "{error:#?}");
    assert_eq!(error.line, Some(3), "{error:#?}");
    assert!(error.text.contains("ValueError: no good"), "{}", error.text);
    assert!(error.text.contains("Traceback"), "with its traceback: {}", error.text);
    // Newest first, copyable, cleared on request.
    assert_eq!(model.log.front().map(|e| e.seq), model.log.iter().map(|e| e.seq).max());
    assert!(model.log_text().contains(&format!("{file}:3")));
    rig.act(Action::ClearLog);
    rig.wait_for("the log cleared", |m| m.log.iter().all(|e| e.kind != LogKind::Error || e.seq > error.seq));
}

#[test]
fn reload_loads_the_file_again() {
    let mut rig = Rig::new("editor-reload");
    let base = "import numpy as np\n\ndef process(block, ctx):\n    pass\n\n";
    let v2 = format!("{base}PARAMS = {{\"gain\": dict(min=0.0, max=1.0), \"width\": dict(min=0.0, max=1.0)}}\n");
    let mut v1 = format!("{base}PARAMS = {{\"gain\": dict(min=0.0, max=1.0)}}\n");
    // The same length, so that only the modification time could tell the
    // versions apart.
    v1.push_str(&"#".repeat(v2.len() - v1.len() - 1));
    v1.push('\n');
    assert_eq!(v1.len(), v2.len());
    let path = rig.write("reloaded.py", &v1);
    rig.open(&path, &["gain"]);
    // The new version with the old one's modification time, put in place
    // at once: the worker's own following of the file cannot see it.
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let next = rig.write("reloaded.py.next", &v2);
    std::fs::File::options().write(true).open(&next).unwrap().set_modified(mtime).unwrap();
    std::fs::rename(&next, &path).unwrap();
    assert!(rig.model().param("width").is_none());
    rig.act(Action::Reload);
    rig.wait_for("the new parameter after Reload", |m| m.param("width").is_some() && m.param("gain").is_some());
    assert!(rig.model().log.iter().any(|e| e.text.contains("reloading reloaded.py")));
}

#[test]
fn moving_a_parameter_reaches_the_host_as_a_gesture() {
    let mut rig = Rig::new("editor-gesture");
    let path = rig.write("params.py", PARAMS_SCRIPT);
    rig.open(&path, &["gain", "mode"]);
    let gain = rig.model().param("gain").unwrap().id;
    let mode = rig.model().param("mode").unwrap().id;

    // A click: one whole gesture.
    let from = rig.events.len();
    rig.act(Action::SetParam { id: gain, value: 0.25 });
    let events = rig.wait_for_param_events(gain, from, 3);
    assert!(whole_gesture(&events, 0.25), "begin, value, end: {events:?}");
    assert_eq!(rig.instance.param_value(gain), Some(0.25));
    rig.wait_for("the new value in the model", |m| m.param("gain").is_some_and(|c| c.value == 0.25));
    assert!(rig.model().param("gain").unwrap().text.contains("0.50"), "in its units (x 2)");

    // A drag: one gesture, every value inside it.
    let from = rig.events.len();
    rig.act(Action::BeginGesture(gain));
    rig.act(Action::SetParam { id: gain, value: 0.3 });
    rig.act(Action::SetParam { id: gain, value: 0.4 });
    rig.act(Action::EndGesture(gain));
    let events = rig.wait_for_param_events(gain, from, 4);
    let kinds: Vec<OutputKind> = events.iter().map(|e| e.0).collect();
    assert_eq!(
        kinds,
        [OutputKind::GestureBegin, OutputKind::ParamValue, OutputKind::ParamValue, OutputKind::GestureEnd],
        "{events:?}"
    );
    assert_eq!((events[1].1, events[2].1), (Some(0.3), Some(0.4)));

    // Text, in the parameter's units; a choice by its number.
    let from = rig.events.len();
    rig.act(Action::SetParamText { id: gain, text: "1.5 x".into() });
    assert!(whole_gesture(&rig.wait_for_param_events(gain, from, 3), 0.75));
    let from = rig.events.len();
    rig.act(Action::SetParam { id: mode, value: 1.0 });
    assert!(whole_gesture(&rig.wait_for_param_events(mode, from, 3), 1.0));
    rig.wait_for("the choice's name", |m| m.param("mode").is_some_and(|c| c.text == "hard"));
    // Text that is no value of the parameter changes nothing.
    rig.act(Action::SetParamText { id: mode, text: "medium".into() });
    rig.wait_for("the refusal on the log", |m| {
        m.log.iter().any(|e| e.text.contains("\"medium\" is not a value of mode"))
    });
    assert_eq!(rig.instance.param_value(mode), Some(1.0));
}

#[test]
fn mix_and_bypass_from_the_editor_reach_the_host() {
    let mut rig = Rig::new("editor-mix");
    let from = rig.events.len();
    rig.act(Action::SetParam { id: params::MIX, value: 0.5 });
    rig.act(Action::SetParam { id: params::BYPASS, value: 1.0 });
    assert!(whole_gesture(&rig.wait_for_param_events(params::MIX, from, 3), 0.5));
    assert!(whole_gesture(&rig.wait_for_param_events(params::BYPASS, from, 3), 1.0));
    assert_eq!(rig.instance.param_value(params::MIX), Some(0.5));
    assert_eq!(rig.instance.param_value(params::BYPASS), Some(1.0));
    rig.wait_for("Mix and Bypass in the model", |m| {
        m.mix.as_ref().is_some_and(|c| c.text == "50.0 %") && m.bypass.as_ref().is_some_and(|c| c.text == "On")
    });
    // The read-only Late results counter is no control.
    let from = rig.events.len();
    rig.act(Action::SetParam { id: params::LATE_RESULTS, value: 5.0 });
    rig.act(Action::SetParam { id: params::MIX, value: 0.75 });
    rig.wait_for_param_events(params::MIX, from, 3);
    assert!(rig.param_events(params::LATE_RESULTS, from).is_empty());

    // Inactive: the plugin asks for a flush and the host gets the move there.
    rig.deactivate();
    rig.act(Action::SetParam { id: params::MIX, value: 0.25 });
    rig.pump();
    let flushed = rig.instance.flush_params(&[]);
    assert!(flushed.iter().any(|c| c.id == params::MIX && c.value == 0.25), "{flushed:?}");
    assert_eq!(rig.instance.param_value(params::MIX), Some(0.25));
}

#[test]
fn an_editor_nobody_watches_costs_nothing() {
    let mut rig = Rig::with("editor-unwatched", false);
    let path = rig.write("params.py", PARAMS_SCRIPT);
    outboard_host::run::apply_script_file(&mut rig.instance, &path).expect("script");
    // Until there is news a watched editor would show (the script loaded and
    // declared its parameters), so a script still loading cannot pass this.
    let start = Instant::now();
    while !rig.instance.params().iter().any(|p| p.name == "gain") {
        assert!(start.elapsed() < DEADLINE, "the script declared its parameters");
        rig.pump();
    }
    for _ in 0..200 {
        rig.pump();
    }
    let model = rig.model();
    assert_eq!(model.generation, 0, "never refreshed: {model:#?}");
    assert!(model.log.is_empty() && model.controls.is_empty());
    // Watching fills it at once (the next callback).
    let _watch = rig.handle.watch();
    rig.wait_for("the model filled", |m| m.generation > 0 && m.mix.is_some());
}

/// Set in the child process that runs [`examples_and_edit`] with its own
/// environment (the user's folder, the examples, the editor program).
const CHILD_ENV: &str = "OUTBOARD_EDITOR_MODEL_CHILD";

#[test]
fn new_from_example_and_edit_work_in_the_users_script_folder() {
    if std::env::var_os(CHILD_ENV).is_some() {
        examples_and_edit();
        return;
    }
    // The environment is the child's from its start: no variable is set
    // while this process's threads run.
    let dir = ScriptDir::new("editor-examples");
    std::fs::create_dir_all(dir.path().join("examples")).unwrap();
    dir.write("examples/tiny.py", "\"\"\"A tiny example.\"\"\"\nPARAMS = {\"depth\": dict(min=0.0, max=1.0)}\n\ndef process(block, ctx):\n    pass\n");
    // The "editor": notes which file it was given.
    let editor = dir.write("editor.sh", &format!("#!/bin/sh\necho \"$1\" >> {}/edited\n", dir.path().display()));
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "new_from_example_and_edit_work_in_the_users_script_folder", "--nocapture"])
        .env(CHILD_ENV, dir.path())
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("OUTBOARD_PRESET_DIRS", dir.path().join("examples"))
        .env("VISUAL", &editor)
        .status()
        .expect("the child test");
    assert!(status.success(), "the child: {status}");
}

fn examples_and_edit() {
    let base = PathBuf::from(std::env::var_os(CHILD_ENV).unwrap());
    let user = base.join("data/outboard/scripts");
    let edited = base.join("edited");
    let mut rig = Rig::new("editor-examples-child");
    rig.wait_for("the examples' folder", |m| m.example_dirs.contains(&base.join("examples")));
    assert_eq!(rig.model().examples().into_iter().map(|e| e.0).collect::<Vec<_>>(), ["tiny.py"]);

    // A copy under a free name, followed.
    rig.act(Action::NewFromExample("tiny.py".into()));
    let copy = user.join("tiny.py");
    rig.wait_for("the copy followed", |m| m.script.path() == Some(copy.as_path()) && m.param("depth").is_some());
    assert_eq!(rig.model().script.description, "A tiny example.");
    rig.act(Action::NewFromExample("tiny".into()));
    let second = user.join("tiny-2.py");
    rig.wait_for("a second copy", |m| m.script.path() == Some(second.as_path()));
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), std::fs::read_to_string(&second).unwrap());

    // Edit opens the followed file in $VISUAL.
    rig.act(Action::Edit);
    let opened = |n: usize| {
        let start = Instant::now();
        loop {
            let lines: Vec<String> =
                std::fs::read_to_string(&edited).unwrap_or_default().lines().map(String::from).collect();
            if lines.len() >= n {
                return lines;
            }
            assert!(start.elapsed() < DEADLINE, "the editor was not started");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    rig.pump();
    assert_eq!(opened(1), [second.display().to_string()]);

    // A script that is no file is saved in the user's folder first.
    outboard_host::run::apply_script(&mut rig.instance, "embedded.py", "def process(block, ctx):\n    pass\n")
        .expect("an embedded script");
    rig.wait_for("the embedded script", |m| m.script.location == editor::ScriptLocation::Embedded);
    rig.act(Action::Edit);
    let saved = user.join("embedded.py");
    rig.wait_for("the saved script followed", |m| m.script.path() == Some(saved.as_path()));
    assert_eq!(opened(2)[1], saved.display().to_string());
    assert_eq!(std::fs::read_to_string(&saved).unwrap(), "def process(block, ctx):\n    pass\n");
}
