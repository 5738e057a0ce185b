//! `outboard-bench scaling` end to end, on a small problem: every engine gets
//! the exact partial sum and the JSON has the documented shape.

use std::process::Command;

use outboard_engine::compute::partial_sum_scalar;
use outboard_tests::{ScriptDir, workspace_bin};
use serde_json::Value;

#[test]
fn every_engine_computes_the_same_exact_sum() {
    let dir = ScriptDir::new("bench");
    let json_path = dir.path().join("scaling.json");
    let output = Command::new(workspace_bin("outboard-bench"))
        .args(["scaling", "--terms", "300000", "--parts", "8", "--ncpus", "1,2,1", "--json"])
        .arg(&json_path)
        .output()
        .expect("run outboard-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("Job execution statistics:"));
    let report: Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 9, "3 engines x 3 ncpus");
    let exact = partial_sum_scalar(1, 300_000);
    for run in runs {
        let sum = run["sum"].as_f64().unwrap();
        assert!((sum - exact).abs() < 1e-12, "{run}");
        assert!(run["seconds"].as_f64().unwrap() > 0.0);
        assert!(["native", "workers", "threads"].contains(&run["engine"].as_str().unwrap()));
    }
    let ncpus: Vec<u64> = runs.iter().take(3).map(|r| r["ncpus"].as_u64().unwrap()).collect();
    assert_eq!(ncpus, vec![1, 2, 1]);
}
