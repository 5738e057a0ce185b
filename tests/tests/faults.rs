//! `outboard-bench faults --short` end to end: whatever a script does, the
//! audio goes on, the faulty track recovers (or, for faults that persist by
//! design, plays dry and says why), no other track gets its errors or its
//! bad samples, and nothing is left behind. And `outboard-bench soak` on a
//! short run. Times (recovery_ms) and realtime outcomes (deadline misses, a
//! late result on another track) are bench figures, reported by the bench
//! and never asserted here: a compile beside the tests spoils them. What is
//! held to is the property they measure: the other tracks play their
//! script's output for all but a small share of their periods.

use std::process::Command;

use outboard_tests::{ScriptDir, workspace_bin};
use serde_json::Value;

/// Every scenario the bench must run (`outboard-bench faults --list`).
const SCENARIOS: [&str; 21] = [
    "worker-killed",
    "worker-exits",
    "hang-busy",
    "hang-sleep",
    "raise-every-call",
    "raise-in-setup",
    "segfault",
    "memory-bomb",
    "output-nan",
    "output-inf",
    "output-denormal",
    "output-huge",
    "output-shape",
    "output-dtype",
    "hostile-scribble",
    "script-deleted",
    "script-syntax-error",
    "script-huge",
    "host-exe-missing",
    "host-exe-not-executable",
    "host-killed",
];

