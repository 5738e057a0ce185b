//! The command line of `outboard-host`.

use std::path::PathBuf;

use clap::Parser;

use crate::editor::{GuiConfig, GuiMode};
use crate::events::{NoteDialect, ParamSet};
use crate::processor::TimeSignature;
use crate::quirks::Quirks;
use crate::run::{RunConfig, TEMPO};

/// Loads a CLAP plugin, runs N instances of it on the test signal, each on
/// its own realtime thread, and reports timings, deadline misses, peaks and
/// NaNs.
#[derive(Parser, Debug, Clone, PartialEq)]
#[command(name = "outboard-host", version)]
#[command(group(clap::ArgGroup::new("editor").args(["gui", "gui_cycles"])))]
pub struct Cli {
    /// The .clap file to load.
    pub plugin: PathBuf,
    /// The plugin to instantiate (default: the first in the factory).
    #[arg(long)]
    pub plugin_id: Option<String>,
    /// Instances, each on its own audio thread.
    #[arg(long, default_value_t = 1)]
    pub tracks: usize,
    /// Frames per process call.
    #[arg(long, default_value_t = 64)]
    pub block: u32,
    /// Sample rate in Hz.
    #[arg(long, default_value_t = 48_000)]
    pub rate: u32,
    /// Length of the run (rounded up to whole blocks).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// A Python script to load into every instance (Outboard states only).
    #[arg(long)]
    pub script: Option<PathBuf>,
    /// The Python environment (a virtual environment's folder) every
    /// instance's script imports from (Outboard states only).
    #[arg(long)]
    pub python_env: Option<PathBuf>,
    /// Process as fast as possible instead of in real time (no deadlines).
    #[arg(long)]
    pub offline: bool,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write instance 0's output here (f32 stereo WAV; kept in memory during the run).
    #[arg(long)]
    pub output_wav: Option<PathBuf>,
    /// Feed this WAV instead of the test signal: mono (to both channels) or
    /// stereo, 16-, 24- or 32-bit integer or 32-bit float, at --rate;
    /// silence follows where it is shorter than the run.
    #[arg(long)]
    pub input_wav: Option<PathBuf>,
    /// Write the input as fed here (f32 stereo WAV).
    #[arg(long)]
    pub write_input: Option<PathBuf>,
    /// Automate this parameter (name or id): a triangle over its range,
    /// once a second, four events per block.
    #[arg(long, value_name = "PARAM")]
    pub automate: Option<String>,
    /// Reproduce hosts seen in the field (comma-separated): zeroed-transport,
    /// no-transport, unsorted-events, events-past-end, zero-frames,
    /// huge-block, reset-while-offline. See examples/host/quirks.rs.
    #[arg(long, value_name = "LIST", value_parser = Quirks::parse)]
    pub host_quirks: Option<Quirks>,
    /// Notes and MIDI to send: a file with one event a line (`SAMPLE on KEY
    /// [VELOCITY 0..1] [CHANNEL]`, `SAMPLE off KEY [VELOCITY] [CHANNEL]`,
    /// `SAMPLE midi HEX HEX [HEX]`; `#` comments; SAMPLE counted from the
    /// run's start), or `pattern:chord` (C4 E4 G4 held from 0) or
    /// `pattern:scale` (C major from C4, a quarter note a beat, gate 50 %,
    /// looping). See examples/host/events.rs.
    #[arg(long, value_name = "FILE|pattern:chord|pattern:scale")]
    pub notes: Option<String>,
    /// Send notes as CLAP note events (with note ids) or as MIDI 1.0
    /// messages; the plugin's note input port must take the dialect.
    #[arg(long, value_enum, default_value_t = NoteDialect::Clap)]
    pub note_dialect: NoteDialect,
    /// Set a parameter at a sample (repeatable): NAME is its name
    /// (case-insensitive) or id, VALUE text the plugin parses (`500 Hz`,
    /// `highpass`) or a plain host value. Looked up after activation, so a
    /// script's declared parameters can be named.
    #[arg(long = "param", value_name = "NAME=VALUE@SAMPLE", value_parser = ParamSet::parse)]
    pub params: Vec<ParamSet>,
    /// The transport's tempo in BPM.
    #[arg(long, default_value_t = TEMPO)]
    pub tempo: f64,
    /// The transport's time signature.
    #[arg(long, value_name = "N/D", default_value = "4/4", value_parser = TimeSignature::parse)]
    pub time_signature: TimeSignature,
    /// A stopped transport: not playing, its positions stay at zero.
    #[arg(long)]
    pub stopped: bool,
    /// Do not print the plugins' log messages.
    #[arg(long)]
    pub quiet_plugin: bool,
    /// Open instance 0's editor (CLAP gui, X11: embedded in a window of the
    /// host's, or floating where the plugin only floats) once the instances
    /// play, keep it open SECONDS while serving the main loop (callbacks,
    /// timers), then close it; the instances play until it has closed.
    /// Needs $DISPLAY (e.g. Xvfb).
    #[arg(long, value_name = "SECONDS", conflicts_with = "offline")]
    pub gui: Option<f64>,
    /// Open and close the editor N times while the instances play, each
    /// time until its first frame; the report's `gui.process` gives the
    /// process's descriptors, threads and memory before and after.
    #[arg(long, value_name = "N", conflicts_with = "offline")]
    pub gui_cycles: Option<u32>,
    /// Write the editor's last screenshot here (PNG): the host window's area
    /// of the screen (the whole screen for a floating editor).
    #[arg(long, value_name = "PATH", requires = "editor")]
    pub screenshot: Option<PathBuf>,
    /// Ask for a floating editor even where the plugin can embed.
    #[arg(long, requires = "editor")]
    pub gui_floating: bool,
}

