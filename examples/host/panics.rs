//! Counting the panics that happen in the host process while it runs.
//!
//! A plugin is loaded into this process, and clack-based plugins catch their
//! own panics at the ABI boundary (a `process` that panicked returns
//! CLAP_PROCESS_ERROR and the plugin goes on), so a run can look fine while
//! the plugin panics on every call. Two ways a panic shows:
//!
//! - the panic hook [`install_hook`] sets (the `outboard-host` binary does)
//!   fires for every panic in code that shares this program's Rust runtime:
//!   the host itself, and a plugin linked into it ([`crate::Bundle::from_entry`]);
//! - a plugin loaded from a `.clap` file carries its own copy of the Rust
//!   runtime, with its own hook (which prints "thread ... panicked at ..."),
//!   so this process's hook never sees its panics. clack-plugin then logs
//!   "Plugin panicked" (severity plugin-misbehaving) through the host's log
//!   extension, and [`crate::handlers`] counts that message as a panic —
//!   once: when this hook already counted the same panic (same thread, the
//!   message follows the hook), the message is not counted again.
//!
//! `panics` in the report is the sum. The hook prints the first panic as the
//! default hook would, and only counts the rest (a plugin that panics on
//! every call would otherwise flood the terminal).

use std::cell::Cell;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

/// The message clack-plugin logs when it caught a panic at the ABI
/// boundary (and the factory's).
pub const CLACK_PANIC_MESSAGES: [&str; 2] = ["Plugin panicked", "Plugin factory panicked"];

static HOOK_PANICS: AtomicU64 = AtomicU64::new(0);
static INSTALL: Once = Once::new();

thread_local! {
    /// Set by the hook on the panicking thread; taken by the log handler
    /// when clack reports the same panic.
    static COUNTED_BY_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// Installs the counting hook (once per process; later calls do nothing).
/// Test harnesses should not: it replaces their panic output after the
/// first panic.
pub fn install_hook() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let n = HOOK_PANICS.fetch_add(1, Ordering::Relaxed);
            mark_counted_by_hook();
            if n == 0 {
                eprintln!("outboard-host: a panic in this process (the first; later ones are only counted):");
                previous(info);
            }
        }));
    });
}

/// Whether [`install_hook`] has run.
pub fn hook_installed() -> bool {
    INSTALL.is_completed()
}

/// Panics the hook saw since the process started.
pub fn hook_panics() -> u64 {
    HOOK_PANICS.load(Ordering::Relaxed)
}

/// Whether a log message is clack's report of a caught panic.
pub fn is_panic_report(message: &str) -> bool {
    CLACK_PANIC_MESSAGES.contains(&message)
}

/// Notes that the hook counted a panic on this thread.
pub(crate) fn mark_counted_by_hook() {
    COUNTED_BY_HOOK.with(|c| c.set(true));
}

/// Called when a plugin reports a caught panic: true if this panic still
/// needs counting (the hook did not see it on this thread).
pub(crate) fn report_needs_counting() -> bool {
    !COUNTED_BY_HOOK.with(|c| c.replace(false))
}
