//! `outboard-scripts-host`: one scripting worker process.
//!
//! Started by the engine (never by hand, never by a realtime thread) as
//! `outboard-scripts-host --shm-fd FD --worker INDEX --generation G --parent-pid PID`,
//! with FD an inherited memfd holding its region. It serves job requests until
//! told to shut down, until its host dies, or until its rings fault.

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use outboard_engine::protocol::{self, JobError, JobReply, Kind, Reassembler};
use outboard_engine::region::Region;
use outboard_engine::ring::{PopError, Producer, PushError};
use outboard_engine::workers::{CONTROL_RING, REPLY_RING, REQUEST_RING};
use outboard_scripts_host::JobRuntime;

/// How long the worker sleeps on an empty ring before beating and checking its parent.
const IDLE_WAKE: Duration = Duration::from_millis(100);
/// Spins before sleeping on an empty ring.
const SPINS: u32 = 20_000;

struct Args {
    shm_fd: i32,
    worker: usize,
    generation: u32,
    parent_pid: Option<u32>,
}

fn parse_args() -> Result<Args, String> {
    let mut shm_fd = None;
    let mut worker = 0;
    let mut generation = 1;
    let mut parent_pid = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--version" {
            println!("outboard-scripts-host {}", env!("CARGO_PKG_VERSION"));
            std::process::exit(0);
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: std::num::ParseIntError| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--shm-fd" => shm_fd = Some(value.parse().map_err(bad)?),
            "--worker" => worker = value.parse().map_err(bad)?,
            "--generation" => generation = value.parse().map_err(bad)?,
            "--parent-pid" => parent_pid = Some(value.parse().map_err(bad)?),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    let shm_fd = shm_fd.ok_or("--shm-fd is required (this program is started by the Outboard engine)")?;
    if shm_fd < 3 {
        return Err(format!("--shm-fd {shm_fd} is a standard stream"));
    }
    Ok(Args { shm_fd, worker, generation, parent_pid })
}

fn parent_gone(parent: Option<u32>) -> bool {
    let now = rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32);
    parent.is_some_and(|p| now != Some(p))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("outboard-scripts-host: {e}");
            return ExitCode::from(2);
        }
    };
    // The parent-death signal was armed before exec; if the parent died before
    // that, we were re-parented already and must not linger.
    if parent_gone(args.parent_pid) {
        return ExitCode::from(3);
    }
    let tag = format!("[outboard worker {} pid {}]", args.worker, std::process::id());
    // SAFETY: the engine passed us this descriptor by inheritance for our sole
    // use, and nothing else in this process owns or closes it.
    let fd = unsafe { OwnedFd::from_raw_fd(args.shm_fd) };
    let mut region = match Region::attach(fd) {
        Ok(region) => region,
        Err(e) => {
            eprintln!("{tag} {e}");
            return ExitCode::from(3);
        }
    };
    if region.ring_count() != 2 || region.ring_shape(REQUEST_RING) != Some(CONTROL_RING) {
        eprintln!("{tag} the region does not have the control rings this build expects");
        return ExitCode::from(3);
    }
    let status = region.status();
    let generation = status.generation.load(Ordering::Acquire);
    if generation != args.generation {
        eprintln!("{tag} region generation {generation}, expected {}", args.generation);
        return ExitCode::from(3);
    }
    status.pid.store(std::process::id(), Ordering::Relaxed);
    let (Some(mut requests), Some(mut replies)) = (region.consumer(REQUEST_RING), region.producer(REPLY_RING))
    else {
        unreachable!("a freshly attached region hands out each endpoint once");
    };
    let runtime = match JobRuntime::new(Some(args.worker)) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{tag} {e}");
            return ExitCode::from(4);
        }
    };
    let status = region.status();
    let mut reassembler = Reassembler::default();
    let mut buf = vec![0u8; CONTROL_RING.payload];
    loop {
        status.heartbeat.fetch_add(1, Ordering::Relaxed);
        let len = match requests.pop_wait(&mut buf, SPINS, Some(IDLE_WAKE)) {
            Ok(len) => len,
            Err(PopError::Empty) => {
                if parent_gone(args.parent_pid) {
                    return ExitCode::SUCCESS;
                }
                continue;
            }
            Err(e) => {
                eprintln!("{tag} request ring unusable ({e:?}); exiting");
                return ExitCode::from(5);
            }
        };
        let message = match reassembler.push(&buf[..len]) {
            Ok(Some(message)) => message,
            Ok(None) => continue,
            Err(e) => {
                eprintln!("{tag} {e}; exiting");
                return ExitCode::from(5);
            }
        };
        match message.kind {
            Kind::Shutdown => return ExitCode::SUCCESS,
            Kind::JobRequest => {
                let reply = runtime.run(&message.body);
                if let Err(e) = send(&mut replies, message.id, &reply, args.parent_pid) {
                    eprintln!("{tag} {e}; exiting");
                    return ExitCode::from(5);
                }
            }
            Kind::JobReply => {
                let error = JobReply {
                    result: Err(JobError::new("ProtocolError", "a worker does not take replies")),
                    seconds: 0.0,
                };
                if send(&mut replies, message.id, &error.to_json(), args.parent_pid).is_err() {
                    return ExitCode::from(5);
                }
            }
        }
    }
}

/// Sends a reply, waiting for ring space as long as the host lives.
fn send(ring: &mut Producer, id: u64, body: &[u8], parent: Option<u32>) -> Result<(), String> {
    for fragment in protocol::fragments(Kind::JobReply, id, body, CONTROL_RING.payload) {
        let mut since = Instant::now();
        loop {
            match ring.try_push(&fragment) {
                Ok(()) => break,
                Err(PushError::Full) => {
                    std::thread::sleep(Duration::from_micros(50));
                    if since.elapsed() > Duration::from_secs(1) {
                        if parent_gone(parent) {
                            return Err("host gone".into());
                        }
                        since = Instant::now();
                    }
                }
                Err(e) => return Err(format!("reply ring unusable ({e:?})")),
            }
        }
    }
    Ok(())
}