impl Cli {
    fn gui_config(&self) -> Option<GuiConfig> {
        let mode = match (self.gui, self.gui_cycles) {
            (Some(seconds), _) => GuiMode::Open { seconds },
            (None, Some(count)) => GuiMode::Cycles { count },
            (None, None) => return None,
        };
        Some(GuiConfig { mode, screenshot: self.screenshot.clone(), floating: self.gui_floating })
    }

    /// The run these arguments describe, with memory locked and the plugin's log echoed unless `--quiet-plugin`.
    pub fn to_config(&self) -> RunConfig {
        RunConfig {
            plugin: self.plugin.clone(),
            plugin_id: self.plugin_id.clone(),
            tracks: self.tracks,
            block: self.block,
            rate: self.rate,
            seconds: self.seconds,
            script: self.script.clone(),
            python_env: self.python_env.clone(),
            offline: self.offline,
            json: self.json.clone(),
            output_wav: self.output_wav.clone(),
            input_wav: self.input_wav.clone(),
            write_input: self.write_input.clone(),
            automate: self.automate.clone(),
            quirks: self.host_quirks.unwrap_or_default(),
            notes: self.notes.clone(),
            note_dialect: self.note_dialect,
            params: self.params.clone(),
            tempo: self.tempo,
            time_signature: self.time_signature,
            stopped: self.stopped,
            lock_memory: true,
            echo_log: !self.quiet_plugin,
            gui: self.gui_config(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_option() {
        let cli = Cli::try_parse_from([
            "outboard-host",
            "x/outboard.clap",
            "--tracks",
            "4",
            "--block",
            "128",
            "--rate",
            "44100",
            "--seconds",
            "2.5",
            "--script",
            "s.py",
            "--offline",
            "--json",
            "r.json",
            "--plugin-id",
            "org.outboard",
            "--output-wav",
            "o.wav",
            "--input-wav",
            "i.wav",
            "--write-input",
            "w.wav",
            "--automate",
            "Mix",
            "--host-quirks",
            "zero-frames,huge-block",
            "--notes",
            "pattern:scale",
            "--note-dialect",
            "midi",
            "--param",
            "cutoff=500 Hz@4800",
            "--param",
            "3=0.5@0",
            "--tempo",
            "133",
            "--time-signature",
            "7/8",
            "--stopped",
        ])
        .unwrap();
        let c = cli.to_config();
        assert_eq!(c.plugin, PathBuf::from("x/outboard.clap"));
        assert_eq!((c.tracks, c.block, c.rate, c.seconds), (4, 128, 44_100, 2.5));
        assert_eq!(c.script, Some(PathBuf::from("s.py")));
        assert!(c.offline);
        assert_eq!(c.json, Some(PathBuf::from("r.json")));
        assert_eq!(c.plugin_id.as_deref(), Some("org.outboard"));
        assert_eq!(c.output_wav, Some(PathBuf::from("o.wav")));
        assert_eq!(c.input_wav, Some(PathBuf::from("i.wav")));
        assert_eq!(c.write_input, Some(PathBuf::from("w.wav")));
        assert_eq!(c.automate.as_deref(), Some("Mix"));
        assert_eq!(c.quirks.names(), ["zero-frames", "huge-block"]);
        assert_eq!(c.notes.as_deref(), Some("pattern:scale"));
        assert_eq!(c.note_dialect, NoteDialect::Midi);
        assert_eq!(
            c.params,
            [
                ParamSet { name: "cutoff".into(), value: "500 Hz".into(), sample: 4800 },
                ParamSet { name: "3".into(), value: "0.5".into(), sample: 0 },
            ]
        );
        assert_eq!(
            (c.tempo, c.time_signature, c.stopped),
            (133.0, TimeSignature { numerator: 7, denominator: 8 }, true)
        );
        assert!(c.lock_memory && c.echo_log);
        assert_eq!(c.total_blocks(), 862); // 2.5 s * 44100 / 128 = 861.3, rounded up
        assert_eq!(c.gui, None);
    }

    #[test]
    fn editor_options() {
        let parse = |args: &[&str]| Cli::try_parse_from(["outboard-host", "p.clap"].iter().chain(args));
        let c = parse(&["--gui", "2", "--screenshot", "shot.png"]).unwrap().to_config();
        assert_eq!(
            c.gui,
            Some(GuiConfig {
                mode: GuiMode::Open { seconds: 2.0 },
                screenshot: Some(PathBuf::from("shot.png")),
                floating: false
            })
        );
        let c = parse(&["--gui-cycles", "100", "--gui-floating"]).unwrap().to_config();
        assert_eq!(c.gui, Some(GuiConfig { mode: GuiMode::Cycles { count: 100 }, screenshot: None, floating: true }));
        for bad in [
            &["--gui", "1", "--gui-cycles", "3"][..],
            &["--screenshot", "s.png"],
            &["--gui-floating"],
            &["--gui", "1", "--offline"],
            &["--gui-cycles", "-1"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn defaults_and_errors() {
        let c = Cli::try_parse_from(["outboard-host", "p.clap"]).unwrap().to_config();
        assert_eq!((c.tracks, c.block, c.rate, c.seconds, c.offline), (1, 64, 48_000, 5.0, false));
        assert_eq!((c.script, c.json, c.plugin_id), (None, None, None));
        assert_eq!((c.input_wav, c.write_input, c.automate), (None, None, None));
        assert!(c.quirks.is_empty());
        assert_eq!((c.notes, c.note_dialect, c.params), (None, NoteDialect::Clap, Vec::new()));
        assert_eq!((c.tempo, c.time_signature, c.stopped), (120.0, TimeSignature::default(), false));
        for bad in [
            ["--note-dialect", "mpe"],
            ["--param", "cutoff=500"],
            ["--time-signature", "7"],
            ["--time-signature", "0/4"],
            ["--tempo", "fast"],
        ] {
            let argv = ["outboard-host", "p.clap"].into_iter().chain(bad);
            assert!(Cli::try_parse_from(argv).is_err(), "{bad:?}");
        }
        assert!(Cli::try_parse_from(["outboard-host"]).is_err(), "the plugin is required");
        assert!(Cli::try_parse_from(["outboard-host", "p.clap", "--tracks", "-1"]).is_err());
        assert!(Cli::try_parse_from(["outboard-host", "p.clap", "--block", "x"]).is_err());
        let err = Cli::try_parse_from(["outboard-host", "p.clap", "--host-quirks", "no-transport,late"]).unwrap_err();
        let err = err.to_string();
        assert!(err.contains("unknown host quirk \"late\"") && err.contains("reset-while-offline"), "{err}");
    }

    #[test]
    fn quirks_that_need_more_are_refused_by_the_run() {
        let run = |args: &[&str]| {
            let argv = ["outboard-host", "/nonexistent.clap"].iter().chain(args).copied();
            crate::run::run(&Cli::try_parse_from(argv).unwrap().to_config()).unwrap_err()
        };
        assert!(run(&["--host-quirks", "reset-while-offline"]).contains("needs --offline"));
        assert!(run(&["--host-quirks", "unsorted-events", "--offline"]).contains("needs --automate"));
        // Accepted: the run then fails at loading the plugin.
        let err = run(&["--host-quirks", "reset-while-offline,unsorted-events", "--offline", "--automate", "mix"]);
        assert!(err.contains("/nonexistent.clap"), "{err}");
    }

    #[test]
    fn a_missing_input_wav_is_refused_before_the_plugin_is_loaded() {
        let argv = ["outboard-host", "/nonexistent.clap", "--input-wav", "/nonexistent.wav"];
        let err = crate::run::run(&Cli::try_parse_from(argv).unwrap().to_config()).unwrap_err();
        assert!(err.contains("--input-wav /nonexistent.wav"), "{err}");
    }

    #[test]
    fn bad_notes_tempi_and_late_params_are_refused_before_the_plugin_is_loaded() {
        let notes = std::env::temp_dir().join(format!("outboard-host-cli-{}-notes.txt", std::process::id()));
        std::fs::write(&notes, "0 on 60\n10 on 200\n").unwrap();
        let run = |args: &[&str]| {
            let argv = ["outboard-host", "/nonexistent.clap"].iter().chain(args).copied();
            crate::run::run(&Cli::try_parse_from(argv).unwrap().to_config()).unwrap_err()
        };
        let err = run(&["--notes", notes.to_str().unwrap()]);
        let _ = std::fs::remove_file(&notes);
        assert!(err.contains(":2: the key is not 0-127"), "{err}");
        assert!(run(&["--notes", "pattern:nope"]).contains("no such pattern"));
        assert!(run(&["--tempo", "0"]).contains("--tempo"));
        let err = run(&["--seconds", "1", "--param", "gain=0@48000"]);
        assert!(err.contains("the run has 48000 frames"), "{err}");
    }

    #[test]
    fn zero_sizes_are_refused_by_the_run() {
        for args in [["--tracks", "0"], ["--block", "0"], ["--seconds", "0"], ["--rate", "0"]] {
            let mut argv = vec!["outboard-host", "/nonexistent.clap"];
            argv.extend(args);
            let err = crate::run::run(&Cli::try_parse_from(argv).unwrap().to_config()).unwrap_err();
            assert!(err.contains("above zero"), "{err}");
        }
    }
}
