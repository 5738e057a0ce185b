//! `outboard-bench jobs`: job mode at full speed. Trivial jobs (`f(x)`
//! returns `x`) on 2 worker processes, submitted all at once and then
//! collected (jobs per second), and one at a time (each job's round trip),
//! by three systems in the same run:
//!
//! - `outboard`: [`WorkerPool`], Outboard's job mode;
//! - `multiprocessing`: Python's `multiprocessing.Pool(2)`, `apply_async`;
//! - `pp`: Parallel Python (`pp` from PyPI), `Server(ncpus=2).submit`,
//!   installed into a virtual environment by the bench when missing (and
//!   skipped, with a note, when it cannot be).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::{Args, ValueEnum};
use outboard_engine::wire::control::JobRequest;
use outboard_engine::workers::pool::WorkerPool;
use outboard_engine::workers::process::locate_scripts_host;
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum System {
    Outboard,
    Multiprocessing,
    Pp,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Outboard => "outboard",
            System::Multiprocessing => "multiprocessing",
            System::Pp => "pp",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    AllAtOnce,
    OneAtATime,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::AllAtOnce => "all-at-once",
            Mode::OneAtATime => "one-at-a-time",
        }
    }
}

#[derive(Args, Debug)]
pub struct JobsArgs {
    /// Job counts to run, each in every mode and system.
    #[arg(long, value_delimiter = ',', default_value = "2000,20000")]
    jobs: Vec<usize>,
    /// Worker processes (pool size) for every system.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    #[arg(long, value_delimiter = ',', default_value = "outboard,multiprocessing,pp")]
    systems: Vec<System>,
    #[arg(long, value_delimiter = ',', default_value = "all-at-once,one-at-a-time")]
    modes: Vec<Mode>,
    /// The Python for the baselines (default: the one the workers embed).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Where the virtual environment for `pp` is made if `pp` is missing
    /// (default: `outboard-bench-venv` in the target folder).
    #[arg(long)]
    venv: Option<PathBuf>,
    /// Write `{"runs": [...]}` here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The job every system runs, and the baselines' driver.
const SCRIPT: &str = r#"
import json, sys, time


def f(x):
    return x


def main():
    system, workers, counts, modes = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].split(",")
    if system == "multiprocessing":
        import multiprocessing
        pool = multiprocessing.get_context("fork").Pool(workers)
        submit = lambda i: pool.apply_async(f, (i,))
        get = lambda job: job.get()
        close = pool.terminate
    else:
        import pp
        server = pp.Server(ncpus=workers)
        submit = lambda i: server.submit(f, (i,))
        get = lambda job: job()
        close = server.destroy
    # Warm up: workers started and the function loaded before timing.
    for job in [submit(i) for i in range(200)]:
        get(job)
    runs = []
    for n in map(int, counts.split(",")):
        for mode in modes:
            if mode == "all-at-once":
                began = time.perf_counter()
                jobs = [submit(i) for i in range(n)]
                results = [get(job) for job in jobs]
                seconds = time.perf_counter() - began
                trips = None
            else:
                trips = []
                results = []
                began = time.perf_counter()
                for i in range(n):
                    t = time.perf_counter_ns()
                    results.append(get(submit(i)))
                    trips.append((time.perf_counter_ns() - t) / 1000.0)
                seconds = time.perf_counter() - began
                trips.sort()
            assert results == list(range(n)), "wrong results"
            runs.append({"mode": mode, "jobs": n, "seconds": seconds,
                         "roundtrips_us": None if trips is None else [trips[len(trips) // 2], trips[min(len(trips) - 1, len(trips) * 99 // 100)]]})
    close()
    print("RESULT " + json.dumps(runs))


if __name__ == "__main__":
    main()
"#;

struct Run {
    system: System,
    mode: Mode,
    jobs: usize,
    jobs_per_s: f64,
    /// p50, p99 (one at a time only).
    roundtrip_us: Option<(f64, f64)>,
}

pub fn run(args: JobsArgs) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("outboard-bench-jobs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let script = dir.join("trivial_jobs.py");
    std::fs::write(&script, SCRIPT).map_err(|e| format!("cannot write {}: {e}", script.display()))?;
    let outcome = run_in(&args, &script);
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

fn run_in(args: &JobsArgs, script: &Path) -> Result<(), String> {
    let python = args.python.clone().unwrap_or_else(embedded_python);
    println!(
        "Trivial jobs (f(x) returns x) on {} worker processes, jobs {:?}, Python {}\n",
        args.workers,
        args.jobs,
        python.display()
    );
    let mut runs = Vec::new();
    let mut notes = Vec::new();
    for &system in &args.systems {
        match system {
            System::Outboard => runs.extend(outboard(args, script)?),
            System::Multiprocessing => runs.extend(baseline(args, script, system, &python)?),
            System::Pp => match pp_python(args, &python) {
                Ok(venv_python) => runs.extend(baseline(args, script, system, &venv_python)?),
                Err(why) => {
                    println!("pp skipped: {why}");
                    notes.push(json!({"system": "pp", "skipped": why}));
                }
            },
        }
    }
    println!("\nsystem             mode             jobs      jobs/s | round trip µs p50 / p99");
    for r in &runs {
        let trip = r.roundtrip_us.map_or("—".to_string(), |(p50, p99)| format!("{p50:8.1} / {p99:8.1}"));
        println!("{:<18} {:<14} {:>6} {:>11.0} | {trip:>21}", r.system.name(), r.mode.name(), r.jobs, r.jobs_per_s);
    }
    println!();
    for &n in &args.jobs {
        let find = |system, mode| runs.iter().find(|r| r.system == system && r.mode == mode && r.jobs == n);
        for other in [System::Multiprocessing, System::Pp] {
            if let (Some(ours), Some(theirs)) = (find(System::Outboard, Mode::AllAtOnce), find(other, Mode::AllAtOnce))
            {
                println!(
                    "{n} jobs, all at once: outboard {:.1}x the jobs/s of {}{}",
                    ours.jobs_per_s / theirs.jobs_per_s,
                    other.name(),
                    if other == System::Multiprocessing { " (goal >= 4x)" } else { "" }
                );
            }
            if let (Some((ours, _)), Some((theirs, _))) = (
                find(System::Outboard, Mode::OneAtATime).and_then(|r| r.roundtrip_us),
                find(other, Mode::OneAtATime).and_then(|r| r.roundtrip_us),
            ) {
                println!(
                    "{n} jobs, one at a time: outboard's round trip p50 is 1/{:.1} of {}'s{}",
                    theirs / ours,
                    other.name(),
                    if other == System::Multiprocessing { " (goal <= 1/5)" } else { "" }
                );
            }
        }
    }
    if let Some(path) = &args.json {
        let runs: Vec<Value> = runs
            .iter()
            .map(|r| {
                json!({
                    "system": r.system.name(),
                    "mode": r.mode.name(),
                    "jobs": r.jobs,
                    "workers": args.workers,
                    "jobs_per_s": r.jobs_per_s,
                    "roundtrip_us": r.roundtrip_us.map(|(p50, p99)| json!({"p50": p50, "p99": p99})),
                })
            })
            .collect();
        let report = json!({"runs": runs, "notes": notes});
        std::fs::write(path, serde_json::to_string_pretty(&report).expect("serialisable"))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn outboard(args: &JobsArgs, script: &Path) -> Result<Vec<Run>, String> {
    let pool = WorkerPool::new(locate_scripts_host(None)?, args.workers).map_err(|e| e.to_string())?;
    let job = |i: usize| JobRequest::new(script, "f", vec![json!(i)]);
    let check = |i: usize, result: Result<Value, _>| match result {
        Ok(v) if v == json!(i) => Ok(()),
        other => Err(format!("outboard job {i}: {other:?}")),
    };
    // Warm up, as the baselines do: workers started, script loaded.
    for (i, result) in pool.run_all((0..200).map(job)).into_iter().enumerate() {
        check(i, result)?;
    }
    let mut runs = Vec::new();
    for &n in &args.jobs {
        for &mode in &args.modes {
            let (seconds, trips) = match mode {
                Mode::AllAtOnce => {
                    let began = Instant::now();
                    let tickets: Vec<_> = (0..n).map(|i| pool.submit(job(i))).collect();
                    for (i, ticket) in tickets.into_iter().enumerate() {
                        check(i, pool.wait(ticket))?;
                    }
                    (began.elapsed().as_secs_f64(), None)
                }
                Mode::OneAtATime => {
                    let mut trips = Vec::with_capacity(n);
                    let began = Instant::now();
                    for i in 0..n {
                        let t = Instant::now();
                        let ticket = pool.submit(job(i));
                        check(i, pool.wait(ticket))?;
                        trips.push(t.elapsed().as_secs_f64() * 1e6);
                    }
                    (began.elapsed().as_secs_f64(), Some(percentiles(trips)))
                }
            };
            runs.push(Run {
                system: System::Outboard,
                mode,
                jobs: n,
                jobs_per_s: n as f64 / seconds,
                roundtrip_us: trips,
            });
        }
    }
    let stats = pool.stats();
    println!("outboard: {stats}");
    Ok(runs)
}

fn percentiles(mut trips: Vec<f64>) -> (f64, f64) {
    trips.sort_by(f64::total_cmp);
    let at = |q: usize| trips[(trips.len() * q / 100).min(trips.len() - 1)];
    (at(50), at(99))
}

/// Runs the Python driver for `system` and reads its runs.
fn baseline(args: &JobsArgs, script: &Path, system: System, python: &Path) -> Result<Vec<Run>, String> {
    let counts: Vec<String> = args.jobs.iter().map(usize::to_string).collect();
    let modes: Vec<&str> = args.modes.iter().map(|m| m.name()).collect();
    let output = Command::new(python)
        .arg(script)
        .args([system.name(), &args.workers.to_string(), &counts.join(","), &modes.join(",")])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")).filter(|_| output.status.success()) else {
        return Err(format!(
            "the {} baseline failed ({}):\n{stdout}\n{}",
            system.name(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    };
    let values: Vec<Value> =
        serde_json::from_str(line).map_err(|e| format!("{} baseline output: {e}", system.name()))?;
    values
        .iter()
        .map(|v| {
            let mode = match v["mode"].as_str() {
                Some("all-at-once") => Mode::AllAtOnce,
                Some("one-at-a-time") => Mode::OneAtATime,
                other => return Err(format!("{} baseline: mode {other:?}", system.name())),
            };
            let jobs = v["jobs"].as_u64().unwrap_or(0) as usize;
            let seconds = v["seconds"].as_f64().unwrap_or(f64::NAN);
            let trips =
                v["roundtrips_us"].as_array().map(|p| (p[0].as_f64().unwrap_or(0.0), p[1].as_f64().unwrap_or(0.0)));
            Ok(Run { system, mode, jobs, jobs_per_s: jobs as f64 / seconds, roundtrip_us: trips })
        })
        .collect()
}

/// The Python the workers embed (what pyo3 was built against), else `python3`.
fn embedded_python() -> PathBuf {
    PathBuf::from(option_env!("OUTBOARD_PYTHON").unwrap_or("python3"))
}

/// A Python that can `import pp`: `python` itself, else the bench's virtual
/// environment (made from `python`, `pp` installed with pip) when it has or
/// can be given it.
fn pp_python(args: &JobsArgs, python: &Path) -> Result<PathBuf, String> {
    let imports_pp = |py: &Path| Command::new(py).args(["-c", "import pp"]).output().is_ok_and(|o| o.status.success());
    if imports_pp(python) {
        return Ok(python.to_path_buf());
    }
    let venv = match &args.venv {
        Some(dir) => dir.clone(),
        None => {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            // target/release/outboard-bench → target/outboard-bench-venv
            let target = exe.parent().and_then(Path::parent).ok_or("no folder above the executable")?;
            target.join("outboard-bench-venv")
        }
    };
    let venv_python = venv.join("bin").join("python");
    if imports_pp(&venv_python) {
        return Ok(venv_python);
    }
    println!("pp: installing Parallel Python into {} (python -m venv; pip install pp)", venv.display());
    if !venv_python.is_file() {
        let made = Command::new(python).args(["-m", "venv"]).arg(&venv).output();
        match made {
            Ok(o) if o.status.success() => {}
            Ok(o) => return Err(format!("python -m venv failed: {}", String::from_utf8_lossy(&o.stderr).trim())),
            Err(e) => return Err(format!("cannot run {}: {e}", python.display())),
        }
    }
    let installed = Command::new(&venv_python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "pp"])
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .output();
    match installed {
        Ok(o) if o.status.success() && imports_pp(&venv_python) => Ok(venv_python),
        Ok(o) => Err(format!("pip install pp failed: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Err(format!("cannot run {}: {e}", venv_python.display())),
    }
}
