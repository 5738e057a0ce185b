//! The scenarios: every fault a script (or its file, or the scripts host)
//! can commit, how it is injected, and what the bench expects of it.

/// How a scenario injects its fault.
#[derive(Clone, Copy, Debug)]
pub(super) enum Inject {
    /// SIGKILL to the faulty track's worker (`Supervisor::kill_worker_of`).
    Kill,
    /// The track runs `faults/<script>`; the bench arms it, writing `kind` into the arm file.
    Arm { script: &'static str, kind: &'static str },
    /// The running script's file is deleted or replaced (by a rename, as an
    /// editor saves: the new file is written before the graph starts, so that
    /// writing 50 MB is not part of what is measured); it is restored later.
    Replace(FileFault),
    /// The faulty track's supervisor is given a broken `outboard-scripts-host`.
    Exe(ExeFault),
    /// A host (this program, `faults-host`) is SIGKILLed with its workers running.
    HostKilled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FileFault {
    Delete,
    SyntaxError,
    Huge,
    SetupRaises,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ExeFault {
    Missing,
    NotExecutable,
}

/// What should happen, and so what "recovered" means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Expect {
    /// The worker is replaced; the track plays dry until its successor
    /// answers. Recovery: injection → first processed period.
    Restart,
    /// As `Restart`, and the track itself must have found its rings
    /// corrupt: the host's validation caught the hostile data, not only the
    /// worker's own reaction to it.
    RestartOnBadRings,
    /// The fault shows (the track plays dry), then the track is processed
    /// again, whether its worker was restarted or lived through it.
    /// Recovery: injection → first processed period.
    Recovers,
    /// Dry, with a script error per block, while armed; processed again once
    /// disarmed. Recovery: disarm → first processed period.
    DryWhileArmed,
    /// The script's own (finite, in-range) output is played while armed.
    /// Recovery: disarm → first period at the usual gain.
    PlayedWhileArmed,
    /// The previous version keeps running, never a dry period. Recovery:
    /// the file restored → the reload logged.
    KeepsRunning,
    /// No worker can be started: dry throughout, no crash, said on the log.
    DryThroughout,
    /// The host is killed: its workers die with it. Recovery: kill → the
    /// last worker gone.
    WorkersDieWithHost,
}

pub(super) struct Scenario {
    pub(super) name: &'static str,
    pub(super) about: &'static str,
    pub(super) inject: Inject,
    pub(super) expect: Expect,
    /// What the log must say for the fault to count as diagnosed ("" for
    /// faults that are not errors).
    pub(super) log_says: &'static str,
}

pub(super) const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "worker-killed",
        about: "SIGKILL to the worker mid-stream",
        inject: Inject::Kill,
        expect: Expect::Restart,
        log_says: "SIGKILL",
    },
    Scenario {
        name: "worker-exits",
        about: "os._exit(1) from process()",
        inject: Inject::Arm { script: "exit_self.py", kind: "" },
        expect: Expect::Restart,
        log_says: "exited (exit status: 1)",
    },
    Scenario {
        name: "hang-busy",
        about: "while True: pass in process()",
        inject: Inject::Arm { script: "hang_busy.py", kind: "" },
        expect: Expect::Restart,
        log_says: "stopped beating",
    },
    Scenario {
        name: "hang-sleep",
        about: "time.sleep(60) in process(): hung in a C call",
        inject: Inject::Arm { script: "hang_sleep.py", kind: "" },
        expect: Expect::Restart,
        log_says: "stopped beating",
    },
    Scenario {
        name: "raise-every-call",
        about: "process() raises on every block",
        inject: Inject::Arm { script: "raise_always.py", kind: "" },
        expect: Expect::DryWhileArmed,
        log_says: "RuntimeError: raise_always.py is armed",
    },
    Scenario {
        name: "raise-in-setup",
        about: "a new version whose setup() raises",
        inject: Inject::Replace(FileFault::SetupRaises),
        expect: Expect::KeepsRunning,
        log_says: "setup failed on purpose",
    },
    Scenario {
        name: "segfault",
        about: "ctypes.string_at(0): SIGSEGV in the worker",
        inject: Inject::Arm { script: "segfault.py", kind: "" },
        expect: Expect::Restart,
        log_says: "SIGSEGV",
    },
    Scenario {
        name: "memory-bomb",
        about: "hoards memory until the worker's limit",
        inject: Inject::Arm { script: "memory_bomb.py", kind: "" },
        expect: Expect::Recovers,
        // The limit raises MemoryError; on a loaded machine the hoarding
        // worker (demoted) can miss its beats first and be restarted as
        // hung: either way the track recovers and the log says why.
        log_says: "MemoryError|stopped beating",
    },
    Scenario {
        name: "output-nan",
        about: "NaN samples",
        inject: Inject::Arm { script: "bad_output.py", kind: "nan" },
        expect: Expect::DryWhileArmed,
        log_says: "non-finite",
    },
    Scenario {
        name: "output-inf",
        about: "+/-Inf samples",
        inject: Inject::Arm { script: "bad_output.py", kind: "inf" },
        expect: Expect::DryWhileArmed,
        log_says: "non-finite",
    },
    Scenario {
        name: "output-denormal",
        about: "subnormal samples (finite: played)",
        inject: Inject::Arm { script: "bad_output.py", kind: "denormal" },
        expect: Expect::PlayedWhileArmed,
        log_says: "",
    },
    Scenario {
        name: "output-huge",
        about: "samples of 1e30",
        inject: Inject::Arm { script: "bad_output.py", kind: "huge" },
        expect: Expect::DryWhileArmed,
        log_says: "out of range",
    },
    Scenario {
        name: "output-shape",
        about: "an array of the wrong shape",
        inject: Inject::Arm { script: "bad_output.py", kind: "shape" },
        expect: Expect::DryWhileArmed,
        log_says: "returned shape",
    },
    Scenario {
        name: "output-dtype",
        about: "float64 instead of float32",
        inject: Inject::Arm { script: "bad_output.py", kind: "dtype" },
        expect: Expect::DryWhileArmed,
        log_says: "dtype float64",
    },
    Scenario {
        name: "hostile-scribble",
        about: "the worker writes random bytes over its whole shared region",
        inject: Inject::Arm { script: "scribble.py", kind: "" },
        expect: Expect::RestartOnBadRings,
        log_says: "sent malformed data",
    },
    Scenario {
        name: "script-deleted",
        about: "the running script's file is deleted",
        inject: Inject::Replace(FileFault::Delete),
        expect: Expect::KeepsRunning,
        log_says: "cannot read it",
    },
    Scenario {
        name: "script-syntax-error",
        about: "the running script is replaced by one with a syntax error",
        inject: Inject::Replace(FileFault::SyntaxError),
        expect: Expect::KeepsRunning,
        log_says: "SyntaxError",
    },
    Scenario {
        name: "script-huge",
        about: "the running script is replaced by a 50 MB one",
        inject: Inject::Replace(FileFault::Huge),
        expect: Expect::KeepsRunning,
        log_says: "larger than",
    },
    Scenario {
        name: "host-exe-missing",
        about: "outboard-scripts-host is not there",
        inject: Inject::Exe(ExeFault::Missing),
        expect: Expect::DryThroughout,
        log_says: "No such file",
    },
    Scenario {
        name: "host-exe-not-executable",
        about: "outboard-scripts-host is not executable",
        inject: Inject::Exe(ExeFault::NotExecutable),
        expect: Expect::DryThroughout,
        log_says: "Permission denied",
    },
    Scenario {
        name: "host-killed",
        about: "a host process SIGKILLed with its workers running",
        inject: Inject::HostKilled,
        expect: Expect::WorkersDieWithHost,
        log_says: "",
    },
];
