//! `worker-host MODE SCRIPT N`: a host process with N script workers, for
//! tests that kill it and check that its workers die with it.
//!
//! - `tracks`: a supervisor with N scripted tracks (one worker each) running SCRIPT;
//! - `jobs`: a job pool of N workers, each given a job calling SCRIPT's `hang()`.
//!
//! Once every worker is up it prints `pids P1 P2 ...` on stdout, then waits
//! to be killed.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use outboard_engine::realtime::track::{Track, TrackConfig};
use outboard_engine::wire::control::JobRequest;
use outboard_engine::workers::pool::WorkerPool;
use outboard_engine::workers::process::locate_scripts_host;
use outboard_engine::workers::supervisor::{ScriptedTrack, Supervisor, SupervisorConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: worker-host tracks|jobs SCRIPT N";
    let mode = args.next().expect(usage);
    let script = PathBuf::from(args.next().expect(usage));
    let n: usize = args.next().and_then(|a| a.parse().ok()).expect(usage);
    let exe = locate_scripts_host(None).expect("outboard-scripts-host");
    // Whatever is started is kept alive until the process is killed.
    let (pids, _keep): (Vec<u32>, Box<dyn std::any::Any>) = match mode.as_str() {
        "tracks" => {
            let template = TrackConfig::new(0, "template");
            let mut config = SupervisorConfig::new(exe, &template);
            config.max_workers = n;
            let supervisor = Supervisor::start(config);
            let tracks: Vec<Track> = (0..n as u32)
                .map(|id| {
                    let (track, port) = Track::new(TrackConfig::new(id, format!("track {id}")));
                    supervisor.add_track(ScriptedTrack::new(port, script.clone(), vec!["mix".into()]));
                    track
                })
                .collect();
            let deadline = Instant::now() + Duration::from_secs(30);
            while supervisor.worker_pids().len() < n {
                assert!(Instant::now() < deadline, "workers did not start");
                std::thread::sleep(Duration::from_millis(10));
            }
            (supervisor.worker_pids(), Box::new((supervisor, tracks)))
        }
        "jobs" => {
            let pool = WorkerPool::new(exe, n).expect("start the pool");
            // One each: the pool hands a job to the least busy worker.
            for _ in 0..n {
                pool.submit(JobRequest::new(&script, "hang", vec![]));
            }
            (pool.pids(), Box::new(pool))
        }
        other => panic!("unknown mode {other}; {usage}"),
    };
    let line: Vec<String> = pids.iter().map(u32::to_string).collect();
    let mut stdout = std::io::stdout();
    writeln!(stdout, "pids {}", line.join(" ")).expect("stdout");
    stdout.flush().expect("stdout");
    loop {
        std::thread::park();
    }
}
