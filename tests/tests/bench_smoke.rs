//! `outboard-bench latency`, `ring` and `jobs` end to end on a tiny run: they
//! work and write the documented JSON (no timing is asserted).

use std::process::Command;

use outboard_tests::{ScriptDir, workspace_bin};
use serde_json::Value;

fn bench(args: &[&str]) -> String {
    let output = Command::new(workspace_bin("outboard-bench")).args(args).output().expect("run outboard-bench");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

#[test]
fn latency_reports_every_mode_with_the_documented_keys() {
    let _turn = outboard_tests::realtime::one_at_a_time();
    let dir = ScriptDir::new("latency");
    let json = dir.path().join("latency.json");
    let plot = dir.path().join("latency.svg");
    let json_arg = json.to_str().unwrap();
    let plot_arg = plot.to_str().unwrap();
    bench(&["latency", "--tracks", "2", "--seconds", "1", "--hog", "--json", json_arg, "--plot", plot_arg]);
    let runs: Vec<Value> = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let modes: Vec<&str> = runs.iter().map(|r| r["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["native", "outboard", "inproc-gil"]);
    for run in &runs {
        for key in ["tracks", "block", "rate", "seconds", "blocks", "deadline_misses", "late_results"] {
            assert!(run[key].is_number(), "{key} in {run}");
        }
        for key in ["callback_us", "roundtrip_us"] {
            for p in ["p50", "p99", "p999", "max"] {
                assert!(run[key][p].is_number(), "{key}.{p} in {run}");
            }
        }
        assert!(run["blocks"].as_u64().unwrap() > 1000, "a second of two tracks: {run}");
    }
    assert!(runs[1]["roundtrip_us"]["p50"].as_f64().unwrap() > 0.0, "outboard measured round trips");
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("inproc-gil"));
}

#[test]
fn ring_compares_with_rtrb_and_times_round_trips() {
    let _turn = outboard_tests::realtime::one_at_a_time();
    let dir = ScriptDir::new("ring");
    let json = dir.path().join("ring.json");
    let out = bench(&["ring", "--ops", "20000", "--round-trips", "200", "--json", json.to_str().unwrap()]);
    assert!(out.contains("rtrb"));
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(report["push_pop_ns"]["shm"].as_f64().unwrap() > 0.0);
    assert!(report["push_pop_ns"]["rtrb"].as_f64().unwrap() > 0.0);
    assert_eq!(report["round_trips"].as_array().unwrap().len(), 2, "sleeping and spinning peer");
}

#[test]
fn jobs_compares_with_multiprocessing_and_writes_every_run() {
    let _turn = outboard_tests::realtime::one_at_a_time();
    let dir = ScriptDir::new("jobs");
    let json = dir.path().join("jobs.json");
    // Parallel Python is left out: installing it needs the network.
    let out =
        bench(&["jobs", "--jobs", "40,60", "--systems", "outboard,multiprocessing", "--json", json.to_str().unwrap()]);
    assert!(out.contains("multiprocessing"), "{out}");
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let runs = report["runs"].as_array().unwrap();
    let mut seen: Vec<(String, String, u64)> = runs
        .iter()
        .map(|r| {
            (r["system"].as_str().unwrap().into(), r["mode"].as_str().unwrap().into(), r["jobs"].as_u64().unwrap())
        })
        .collect();
    seen.sort();
    let mut expected = Vec::new();
    for system in ["multiprocessing", "outboard"] {
        for mode in ["all-at-once", "one-at-a-time"] {
            for jobs in [40, 60] {
                expected.push((system.to_string(), mode.to_string(), jobs));
            }
        }
    }
    expected.sort();
    assert_eq!(seen, expected);
    for run in runs {
        assert_eq!(run["workers"], 2, "{run}");
        assert!(run["jobs_per_s"].as_f64().unwrap() > 0.0, "{run}");
        if run["mode"] == "one-at-a-time" {
            for p in ["p50", "p99"] {
                assert!(run["roundtrip_us"][p].as_f64().unwrap() > 0.0, "{run}");
            }
        } else {
            assert!(run["roundtrip_us"].is_null(), "{run}");
        }
    }
}
