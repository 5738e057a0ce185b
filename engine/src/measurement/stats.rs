//! Job statistics in Parallel Python's shape (`job_server.print_stats()`).

use std::fmt;
use std::time::Duration;

/// One worker's share of the jobs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatsRow {
    /// Which worker ("thread 0", "worker 2 (pid 4711)", ...).
    pub worker: String,
    /// Jobs the worker finished (failed ones included).
    pub jobs: u64,
    /// Sum of the time the worker spent inside jobs.
    pub seconds: f64,
}

/// The statistics table of one job server.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobStats {
    /// One row per worker of the server.
    pub rows: Vec<StatsRow>,
    /// Time since the server was created.
    pub elapsed: Duration,
}

impl JobStats {
    /// Jobs finished by all workers together.
    pub fn total_jobs(&self) -> u64 {
        self.rows.iter().map(|r| r.jobs).sum()
    }

    /// Seconds all workers together spent inside jobs (the sum of the rows' `seconds`).
    pub fn total_seconds(&self) -> f64 {
        self.rows.iter().map(|r| r.seconds).sum()
    }
}

impl fmt::Display for JobStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.total_jobs().max(1) as f64;
        writeln!(f, "Job execution statistics:")?;
        writeln!(f, " job count | % of all jobs | job time sum | time per job | job server")?;
        for row in self.rows.iter().filter(|r| r.jobs > 0) {
            writeln!(
                f,
                "{:>10} | {:>13.2} | {:>12.4} | {:>12.6} | {}",
                row.jobs,
                100.0 * row.jobs as f64 / total,
                row.seconds,
                row.seconds / row.jobs as f64,
                row.worker
            )?;
        }
        write!(f, "Time elapsed since server creation {:.4}", self.elapsed.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_parallel_pythons_columns() {
        let stats = JobStats {
            rows: vec![
                StatsRow { worker: "thread 0".into(), jobs: 3, seconds: 0.3 },
                StatsRow { worker: "thread 1".into(), jobs: 1, seconds: 0.1 },
                StatsRow { worker: "thread 2".into(), jobs: 0, seconds: 0.0 },
            ],
            elapsed: Duration::from_millis(1500),
        };
        let text = stats.to_string();
        assert!(text.contains("job count | % of all jobs | job time sum | time per job | job server"));
        assert!(text.contains("         3 |         75.00 |       0.3000 |     0.100000 | thread 0"), "{text}");
        assert!(!text.contains("thread 2"), "idle workers are left out");
        assert!(text.ends_with("Time elapsed since server creation 1.5000"));
    }
}
