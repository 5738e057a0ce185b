//! What a scenario found, and the table printed from the reports.

use serde_json::{Value, json};

use super::measurement::Counts;

pub(super) struct Report {
    pub(super) name: &'static str,
    pub(super) about: &'static str,
    /// From the fault's injection to the end.
    pub(super) deadline_misses: u64,
    /// Page faults the graph's realtime threads (track threads, clock) took
    /// from the fault's injection to the end.
    pub(super) rt_page_faults: u64,
    /// While the workers started, and before, with the graph alone.
    pub(super) warmup_misses: u64,
    pub(super) control_misses: u64,
    pub(super) faulty: Counts,
    pub(super) others: Counts,
    pub(super) master_bad: u64,
    pub(super) restarts: u64,
    pub(super) recovered: bool,
    pub(super) recovery_ms: Option<f64>,
    pub(super) detect_ms: Option<f64>,
    pub(super) others_affected: bool,
    pub(super) diagnosed: bool,
    pub(super) log_line: Option<String>,
    pub(super) leaks: Vec<String>,
    pub(super) notes: Vec<String>,
    pub(super) holdings: Value,
}

impl Report {
    pub(super) fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "about": self.about,
            "deadline_misses": self.deadline_misses,
            "realtime_page_faults": self.rt_page_faults,
            "warmup_misses": self.warmup_misses,
            "control_misses": self.control_misses,
            "late_results": {"faulty": self.faulty.late, "others": self.others.late},
            "script_errors": {"faulty": self.faulty.errors, "others": self.others.errors},
            "recovered": self.recovered,
            "recovery_ms": self.recovery_ms,
            "detect_ms": self.detect_ms,
            "others_affected": self.others_affected,
            "diagnosed": self.diagnosed,
            "log": self.log_line,
            "restarts": self.restarts,
            "leaks": self.leaks,
            "notes": self.notes,
            "faulty": self.faulty.to_json(),
            "others": self.others.to_json(),
            "master_bad_samples": self.master_bad,
            "holdings": self.holdings,
        })
    }
}

pub(super) fn print_table(reports: &[Report]) {
    println!(
        "{:<24} {:>16} {:>9} {:>14} {:>7} {:>8} {:>9} {:>11} {:>8}  leaks",
        "scenario",
        "misses (wu/ctl)",
        "rt faults",
        "late faulty/o",
        "errors",
        "restarts",
        "recovered",
        "recovery ms",
        "others"
    );
    for r in reports {
        println!(
            "{:<24} {:>16} {:>9} {:>14} {:>7} {:>8} {:>9} {:>11} {:>8}  {}",
            r.name,
            format!("{} ({}/{})", r.deadline_misses, r.warmup_misses, r.control_misses),
            r.rt_page_faults,
            format!("{}/{}", r.faulty.late, r.others.late),
            r.faulty.errors,
            r.restarts,
            if r.recovered { "yes" } else { "NO" },
            r.recovery_ms.map_or("—".into(), |ms| format!("{ms:.0}")),
            if r.others_affected { "AFFECTED" } else { "fine" },
            if r.leaks.is_empty() { "none".into() } else { r.leaks.join("; ") },
        );
    }
    let notes: Vec<String> =
        reports.iter().flat_map(|r| r.notes.iter().map(move |n| format!("  {}: {n}", r.name))).collect();
    if !notes.is_empty() {
        println!("\nnotes:\n{}", notes.join("\n"));
    }
}