fn bench(args: &[&str]) -> String {
    let output = Command::new(workspace_bin("outboard-bench")).args(args).output().expect("run outboard-bench");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

/// Runs the short fault bench (only `only`, if any); returns its scenarios.
fn run_faults(dir: &ScriptDir, only: &[String], attempt: usize) -> Vec<Value> {
    let json = dir.path().join(format!("faults-{attempt}.json"));
    let mut args = vec!["faults", "--short", "--json", json.to_str().unwrap()];
    let only = only.join(",");
    if !only.is_empty() {
        args.extend(["--only", &only]);
    }
    let table = bench(&args);
    eprintln!("{table}");
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    report["scenarios"].as_array().unwrap().clone()
}

/// What is wrong with a scenario's outcome (nothing: empty).
fn problems(s: &Value) -> Vec<String> {
    let mut wrong = Vec::new();
    let mut check = |ok: bool, what: &str| {
        if !ok {
            wrong.push(what.to_string());
        }
    };
    check(s["recovered"] == true, "did not recover");
    check(s["diagnosed"] == true, "the log did not say what happened");
    check(s["leaks"].as_array().is_some_and(Vec::is_empty), "left something behind");
    let others = &s["others"];
    check(
        others["script_errors"] == 0 && others["other_periods"] == 0 && others["bad_samples"] == 0,
        "other tracks got errors or bad audio",
    );
    let (wet, dry) = (others["wet_periods"].as_f64().unwrap_or(0.0), others["dry_periods"].as_f64().unwrap_or(0.0));
    // A fault that reached them would leave them dry for its whole length
    // (a persistent fault is held a third of the scenario); a loaded machine
    // costs late blocks here and there (12 % of them in one run beside
    // stress-ng, with 207 of the graph's own deadlines missed).
    check(wet > 0.0 && dry < 0.25 * (wet + dry), "other tracks played dry for a large share of periods");
    check(s["master_bad_samples"] == 0 && s["faulty"]["bad_samples"] == 0, "bad samples reached the output");
    wrong
}

/// Whether the run shows the symptoms of a whole-machine stall: a deadline
/// miss anywhere (also before the fault, or before any worker ran) or a late
/// result on a track the fault never touched.
fn stalled(s: &Value) -> bool {
    s["deadline_misses"] != 0 || s["warmup_misses"] != 0 || s["control_misses"] != 0 || s["late_results"]["others"] != 0
}

#[test]
fn every_fault_is_survived_recovered_from_and_kept_to_its_own_track() {
    let _turn = outboard_tests::realtime::one_at_a_time();
    let dir = ScriptDir::new("faults");
    let mut scenarios = run_faults(&dir, &[], 1);
    let names: Vec<&str> = scenarios.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, SCENARIOS);
    // This project's machines are 2-vCPU virtual machines whose kernel does
    // not preempt kernel work (PREEMPT_NONE): another process starting
    // Python, or writing or freeing tens of MB, stalls even SCHED_FIFO
    // threads for milliseconds (the graph alone, no worker at all, misses
    // periods then). A scenario that failed while showing such a stall is
    // run once more; a second failure, or one with no stall, fails the test.
    let retry: Vec<String> = scenarios
        .iter()
        .filter(|s| !problems(s).is_empty() && stalled(s))
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    if !retry.is_empty() {
        eprintln!("{retry:?} failed during a machine stall; running them again");
        for again in run_faults(&dir, &retry, 2) {
            let slot = scenarios.iter_mut().find(|s| s["name"] == again["name"]).unwrap();
            *slot = again;
        }
    }
    let failures: Vec<String> = scenarios
        .iter()
        .filter_map(|s| {
            let wrong = problems(s);
            (!wrong.is_empty()).then(|| format!("{}: {}\n  {s}", s["name"], wrong.join(", ")))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // What each kind of fault must have done, beyond recovering.
    let by_name = |name: &str| scenarios.iter().find(|s| s["name"] == name).unwrap();
    for name in ["worker-killed", "worker-exits", "hang-busy", "hang-sleep", "segfault", "hostile-scribble"] {
        assert!(by_name(name)["restarts"].as_u64().unwrap() >= 1, "{name}: the worker was replaced");
    }
    assert!(by_name("hostile-scribble")["faulty"]["link_faults"].as_u64().unwrap() >= 1, "the host caught it");
    for name in ["raise-every-call", "output-nan", "output-inf", "output-huge", "output-shape", "output-dtype"] {
        let s = by_name(name);
        assert!(s["script_errors"]["faulty"].as_u64().unwrap() > 100, "{name}: dry with errors counted: {s}");
        assert_eq!(s["restarts"], 0, "{name}: nothing wrong with the worker");
    }
    for name in ["host-exe-missing", "host-exe-not-executable"] {
        let s = by_name(name);
        assert_eq!(s["faulty"]["wet_periods"], 0, "{name}: played dry throughout");
        assert!(s["log"].as_str().unwrap().contains("cannot start"), "{name}: {s}");
    }
}

#[test]
fn soak_runs_every_example_script_and_reports_memory() {
    let _turn = outboard_tests::realtime::one_at_a_time();
    let dir = ScriptDir::new("soak");
    let json = dir.path().join("soak.json");
    let table = bench(&["soak", "--seconds", "5", "--json", json.to_str().unwrap()]);
    assert!(table.contains("deadline misses") && table.contains("memory: bench"), "{table}");
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["tracks"], 16);
    assert!(report["periods"].as_u64().unwrap() > 3000, "five seconds of 64-frame periods: {report}");
    // The example scripts are well-behaved: any error or restart is a bug.
    assert_eq!(report["script_errors"], 0, "{report}");
    assert_eq!(report["link_faults"], 0, "{report}");
    assert_eq!(report["restarts"], 0, "{report}");
    assert_eq!(report["same_workers"], true, "{report}");
    assert_eq!(report["master_non_finite"], 0, "{report}");
    for point in ["start", "end"] {
        assert!(report[point]["bench_rss_kib"].as_u64().unwrap() > 0, "{point}: {report}");
        let workers = report[point]["workers_rss_kib"].as_array().unwrap();
        assert_eq!(workers.len() as u64, report["workers"].as_u64().unwrap());
        assert!(workers.iter().all(|w| w["rss_kib"].as_u64().unwrap() > 1024), "live workers: {report}");
    }
    let tracks = report["per_track"].as_array().unwrap();
    assert_eq!(tracks.len(), 16);
    for track in tracks {
        assert!(track["roundtrip_us"]["p50"].as_f64().unwrap() > 0.0, "each track heard its script: {track}");
        if ["melody.py", "pad.py"].contains(&track["script"].as_str().unwrap()) {
            assert!(track["events"].as_u64().unwrap() > 0, "tick() scheduled notes: {track}");
        }
    }
}
