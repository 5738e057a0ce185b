//! What a worker process can reach, and how long it lives: the shared region
//! is an anonymous memfd passed by inheritance (nothing under /dev/shm), it is
//! the only descriptor a worker inherits besides its standard streams, and
//! workers die with their host however the host dies.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use outboard_engine::realtime::track::{Track, TrackConfig};
use outboard_engine::workers::supervisor::{ScriptedTrack, Supervisor, SupervisorConfig};
use outboard_tests::{ScriptDir, eventually, scripts_host, workspace_bin};

const SCRIPT: &str = "def process(block, ctx):\n    block *= 2.0\n";

/// Entries of /dev/shm, less those other programs on a shared machine make
/// while we run (JACK's registry and semaphores, POSIX named semaphores).
fn dev_shm() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .expect("/dev/shm")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with("jack") && !name.starts_with("sem."))
        .collect()
}

/// Open descriptors of `pid`: number and what it links to.
fn fds(pid: u32) -> Vec<(i32, String)> {
    let mut fds: Vec<(i32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("worker fd list")
        .filter_map(|e| {
            let e = e.ok()?;
            let link = std::fs::read_link(e.path()).ok()?;
            Some((e.file_name().to_str()?.parse().ok()?, link.to_string_lossy().into_owned()))
        })
        .collect();
    fds.sort();
    fds
}

/// `pid`'s state letter and parent, from /proc/PID/stat; None once it is gone.
fn stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (in parentheses) may hold spaces: read after its end.
    let mut rest = stat[stat.rfind(')')? + 2..].split(' ');
    let state = rest.next()?.chars().next()?;
    Some((state, rest.next()?.parse().ok()?))
}

/// Running (a zombie waiting to be reaped by whoever inherited it is dead).
fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X'))
}

/// Descriptors opened the way a careless host library would: without
/// close-on-exec (a DAW holds many). None of them may reach a worker.
struct Strays(Vec<i32>);

impl Strays {
    fn open(dir: &ScriptDir) -> Strays {
        let file = CString::new(dir.write("stray.txt", "not for workers")).unwrap();
        let mut pipe = [0; 2];
        // SAFETY: plain syscalls on a NUL-terminated path and a two-int array
        // we own; the descriptors are closed in Drop.
        let fds = unsafe {
            assert_eq!(libc::pipe(pipe.as_mut_ptr()), 0);
            vec![
                libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY),
                libc::open(file.as_ptr(), libc::O_RDONLY),
                pipe[0],
                pipe[1],
            ]
        };
        for &fd in &fds {
            assert!(fd > 2);
            // SAFETY: F_GETFD on a descriptor we just opened.
            assert_eq!(unsafe { libc::fcntl(fd, libc::F_GETFD) } & libc::FD_CLOEXEC, 0, "inheritable");
        }
        Strays(fds)
    }
}

impl Drop for Strays {
    fn drop(&mut self) {
        for &fd in &self.0 {
            // SAFETY: closing descriptors this struct opened and nobody else uses.
            unsafe { libc::close(fd) };
        }
    }
}

