//! Proof helpers for realtime safety: a per-thread seccomp filter that lets
//! through only the non-blocking wake of DESIGN.md §1, and running a test
//! scenario in a child process so that a violation (the kernel kills the
//! process with SIGSYS) fails the test instead of the test runner.

use std::collections::BTreeMap;
use std::process::{Command, ExitStatus};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};

/// Environment variable naming the scenario a child process runs.
pub const SCENARIO_ENV: &str = "OUTBOARD_RT_SCENARIO";

/// FUTEX_WAKE, shared and private: the only syscall a realtime thread may make.
const FUTEX_WAKE: u64 = 1;
const FUTEX_WAKE_PRIVATE: u64 = 1 | 128;

/// FUTEX_WAIT_PRIVATE: how an engine-owned track thread sleeps until the
/// driver releases its next period (its audio callback boundary).
const FUTEX_WAIT_PRIVATE: u64 = 128;

/// From now on, any syscall of the calling thread other than FUTEX_WAKE kills
/// the process with SIGSYS. Other threads are not affected.
pub fn forbid_syscalls_but_wake() {
    forbid_syscalls_but(&[FUTEX_WAKE, FUTEX_WAKE_PRIVATE]);
}

/// As [`forbid_syscalls_but_wake`], and also the private futex wait a graph
/// track thread sleeps in between periods (the one place such a thread may
/// block: where a DAW's audio thread would be back in the driver).
pub fn forbid_syscalls_but_wake_and_period_wait() {
    forbid_syscalls_but(&[FUTEX_WAKE, FUTEX_WAKE_PRIVATE, FUTEX_WAIT_PRIVATE]);
}

fn forbid_syscalls_but(futex_ops: &[u64]) {
    let wake = |op| {
        SeccompRule::new(vec![
            SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, op).expect("condition"),
        ])
        .expect("rule")
    };
    let mut rules = BTreeMap::new();
    rules.insert(libc::SYS_futex, futex_ops.iter().map(|&op| wake(op)).collect());
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        std::env::consts::ARCH.try_into().expect("a seccomp-supported architecture"),
    )
    .expect("seccomp filter");
    let program: BpfProgram = filter.try_into().expect("BPF program");
    seccompiler::apply_filter(&program).expect("install the seccomp filter on this thread");
}

/// The scenario this process was started to run, if it is a child.
pub fn scenario() -> Option<String> {
    std::env::var(SCENARIO_ENV).ok()
}

/// Runs the test `test` of this test binary in a child process with
/// `scenario` set, and returns how the child ended.
pub fn run_child(test: &str, scenario: &str) -> ExitStatus {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env(SCENARIO_ENV, scenario)
        .status()
        .expect("start the child")
}

/// Panics with a clear message unless the child exited successfully.
pub fn assert_child_ok(status: ExitStatus, what: &str) {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(libc::SIGSYS) => panic!("{what}: a syscall outside the realtime allowlist (killed by SIGSYS)"),
        Some(signal) => panic!("{what}: killed by signal {signal}"),
        None => assert!(status.success(), "{what}: child failed ({status})"),
    }
}

/// The calling thread's kernel id (a syscall: call it before the filter).
pub fn current_tid() -> i32 {
    rustix::thread::gettid().as_raw_nonzero().get()
}

/// Page faults, minor and major together, that thread `tid` of this process
/// has taken so far, read from /proc (by another thread: the realtime one
/// makes no syscall for it). A page fault is invisible to seccomp and to the
/// allocation check, yet it stalls the thread in the kernel: the first touch
/// of a fresh page of shared memory, say.
pub fn page_faults(tid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).expect("the thread's stat");
    // Fields after the command name (which may hold spaces): state is field
    // 3, minflt field 10, majflt field 12.
    let after = &stat[stat.rfind(')').expect("stat format") + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| fields[n - 3].parse::<u64>().expect("a count");
    field(10) + field(12)
}
