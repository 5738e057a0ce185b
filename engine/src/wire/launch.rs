//! How a worker is started: its command line, which the host writes
//! ([`WorkerArgs::to_args`]) and the worker reads ([`WorkerArgs::parse`]),
//! and what the worker does first ([`settle_worker`]).
//!
//! The host runs no code in the child between fork and exec, so that the
//! standard library can start workers with posix_spawn (see
//! `crate::shm::region::Region::pass_to_child`): the region arrives as the
//! worker's standard input, and what a forked child used to do before exec
//! (closing stray descriptors, arming the parent-death signal, setting the
//! memory limit) the worker does itself, before anything else.

use std::ffi::OsString;
use std::path::PathBuf;

/// A worker's command line: `outboard-scripts-host --worker INDEX
/// --generation G --parent-pid PID [--memory-limit BYTES] [--python-env DIR]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerArgs {
    /// The worker's index in its owner (the supervisor's or the pool's), for its log lines.
    pub worker: usize,
    /// The generation its region was created at; the worker checks the region says the same.
    pub generation: u32,
    /// The host's process id: the worker's parent, which it outlives by no more than a check.
    pub parent_pid: u32,
    /// Address-space limit, in bytes (None: none).
    pub memory_limit: Option<u64>,
    /// The Python environment whose packages scripts import (see
    /// `crate::workers::python_env`; None: the built-in one).
    pub python_env: Option<PathBuf>,
}

impl WorkerArgs {
    /// The arguments that say this, program name not included.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--worker".into(),
            self.worker.to_string().into(),
            "--generation".into(),
            self.generation.to_string().into(),
            "--parent-pid".into(),
            self.parent_pid.to_string().into(),
        ];
        if let Some(limit) = self.memory_limit {
            args.extend(["--memory-limit".into(), limit.to_string().into()]);
        }
        if let Some(env) = &self.python_env {
            args.extend(["--python-env".into(), env.clone().into_os_string()]);
        }
        args
    }

    /// Reads the arguments `to_args` wrote (program name not included).
    /// Every flag takes one value; `--parent-pid` is required (only the
    /// engine starts workers).
    ///
    /// ```
    /// # use outboard_engine::wire::launch::WorkerArgs;
    /// let args = WorkerArgs { worker: 2, generation: 7, parent_pid: 4242, memory_limit: Some(1 << 30), python_env: None };
    /// assert_eq!(WorkerArgs::parse(args.to_args()), Ok(args));
    /// assert!(WorkerArgs::parse(["--worker".into(), "two".into()]).is_err());
    /// ```
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<WorkerArgs, String> {
        let (mut worker, mut generation, mut parent_pid) = (0, 1, None);
        let (mut memory_limit, mut python_env) = (None, None);
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let flag = flag.to_string_lossy().into_owned();
            let raw = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            if flag == "--python-env" {
                python_env = Some(PathBuf::from(raw));
                continue;
            }
            let value = raw.to_string_lossy().into_owned();
            let bad = |e: std::num::ParseIntError| format!("{flag} {value}: {e}");
            match flag.as_str() {
                "--worker" => worker = value.parse().map_err(bad)?,
                "--generation" => generation = value.parse().map_err(bad)?,
                "--parent-pid" => parent_pid = Some(value.parse().map_err(bad)?),
                "--memory-limit" => memory_limit = Some(value.parse().map_err(bad)?),
                _ => return Err(format!("unknown argument {flag}")),
            }
        }
        let parent_pid =
            parent_pid.ok_or("--parent-pid is required (this program is started by the Outboard engine)")?;
        Ok(WorkerArgs { worker, generation, parent_pid, memory_limit, python_env })
    }
}

/// First thing in a worker process, before it runs anything else: what a
/// forked child would have done before exec, done after it (see the module
/// docs). Closes every descriptor from 3 up (a host, a DAW or a test
/// harness, may hold some opened without close-on-exec, and they are not
/// the worker's; the region arrives on standard input), arms the
/// parent-death signal and checks the parent did not die before that
/// (then the worker was re-parented and must not linger), and sets the
/// address-space limit.
pub fn settle_worker(args: &WorkerArgs) -> Result<(), String> {
    close_descriptors_from(3);
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| format!("cannot arm the parent-death signal: {e}"))?;
    if parent_gone(args.parent_pid) {
        return Err("the host that started this worker is gone".into());
    }
    if let Some(limit) = args.memory_limit {
        let rlimit = rustix::process::Rlimit { current: Some(limit), maximum: Some(limit) };
        rustix::process::setrlimit(rustix::process::Resource::As, rlimit)
            .map_err(|e| format!("cannot set the memory limit: {e}"))?;
    }
    Ok(())
}

/// Whether the worker's host (`parent_pid`) is gone: the worker has been
/// re-parented. Linux sends the parent-death signal when the *thread* that
/// started the worker ends, so the worker also looks now and then.
pub fn parent_gone(parent_pid: u32) -> bool {
    let now = rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32);
    now != Some(parent_pid)
}

/// Closes every descriptor from `first` up.
fn close_descriptors_from(first: u32) {
    // SAFETY: close_range only closes descriptors (Linux 5.9 and later); at
    // a worker's start nothing in this process owns any from 3 up.
    let done = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) } == 0;
    if done {
        return;
    }
    // Older kernels: every descriptor number the process may have open.
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(1 << 16).min(1 << 16);
    for fd in first..limit as u32 {
        // SAFETY: close on a plain integer nothing in this process owns; on
        // a number not open it fails with EBADF and changes nothing.
        unsafe { libc::close(fd as i32) };
    }
}