#[test]
fn regions_are_memfds_and_the_only_descriptors_workers_inherit() {
    let _turn = outboard_tests::realtime::one_at_a_time();
    let shm_before = dev_shm();
    let dir = ScriptDir::new("isolation");
    let script = PathBuf::from(dir.write("double.py", SCRIPT));
    let strays = Strays::open(&dir);
    let template = TrackConfig::new(0, "template");
    let mut config = SupervisorConfig::new(scripts_host(), &template);
    config.max_workers = 2;
    // Started on a thread that ends at once: the workers' parent-death signal
    // follows the thread that spawned them, which must be the supervisor's own.
    let (sup, tracks): (Supervisor, Vec<Track>) = std::thread::spawn(move || {
        let sup = Supervisor::start(config);
        let tracks = (1..=2)
            .map(|id| {
                let (track, port) = Track::new(TrackConfig::new(id, format!("track {id}")));
                sup.add_track(ScriptedTrack::new(port, script.clone(), vec!["mix".into()]));
                track
            })
            .collect();
        (sup, tracks)
    })
    .join()
    .unwrap();
    let ready = || tracks.iter().all(|t| t.stats().script_ready.load(Ordering::Acquire));
    assert!(
        eventually(Duration::from_secs(60), || sup.worker_pids().len() == 2 && ready()),
        "both workers loaded their scripts"
    );
    let pids = sup.worker_pids();
    let mut regions = BTreeSet::new();
    for &pid in &pids {
        assert_eq!(stat(pid).map(|(_, parent)| parent), Some(std::process::id()), "worker {pid} is our child");
        // The region came as standard input; the worker moved it aside and
        // put /dev/null there.
        let fds = fds(pid);
        let numbers: Vec<i32> = fds.iter().map(|(fd, _)| *fd).collect();
        assert_eq!(numbers.len(), 4, "worker {pid} holds only its standard streams and region: {fds:?}");
        assert_eq!(&numbers[..3], &[0, 1, 2], "worker {pid}'s standard streams: {fds:?}");
        assert_eq!(fds[0].1, "/dev/null", "worker {pid}'s standard input, once it took its region");
        let (shm, region) = &fds[3];
        assert!(region.starts_with("/memfd:outboard-region"), "worker {pid}'s region is {region}, not a memfd");
        regions.insert(std::fs::metadata(format!("/proc/{pid}/fd/{shm}")).unwrap().ino());
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        assert!(maps.contains("/memfd:outboard-region"), "worker {pid} maps its region");
        assert!(!maps.contains("/dev/shm/"), "worker {pid} maps something under /dev/shm");
    }
    assert_eq!(regions.len(), 2, "each worker has a region of its own");
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    assert!(!maps.contains("/dev/shm/"), "the host maps something under /dev/shm");
    // Had the thread that started the supervisor armed the workers'
    // parent-death signal, they would have died with it and been replaced.
    assert!(pids.iter().all(|&p| alive(p)), "workers outlive the thread that started the supervisor");
    assert_eq!((sup.worker_pids(), sup.restarts()), (pids, 0));
    drop(sup);
    drop(strays);
    let new: Vec<String> = dev_shm().difference(&shm_before).cloned().collect();
    assert!(new.is_empty(), "new entries under /dev/shm: {new:?}");
}

/// Starts `worker-host MODE`, kills it with SIGKILL once its workers are
/// stuck in a script, and checks they follow it. Stuck, they cannot notice
/// their parent is gone: only the parent-death signal can end them.
fn workers_die_with_a_killed_host(mode: &str) {
    let _turn = outboard_tests::realtime::one_at_a_time();
    let shm_before = dev_shm();
    let dir = ScriptDir::new("host-death");
    let stuck = format!(
        "import os, time\n\ndef hang(*_):\n    open(os.path.join({:?}, f'stuck-{{os.getpid()}}'), 'w').close()\n    time.sleep(3600)\n\nsetup = hang\n",
        dir.path().to_str().unwrap()
    );
    let script = dir.write("stuck.py", &stuck);
    let mut host = Command::new(workspace_bin("worker-host"))
        .args([mode, &script, "2"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start worker-host");
    let stdout = host.stdout.take().unwrap();
    // The workers inherit the pipe too: read the one line on a thread rather
    // than wait for an end of file that comes only when they are gone.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).expect("worker-host reports its workers");
    let pids: Vec<u32> =
        line.strip_prefix("pids ").expect(&line).split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert_eq!(pids.len(), 2, "{line}");
    for &pid in &pids {
        assert_eq!(stat(pid).map(|(_, parent)| parent), Some(host.id()), "worker {pid} is the host's child");
        let stuck = dir.path().join(format!("stuck-{pid}"));
        assert!(eventually(Duration::from_secs(60), || stuck.exists()), "worker {pid} got stuck in the script");
        assert!(alive(pid), "worker {pid} runs");
    }
    host.kill().expect("SIGKILL the host");
    host.wait().expect("reap the host");
    let gone = eventually(Duration::from_secs(5), || pids.iter().all(|&p| !alive(p)));
    if !gone {
        // Do not leave them stuck for an hour holding the test's output pipes.
        for &pid in &pids {
            // SAFETY: kill(2) on the workers we started (alive, so not reused).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
    assert!(gone, "workers {pids:?} outlived their host");
    let new: Vec<String> = dev_shm().difference(&shm_before).cloned().collect();
    assert!(new.is_empty(), "new entries under /dev/shm: {new:?}");
}

#[test]
fn track_workers_die_with_a_killed_host() {
    workers_die_with_a_killed_host("tracks");
}

#[test]
fn job_workers_die_with_a_killed_host() {
    workers_die_with_a_killed_host("jobs");
}
